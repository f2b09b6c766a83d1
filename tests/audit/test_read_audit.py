"""Every read of a patient's data is recorded (actor, patient, record, purpose, time) and an
admin can list it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import bearer, demo_patient, login


def _reads(client, admin, **params) -> list[dict]:
    r = client.get("/api/v1/audit/reads", params=params, headers=bearer(admin))
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_a_doctors_read_is_listed_for_the_admin(client, owner):
    pid = demo_patient(owner)
    doctor = login(client, "doctor@demo.carebase.local")
    admin = login(client, "admin@demo.carebase.local")
    me = client.get("/api/v1/me", headers=bearer(doctor)).json()
    before = datetime.now(UTC) - timedelta(seconds=5)
    r = client.get(f"/api/v1/patients/{pid}", headers={**bearer(doctor), "X-Purpose-Of-Use": "treatment"})
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    rows = [x for x in _reads(client, admin, patient_id=str(pid)) if x["request_id"] == rid]
    assert len(rows) == 1
    row = rows[0]
    assert row["actor_account_id"] == me["id"]
    assert row["actor_roles"] == "doctor"
    assert row["record_type"] == "Patient" and row["record_id"] == str(pid)
    assert row["purpose"] == "treatment"
    assert datetime.fromisoformat(row["at"]) >= before


def test_search_results_are_audited_one_row_per_patient(client, owner):
    pid = demo_patient(owner)
    nurse = login(client, "nurse@demo.carebase.local")
    admin = login(client, "admin@demo.carebase.local")
    r = client.get("/api/v1/patients", params={"q": "Verma"}, headers=bearer(nurse))
    assert r.status_code == 200 and any(p["id"] == str(pid) for p in r.json())
    rows = [x for x in _reads(client, admin, patient_id=str(pid)) if x["request_id"] == r.headers["x-request-id"]]
    assert len(rows) == 1 and rows[0]["purpose"] == "treatment"


def test_a_patient_reading_their_own_record_is_audited_and_others_are_hidden(client, owner):
    own = demo_patient(owner)
    other = demo_patient(owner, "demo2")
    patient = login(client, "patient@demo.carebase.local")
    admin = login(client, "admin@demo.carebase.local")
    r = client.get(f"/api/v1/patients/{own}", headers=bearer(patient))
    assert r.status_code == 200 and r.json()["given_name"] == "Asha"
    rows = [x for x in _reads(client, admin, patient_id=str(own)) if x["request_id"] == r.headers["x-request-id"]]
    assert rows and rows[0]["purpose"] == "patient-request"
    assert client.get(f"/api/v1/patients/{other}", headers=bearer(patient)).status_code == 404
    assert client.get("/api/v1/patients", headers=bearer(patient)).status_code == 403


def test_only_auditors_list_reads_and_bad_purposes_are_refused(client, owner):
    doctor = login(client, "doctor@demo.carebase.local")
    assert client.get("/api/v1/audit/reads", headers=bearer(doctor)).status_code == 403
    r = client.get(f"/api/v1/patients/{demo_patient(owner)}", headers={**bearer(doctor), "X-Purpose-Of-Use": "curiosity"})
    assert r.status_code == 422


def test_the_audit_of_one_tenant_is_invisible_to_another(client, owner):
    admin2 = login(client, "admin@demo2.carebase.local")
    rows = _reads(client, admin2, patient_id=str(demo_patient(owner)))
    assert rows == []


def test_audit_pages_with_a_cursor(client, owner):
    pid = demo_patient(owner)
    doctor = login(client, "doctor@demo.carebase.local")
    admin = login(client, "admin@demo.carebase.local")
    for _ in range(3):
        client.get(f"/api/v1/patients/{pid}", headers=bearer(doctor))
    page1 = client.get("/api/v1/audit/reads", params={"limit": 2}, headers=bearer(admin)).json()
    assert len(page1["items"]) == 2 and page1["next_cursor"]
    page2 = client.get("/api/v1/audit/reads", params={"limit": 2, "cursor": page1["next_cursor"]},
                       headers=bearer(admin)).json()
    assert page2["items"][0]["id"] < page1["items"][-1]["id"]


def test_audit_rows_cannot_be_rewritten_by_the_app(backend):
    import psycopg
    import pytest

    with psycopg.connect(backend.app_dsn) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM audit_reads")
