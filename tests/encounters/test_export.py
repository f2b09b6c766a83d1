"""The whole record, exported: a FHIR R4 Bundle that validates and links up, a PDF a person can
read; both with the chart's rules (404 across tenants and between patients) and its audited read."""

from __future__ import annotations

import re
import uuid
import zlib
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from tests.conftest import assert_problem, bearer, demo_patient, login
from tests.encounters.test_encounters import DOCTOR, VISIT

PATIENT = "patient@demo.carebase.local"
VITALS = {**VISIT["vitals"], "respiratory_rate": 16, "spo2_percent": 97}


def _patient(client, token, **fields) -> dict:
    r = client.post("/api/v1/patients", headers=bearer(token), json={
        "given_name": "Export", "family_name": uuid.uuid4().hex[:8], "birth_date": "1970-07-07", "gender": "F",
        "allow_duplicate": True, **fields})
    assert r.status_code == 201, r.text
    return r.json()


def _encounter(client, token, patient_id: str, **fields) -> dict:
    r = client.post(f"/api/v1/patients/{patient_id}/encounters", headers=bearer(token), json={**VISIT, **fields})
    assert r.status_code == 201, r.text
    return r.json()


def _bundle(client, token, url: str) -> dict:
    r = client.get(url, headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    Bundle.model_validate(body)  # the R4B models (R4 + technical corrections) accept it
    return body


def _resources(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _references(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [v for k, v in value.items() if k == "reference"] + [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def _codes(resource: dict) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in resource["code"].get("coding", [])}


def _observation(bundle: dict, loinc: str) -> dict:
    found = [o for o in _resources(bundle, "Observation") if ("http://loinc.org", loinc) in _codes(o)]
    assert len(found) == 1, (loinc, found)
    return found[0]


def pdf_text(content: bytes) -> str:
    """The strings drawn on the pages, one per line: the page streams inflated (fpdf2 compresses
    them), decoded as the built-in fonts encode text (Windows-1252), PDF string escapes undone.
    Streams are cut by their /Length, not by searching for "endstream": an embedded image (the
    patient's signature) is binary and may hold any bytes."""
    out = []
    for m in re.finditer(rb"/Length (\d+)", content):
        start = content.find(b"stream", m.end())
        if start < 0:
            continue
        start += len(b"stream")
        start += 2 if content[start:start + 2] == b"\r\n" else 1
        stream = content[start:start + int(m.group(1))]
        try:
            stream = zlib.decompress(stream)
        except zlib.error:
            pass
        for literal in re.findall(rb"\(((?:\\.|[^\\)])*)\)\s*Tj", stream, re.S):
            out.append(re.sub(rb"\\(.)", rb"\1", literal, flags=re.S).decode("cp1252", "replace"))
    return "\n".join(out)


def test_the_bundle_carries_the_coded_record_and_every_reference_resolves(client, owner):
    token = login(client, DOCTOR)
    patient = _patient(client, token, phone="+919800001234", preferred_language="hi")
    e = _encounter(client, token, patient["id"], vitals=VITALS)
    audited = owner.execute("SELECT count(*) FROM audit_reads WHERE patient_id = %s", (patient["id"],)).fetchone()[0]

    bundle = _bundle(client, token, f"/api/v1/patients/{patient['id']}/record.fhir.json")

    assert bundle["type"] == "collection" and bundle["timestamp"] and bundle["meta"]["lastUpdated"]
    urls = [entry["fullUrl"] for entry in bundle["entry"]]
    # Each entry at its URL on the FHIR API, where a client can read it again.
    assert len(urls) == len(set(urls)) and all("/fhir/R4/" in u for u in urls)
    for entry in bundle["entry"][:3]:
        again = client.get(entry["fullUrl"], headers=bearer(token))
        assert again.status_code == 200 and again.json() == entry["resource"], entry["fullUrl"]
    local = {u.split("/fhir/R4/", 1)[1] for u in urls}
    dangling = set(_references(bundle["entry"])) - local
    assert not dangling, dangling

    (p,) = _resources(bundle, "Patient")
    assert {"system": "urn:carebase:patient-global-id", "value": patient["global_id"], "use": "official"} \
        in p["identifier"]
    assert p["name"][0]["family"] == patient["family_name"] and p["gender"] == "female"
    assert p["birthDate"] == "1970-07-07"
    assert {"system": "phone", "value": "+919800001234", "use": "mobile"} in p["telecom"]
    assert p["communication"][0]["language"]["coding"][0] == {"system": "urn:ietf:bcp:47", "code": "hi"}

    (doctor,) = _resources(bundle, "Practitioner")
    assert doctor["identifier"][0]["system"] == "http://hl7.org/fhir/sid/us-npi"
    assert doctor["name"][0]["family"] == "Iyer"
    (enc,) = _resources(bundle, "Encounter")
    assert enc["id"] == e["id"] and enc["status"] == "finished" and enc["class"]["code"] == "AMB"
    assert enc["reasonCode"][0]["text"] == VISIT["chief_complaint"]
    assert enc["participant"][0]["individual"]["reference"] == f"Practitioner/{doctor['id']}"
    encounter_ref = {"reference": f"Encounter/{e['id']}"}

    conditions = [c for c in _resources(bundle, "Condition")
                  if c["category"][0]["coding"][0]["code"] == "encounter-diagnosis"]
    assert {c["code"]["coding"][0]["code"] for c in conditions} == {"E11.9", "I10"}
    assert all(c["code"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10-cm" and c["encounter"]
               == encounter_ref for c in conditions)
    assert any(c["code"]["coding"][0].get("display") == "Essential (primary) hypertension" for c in conditions)
    problems = [c for c in _resources(bundle, "Condition")
                if c["category"][0]["coding"][0]["code"] == "problem-list-item"]
    assert [c["code"]["text"] for c in problems] == ["Type 2 diabetes"]
    assert problems[0]["clinicalStatus"]["coding"][0]["code"] == "active"
    (procedure,) = _resources(bundle, "Procedure")
    assert _codes(procedure) == {("http://www.ama-assn.org/go/cpt", "99213")}

    # Vitals: LOINC codes, UCUM units, blood pressure as the panel with its two components.
    bp = _observation(bundle, "85354-9")
    components = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in bp["component"]}
    assert components["8480-6"]["value"] == 148 and components["8480-6"]["code"] == "mm[Hg]"
    assert components["8462-4"]["value"] == 92
    ucum = {"8867-4": (78, "/min"), "9279-1": (16, "/min"), "8310-5": (36.8, "Cel"), "2708-6": (97, "%"),
            "29463-7": (82.5, "kg"), "8302-2": (171, "cm")}
    for loinc, (value, unit) in ucum.items():
        o = _observation(bundle, loinc)
        assert o["category"][0]["coding"][0]["code"] == "vital-signs" and o["encounter"] == encounter_ref
        assert (o["valueQuantity"]["value"], o["valueQuantity"]["code"]) == (value, unit), loinc
        assert o["valueQuantity"]["system"] == "http://unitsofmeasure.org"
    assert ("http://loinc.org", "59408-5") in _codes(_observation(bundle, "2708-6"))
    bmi = _observation(bundle, "39156-5")
    assert bmi["valueQuantity"]["value"] == 28.2 and len(bmi["derivedFrom"]) == 2
    (lab,) = [o for o in _resources(bundle, "Observation") if o["category"][0]["coding"][0]["code"] == "laboratory"]
    assert lab["code"]["text"] == "HbA1c" and lab["valueQuantity"] == {"value": 8.1, "unit": "%"}
    assert lab["interpretation"][0]["coding"][0]["code"] == "H"

    (allergy,) = _resources(bundle, "AllergyIntolerance")
    assert allergy["code"]["text"] == "Penicillin" and allergy["reaction"][0]["severity"] == "moderate"
    (med,) = _resources(bundle, "MedicationStatement")
    assert med["medicationCodeableConcept"]["text"] == "Metformin"
    assert med["dosage"][0]["text"] == "500 mg twice daily"

    # Exporting is reading the patient: it is in the read audit.
    assert owner.execute("SELECT count(*) FROM audit_reads WHERE patient_id = %s",
                         (patient["id"],)).fetchone()[0] > audited


def test_an_amended_diagnosis_exports_as_it_stands_and_telemedicine_is_virtual(client):
    token = login(client, DOCTOR)
    patient = _patient(client, token)
    e = _encounter(client, token, patient["id"], type="telemedicine", diagnoses=["E11.9"])
    r = client.post(f"/api/v1/encounters/{e['id']}/amendments", headers=bearer(token), json={
        "field": "diagnoses", "value": ["E11.65"], "reason": "More specific code"})
    assert r.status_code == 200, r.text

    bundle = _bundle(client, token, f"/api/v1/patients/{patient['id']}/record.fhir.json")
    (enc,) = _resources(bundle, "Encounter")
    assert enc["class"]["code"] == "VR"
    codes = {c["code"]["coding"][0]["code"] for c in _resources(bundle, "Condition")
             if c["category"][0]["coding"][0]["code"] == "encounter-diagnosis"}
    assert codes == {"E11.65"}

    text = pdf_text(client.get(f"/api/v1/patients/{patient['id']}/record.pdf", headers=bearer(token)).content)
    assert "E11.65" in text and "Amended" in text and "More specific code" in text


def test_a_patient_with_no_encounters_exports_an_empty_record(client):
    token = login(client, DOCTOR)
    patient = _patient(client, token)
    bundle = _bundle(client, token, f"/api/v1/patients/{patient['id']}/record.fhir.json")
    assert sorted(e["resource"]["resourceType"] for e in bundle["entry"]) == ["Organization", "Patient"]
    r = client.get(f"/api/v1/patients/{patient['id']}/record.pdf", headers=bearer(token))
    assert r.status_code == 200 and "No encounters recorded." in pdf_text(r.content)


def test_the_pdf_summary_is_a_readable_download(client):
    token = login(client, DOCTOR)
    patient = _patient(client, token)
    _encounter(client, token, patient["id"])
    r = client.get(f"/api/v1/patients/{patient['id']}/record.pdf", headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == f'attachment; filename="record-{patient["global_id"]}.pdf"'
    assert r.content.startswith(b"%PDF-")
    text = pdf_text(r.content)
    for expected in (f"Export {patient['family_name']}", patient["global_id"], "Demo Clinic", "E11.9", "I10",
                     "Penicillin", "Metformin", "Type 2 diabetes", "Blood pressure: 148/92 mmHg", "Meera Iyer",
                     "BP 148/92 mmHg, Heart rate 78", "Thirst and frequent urination", "Start metformin",
                     "HbA1c 8.1 % (high)"):
        assert expected in text, expected
    assert "cannot be shown" not in text


def test_names_beyond_the_pdf_font_are_folded_and_said_so_never_a_500(client):
    token = login(client, DOCTOR)
    family = "Łukasiewicz-Núñez आशा " + uuid.uuid4().hex[:6]
    patient = _patient(client, token, given_name="Zoë", family_name=family)
    _encounter(client, token, patient["id"], chief_complaint="Douleur thoracique — « depuis hier » 日本")
    r = client.get(f"/api/v1/patients/{patient['id']}/record.pdf", headers=bearer(token))
    assert r.status_code == 200, r.text
    text = pdf_text(r.content)
    # Windows-1252 letters stay as they are, others lose their mark, the rest become "?", and the
    # page says so.
    assert "Zoë Lukasiewicz-Núñez ???" in text
    assert "Douleur thoracique — « depuis hier » ??" in text
    assert 'replaced by "?"' in text
    # The FHIR export keeps every character.
    bundle = _bundle(client, token, f"/api/v1/patients/{patient['id']}/record.fhir.json")
    (p,) = _resources(bundle, "Patient")
    assert p["name"][0]["family"] == family and p["name"][0]["given"] == ["Zoë"]


def test_blank_optional_text_still_exports_a_valid_bundle(client):
    # Accepted when recorded (the schemas only cap lengths), so the export must cope: FHIR forbids
    # empty elements.
    token = login(client, DOCTOR)
    patient = _patient(client, token)
    _encounter(client, token, patient["id"], chief_complaint="", vitals={},
               medications=[{"name": "Aspirin", "dose": "", "frequency": ""}],
               allergies=[{"substance": "Latex", "reaction": ""}],
               lab_results=[{"test": "Urine dipstick", "value": "trace protein", "unit": ""}])
    bundle = _bundle(client, token, f"/api/v1/patients/{patient['id']}/record.fhir.json")
    (med,) = _resources(bundle, "MedicationStatement")
    assert "dosage" not in med
    (enc,) = _resources(bundle, "Encounter")
    assert "reasonCode" not in enc
    assert client.get(f"/api/v1/patients/{patient['id']}/record.pdf", headers=bearer(token)).status_code == 200


def test_only_the_patients_organization_and_the_patient_may_export(client, owner):
    doctor = login(client, DOCTOR)
    other = _patient(client, doctor)
    _encounter(client, doctor, other["id"])
    mine = demo_patient(owner)
    _encounter(client, doctor, str(mine))
    elsewhere = login(client, "doctor@demo2.carebase.local")
    patient = login(client, PATIENT)
    for suffix in ("record.fhir.json", "record.pdf"):
        url = f"/api/v1/patients/{other['id']}/{suffix}"
        # Another clinic, and another patient, are told there is no such patient (no probing).
        assert_problem(client.get(url, headers=bearer(elsewhere)), 404, "patient-not-found")
        assert_problem(client.get(url, headers=bearer(patient)), 404, "patient-not-found")
        assert client.get(url).status_code == 401
        # Staff have no record of their own here.
        assert_problem(client.get(f"/api/v1/me/{suffix}", headers=bearer(doctor)), 403, "forbidden")

    # The patient exports their own record through their own door; the read is audited as theirs.
    before = owner.execute("SELECT count(*) FROM audit_reads WHERE patient_id = %s AND purpose = 'patient-request'",
                           (mine,)).fetchone()[0]
    bundle = _bundle(client, patient, "/api/v1/me/record.fhir.json")
    (p,) = _resources(bundle, "Patient")
    assert p["id"] == str(mine) and p["name"][0]["family"] == "Verma"
    assert other["id"] not in str(bundle)
    r = client.get("/api/v1/me/record.pdf", headers=bearer(patient))
    assert r.status_code == 200 and r.content.startswith(b"%PDF-")
    global_id = owner.execute("SELECT global_id FROM patients WHERE id = %s", (mine,)).fetchone()[0]
    assert r.headers["content-disposition"] == f'attachment; filename="record-{global_id}.pdf"'
    assert "Asha Verma" in pdf_text(r.content)
    after = owner.execute("SELECT count(*) FROM audit_reads WHERE patient_id = %s AND purpose = 'patient-request'",
                          (mine,)).fetchone()[0]
    assert after >= before + 2
