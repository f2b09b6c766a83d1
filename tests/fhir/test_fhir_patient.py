"""The FHIR R4 API's Patient: create (conditional), read, vread, update with If-Match, history
from the event store, search with paging, delete as erasure, OperationOutcome errors and SMART
scopes, driven through a real third-party client (fhirpy) where one fits."""

from __future__ import annotations

import uuid

import pytest
from fhirpy import SyncFHIRClient

from tests.conftest import PASSWORD, bearer, login

FHIR = "/fhir/R4"


def _patient(family: str | None = None, **extra) -> dict:
    body = {"resourceType": "Patient", "name": [{"use": "official", "family": family or "Fhir" + uuid.uuid4().hex[:8],
                                                 "given": ["Ada", "Maria"]}],
            "gender": "female", "birthDate": "1985-03-14",
            "telecom": [{"system": "phone", "value": "+4915112345678"}, {"system": "email",
                                                                          "value": f"{uuid.uuid4().hex[:8]}@example.test"}],
            "address": [{"country": "DE"}],
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "de"}]}}],
            "contact": [{"relationship": [{"text": "sister"}], "name": {"text": "Eva Lovelace"},
                         "telecom": [{"system": "phone", "value": "+4915199999999"}]}]}
    body.update(extra)
    return body


def assert_outcome(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] in ("error", "fatal") and issue["details"]["text"]
    if code:
        assert issue["details"]["coding"][0]["code"] == code, body
    return body


@pytest.fixture
def doctor(client):
    return login(client, "doctor@demo.carebase.local")


@pytest.fixture
def fhir(server, doctor) -> SyncFHIRClient:
    return SyncFHIRClient(server.url + FHIR, authorization=f"Bearer {doctor['access_token']}")


def test_metadata_is_an_r4_capability_statement_served_without_a_token(client):
    r = client.get(FHIR + "/metadata")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    patient = next(x for x in cs["rest"][0]["resource"] if x["type"] == "Patient")
    assert {"read", "vread", "update", "create", "delete", "history-instance", "history-type",
            "search-type"} == {i["code"] for i in patient["interaction"]}
    assert {"name", "family", "given", "birthdate", "gender", "identifier", "phone", "email", "_id"} <= {
        p["name"] for p in patient["searchParam"]}
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    CapabilityStatement.model_validate(cs)


def test_smart_configuration_names_the_token_endpoint_and_scopes(client):
    for path in ("/.well-known/smart-configuration", FHIR + "/.well-known/smart-configuration"):
        body = client.get(path).json()
        assert body["token_endpoint"].endswith("/api/v1/auth/token")
        assert {"patient/*.read", "user/*.*"} <= set(body["scopes_supported"])


def test_create_read_update_and_search_with_fhirpy(fhir):
    family = "Fhirpy" + uuid.uuid4().hex[:6]
    created = fhir.resource("Patient", **{k: v for k, v in _patient(family).items() if k != "resourceType"})
    created.save()
    assert created.id and created["meta"]["versionId"] == "1"
    read = fhir.reference("Patient", created.id).to_resource()
    assert read["name"][0]["family"] == family and read["name"][0]["given"] == ["Ada", "Maria"]
    assert read["birthDate"] == "1985-03-14" and read["gender"] == "female"
    assert read["address"][0]["country"] == "DE"
    assert read["contact"][0]["name"]["text"] == "Eva Lovelace"
    assert {i["system"].rsplit(":", 1)[1] for i in read["identifier"]} == {"mrn", "patient-global-id"}

    read["birthDate"] = "1985-03-15"
    read.save()
    assert read["meta"]["versionId"] == "2"
    found = fhir.resources("Patient").search(family=family).fetch_all()
    assert [p.id for p in found] == [created.id] and found[0]["birthDate"] == "1985-03-15"
    assert fhir.resources("Patient").search(family=family, birthdate="1985-03-14").fetch_all() == []
    assert len(fhir.resources("Patient").search(family=family, birthdate="ge1985-03").fetch_all()) == 1
    assert fhir.resources("Patient").search(family=family).count() == 1


def test_vread_and_history_come_from_the_event_store(client, doctor):
    r = client.post(FHIR + "/Patient", json=_patient(), headers=bearer(doctor))
    assert r.status_code == 201, r.text
    p = r.json()
    assert r.headers["location"].endswith(f"/Patient/{p['id']}/_history/1") and r.headers["etag"] == 'W/"1"'
    p["name"][0]["given"] = ["Grace"]
    r = client.put(f"{FHIR}/Patient/{p['id']}", json=p, headers={**bearer(doctor), "If-Match": 'W/"1"'})
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"
    v1 = client.get(f"{FHIR}/Patient/{p['id']}/_history/1", headers=bearer(doctor)).json()
    v2 = client.get(f"{FHIR}/Patient/{p['id']}/_history/2", headers=bearer(doctor)).json()
    assert v1["name"][0]["given"] == ["Ada", "Maria"] and v2["name"][0]["given"] == ["Grace"]
    hist = client.get(f"{FHIR}/Patient/{p['id']}/_history", headers=bearer(doctor)).json()
    assert hist["type"] == "history" and hist["total"] == 2
    assert [e["request"]["method"] for e in hist["entry"]] == ["PUT", "POST"]
    assert [e["resource"]["meta"]["versionId"] for e in hist["entry"]] == ["2", "1"]
    # The type's history has the newest change first.
    typed = client.get(f"{FHIR}/Patient/_history", params={"_count": 5}, headers=bearer(doctor)).json()
    assert typed["entry"][0]["resource"]["id"] == p["id"]
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(hist)
    Bundle.model_validate(typed)


def test_a_stale_if_match_is_412_and_changes_nothing(client, doctor):
    p = client.post(FHIR + "/Patient", json=_patient(), headers=bearer(doctor)).json()
    p["birthDate"] = "1970-01-01"
    ok = client.put(f"{FHIR}/Patient/{p['id']}", json=p, headers={**bearer(doctor), "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    p["birthDate"] = "1960-01-01"
    stale = client.put(f"{FHIR}/Patient/{p['id']}", json=p, headers={**bearer(doctor), "If-Match": 'W/"1"'})
    assert_outcome(stale, 412, "version-conflict")
    assert client.get(f"{FHIR}/Patient/{p['id']}", headers=bearer(doctor)).json()["birthDate"] == "1970-01-01"


def test_conditional_create_returns_the_existing_patient(client, doctor, owner):
    body = _patient()
    first = client.post(FHIR + "/Patient", json=body, headers=bearer(doctor)).json()
    mrn = next(i["value"] for i in first["identifier"] if i["system"].endswith(":mrn"))
    before = owner.execute("SELECT count(*) FROM patients").fetchone()[0]
    again = client.post(FHIR + "/Patient", json=body, headers={**bearer(doctor), "If-None-Exist": f"identifier={mrn}"})
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    assert owner.execute("SELECT count(*) FROM patients").fetchone()[0] == before


def test_search_pages_with_links_count_and_sort(client, doctor):
    family = "Page" + uuid.uuid4().hex[:6]
    for day in ("01", "02", "03", "04", "05"):
        r = client.post(FHIR + "/Patient", json=_patient(family, birthDate=f"1990-01-{day}"), headers=bearer(doctor))
        assert r.status_code == 201
    r = client.get(FHIR + "/Patient", params={"family": family, "_count": 2, "_sort": "-birthdate"},
                   headers=bearer(doctor))
    page = r.json()
    # A first page of several comes without a total (counting costs), unless _total asks for it.
    assert "total" not in page and [e["resource"]["birthDate"] for e in page["entry"]] == ["1990-01-05", "1990-01-04"]
    assert client.get(FHIR + "/Patient", params={"family": family, "_count": 2, "_total": "accurate"},
                      headers=bearer(doctor)).json()["total"] == 5
    seen = [e["resource"]["id"] for e in page["entry"]]
    while nxt := next((link["url"] for link in page["link"] if link["relation"] == "next"), None):
        page = client.get(nxt, headers=bearer(doctor)).json()
        seen += [e["resource"]["id"] for e in page.get("entry", []) if e["search"]["mode"] == "match"]
    assert len(seen) == 5 == len(set(seen))
    counted = client.get(FHIR + "/Patient", params={"family": family, "_count": 0}, headers=bearer(doctor)).json()
    assert counted["total"] == 5 and "entry" not in counted
    by_update = client.get(FHIR + "/Patient", params={"family": family, "_lastUpdated": "gt2000-01-01"},
                           headers=bearer(doctor)).json()
    assert by_update["total"] == 5
    assert client.get(FHIR + "/Patient", params={"family": family, "_lastUpdated": "lt2000-01-01"},
                      headers=bearer(doctor)).json()["total"] == 0


def test_search_parameters_find_by_name_gender_identifier_phone_and_email(client, doctor):
    family = "Param" + uuid.uuid4().hex[:6]
    p = client.post(FHIR + "/Patient", json=_patient(family), headers=bearer(doctor)).json()
    email = next(t["value"] for t in p["telecom"] if t["system"] == "email")
    gid = next(i["value"] for i in p["identifier"] if i["system"].endswith(":patient-global-id"))
    for params in ({"name": family.lower()}, {"given": "ada", "family": family}, {"family": family, "gender": "female"},
                   {"identifier": f"urn:carebase:patient-global-id|{gid}"}, {"email": email},
                   {"_id": p["id"]}, {"family": family, "phone": "+4915112345678"}):
        r = client.get(FHIR + "/Patient", params=params, headers=bearer(doctor)).json()
        assert [e["resource"]["id"] for e in r.get("entry", [])] == [p["id"]], params
    for params in ({"family": family, "gender": "male"}, {"identifier": "http://other.example|" + gid}):
        assert client.get(FHIR + "/Patient", params=params, headers=bearer(doctor)).json()["total"] == 0


def test_errors_are_operation_outcomes_with_the_right_status(client, doctor):
    h = bearer(doctor)
    assert_outcome(client.get(f"{FHIR}/Patient/{uuid.uuid4()}", headers=h), 404)
    assert_outcome(client.get(f"{FHIR}/Patient/not a valid id!", headers=h), 404)
    assert_outcome(client.get(f"{FHIR}/Spaceship/1", headers=h), 404, "unknown-resource-type")
    assert_outcome(client.post(FHIR + "/Patient", content=b"{not json", headers={**h, "Content-Type": "application/fhir+json"}),
                   400, "malformed-json")
    assert_outcome(client.post(FHIR + "/Patient", json={"resourceType": "Observation"}, headers=h), 400,
                   "wrong-resource-type")
    bad = _patient(gender="sometimes")
    assert_outcome(client.post(FHIR + "/Patient", json=bad, headers=h), 422, "invalid-resource")
    assert_outcome(client.post(FHIR + "/Patient", json=_patient(birthDate="1985"), headers=h), 422, "invalid-resource")
    assert_outcome(client.get(FHIR + "/Patient", params={"birthdate": "soon"}, headers=h), 400, "bad-date")
    assert_outcome(client.get(FHIR + "/Patient", params={"_sort": "shoe_size"}, headers=h), 400, "bad-sort")
    assert_outcome(client.get(FHIR + "/Patient", params={"shoe_size": "9"},
                              headers={**h, "Prefer": "handling=strict"}), 400, "unknown-search-parameter")
    lenient = client.get(FHIR + "/Patient", params={"shoe_size": "9", "_count": 1}, headers=h).json()
    assert lenient["entry"][-1]["search"]["mode"] == "outcome"
    assert_outcome(client.get(FHIR + "/Patient"), 401)


def test_what_the_database_cannot_hold_or_a_type_cannot_do_is_refused_not_failed(client, doctor, owner):
    """Found by sending every search parameter of every type garbage: each of these was a 500."""
    h = bearer(doctor)
    # The NUL character: PostgreSQL cannot store it, so no parameter, id or string may hold it.
    for kind, params in (("Patient", {"family": "Ada\x00"}), ("Observation", {"code": "\x00"}),
                         ("Encounter", {"status": "x\x00y"})):
        assert_outcome(client.get(f"{FHIR}/{kind}", params=params, headers=h), 400, "nul-character")
    assert_outcome(client.get(f"{FHIR}/Patient/a%00b", headers=h), 400, "nul-character")
    family = "Nul" + uuid.uuid4().hex[:8]
    bad = _patient(family, name=[{"family": family, "given": ["Ada\x00"]}])
    outcome = assert_outcome(client.post(FHIR + "/Patient", json=bad, headers=h), 422, "invalid-resource")
    assert outcome["issue"][0]["expression"] == ["Patient.name[0].given[0]"]
    assert owner.execute("SELECT count(*) FROM patients WHERE family_name = %s", (family,)).fetchone()[0] == 0
    conditional = client.post(FHIR + "/Patient", json=_patient(family), headers={**h, "If-None-Exist": "family=Ada%00"})
    assert_outcome(conditional, 400, "nul-character")
    # Paging past the deepest offset is refused with a way forward; the deepest itself pages.
    assert_outcome(client.get(f"{FHIR}/Patient", params={"_offset": "99999999999999999999"}, headers=h),
                   400, "bad-paging")
    assert client.get(f"{FHIR}/Patient", params={"_offset": "100000"}, headers=h).status_code == 200
    # Slots are computed, never stored: found by search, not read by id, in a route or a batch.
    assert_outcome(client.get(f"{FHIR}/Slot/{uuid.uuid4()}", headers=h), 405, "read-not-supported")
    assert_outcome(client.get(f"{FHIR}/Slot/x1/_history/1", headers=h), 405, "vread-not-supported")
    # A batch entry's own address is held to the same rules.
    batch = client.post(FHIR, json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Slot/x1"}}, {"request": {"method": "GET", "url": "Slot/x1/_history/1"}},
        {"request": {"method": "GET", "url": "Patient?family=Ada%00"}}]}, headers=h)
    assert batch.status_code == 200, batch.text
    assert [e["response"]["status"] for e in batch.json()["entry"]] == ["405", "405", "400"]


def test_delete_erases_and_then_the_patient_is_gone(client, doctor):
    admin = login(client, "admin@demo.carebase.local")
    p = client.post(FHIR + "/Patient", json=_patient(), headers=bearer(doctor)).json()
    assert_outcome(client.delete(f"{FHIR}/Patient/{p['id']}", headers=bearer(doctor)), 403)
    assert client.delete(f"{FHIR}/Patient/{p['id']}", headers=bearer(admin)).status_code == 204
    assert_outcome(client.get(f"{FHIR}/Patient/{p['id']}", headers=bearer(doctor)), 410, "patient-erased")
    hist = client.get(f"{FHIR}/Patient/{p['id']}/_history", headers=bearer(admin)).json()
    assert hist["entry"][0]["request"]["method"] == "DELETE" and "resource" not in hist["entry"][0]


def test_smart_scopes_narrow_the_token(client, fhir, server):
    read_only = login(client, "doctor@demo.carebase.local", scope="user/*.read")
    assert read_only["scope"] == "user/*.read"
    r = client.get(FHIR + "/Patient", params={"_count": 1}, headers=bearer(read_only))
    assert r.status_code == 200
    assert_outcome(client.post(FHIR + "/Patient", json=_patient(), headers=bearer(read_only)), 403, "insufficient-scope")
    # A scoped token is for the FHIR API only.
    r = client.get("/api/v1/patients", headers=bearer(read_only))
    assert r.status_code == 403 and r.json()["code"] == "scoped-token"
    from websockets.sync.client import connect  # nor the JSON API's WebSockets

    with pytest.raises(Exception, match="403"), connect(
            server.url.replace("http://", "ws://") + "/api/v1/messages/ws?access_token=" + read_only["access_token"],
            open_timeout=10) as ws:
        ws.recv(timeout=5)
    # The scope survives a refresh.
    refreshed = client.post("/api/v1/auth/refresh", json={"refresh_token": read_only["refresh_token"]}).json()
    assert refreshed["scope"] == "user/*.read"
    assert_outcome(client.post(FHIR + "/Patient", json=_patient(), headers=bearer(refreshed)), 403, "insufficient-scope")
    patient_scopes = login(client, "patient@demo.carebase.local", scope="patient/*.read launch/patient")
    mine = client.get(FHIR + "/Patient", headers=bearer(patient_scopes)).json()
    assert mine["total"] == 1  # a patient finds only themselves
    r = client.post("/api/v1/auth/token", data={"username": "doctor@demo.carebase.local", "password": PASSWORD,
                                               "scope": "patient/*.read"})
    assert r.status_code == 400 and r.json()["code"] == "invalid-scope"
    r = client.post("/api/v1/auth/token", data={"username": "doctor@demo.carebase.local", "password": PASSWORD,
                                               "scope": "user/*.fly"})
    assert r.status_code == 400 and r.json()["code"] == "invalid-scope"
