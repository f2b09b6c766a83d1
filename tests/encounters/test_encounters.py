"""Encounters and the chart: coded, range-checked, signed, amended (never edited in place), read
with the patient's rules and audit, erased with the patient."""

from __future__ import annotations

import uuid
from datetime import datetime

from tests.conftest import assert_problem, bearer, demo_patient, login

DOCTOR = "doctor@demo.carebase.local"


def _patient(client, token) -> str:
    r = client.post("/api/v1/patients", headers=bearer(token), json={
        "given_name": "Chart", "family_name": uuid.uuid4().hex[:8], "birth_date": "1970-07-07",
        "allow_duplicate": True})
    assert r.status_code == 201, r.text
    return r.json()["id"]


VISIT = {
    "type": "office_visit", "chief_complaint": "Thirst and frequent urination for two weeks",
    "diagnoses": ["E11.9", "i10"], "procedures": ["99213"],
    "vitals": {"systolic_mmhg": 148, "diastolic_mmhg": 92, "heart_rate_bpm": 78, "temperature_c": 36.8,
               "weight_kg": 82.5, "height_cm": 171},
    "allergies": [{"substance": "Penicillin", "reaction": "rash", "severity": "moderate"}],
    "problems": [{"name": "Type 2 diabetes"}],
    "medications": [{"name": "Metformin", "dose": "500 mg", "frequency": "twice daily"}],
    "lab_results": [{"test": "HbA1c", "value": "8.1", "unit": "%", "flag": "high"}],
    "treatment_plan": "Start metformin; diet counselling.", "follow_up_instructions": "Review in 4 weeks.",
    "note": "Discussed diagnosis.",
}


def _at(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _events(owner) -> int:
    return owner.execute("SELECT count(*) FROM events").fetchone()[0]


def test_a_doctor_records_and_signs_a_coded_encounter(client, owner):
    token = login(client, DOCTOR)
    patient = _patient(client, token)
    r = client.post(f"/api/v1/patients/{patient}/encounters", headers=bearer(token), json=VISIT)
    assert r.status_code == 201, r.text
    e = r.json()
    assert e["diagnoses"] == [{"code": "E11.9", "description": "Type 2 diabetes mellitus without complications"},
                              {"code": "I10", "description": "Essential (primary) hypertension"}]
    assert e["procedures"] == ["99213"] and e["vitals"]["systolic_mmhg"] == 148
    me = client.get("/api/v1/me", headers=bearer(token)).json()
    assert e["signed_by"] == me["id"] and e["signed_at"]
    # The clinical content is sealed in the log, never in clear.
    assert owner.execute("SELECT count(*) FROM events WHERE stream_id = %s AND data::text LIKE '%%Metformin%%'",
                         (e["id"],)).fetchone()[0] == 0


def test_unknown_codes_and_impossible_vitals_are_named_and_nothing_is_written(client, owner):
    token = login(client, DOCTOR)
    patient = _patient(client, token)
    before = _events(owner)
    url = f"/api/v1/patients/{patient}/encounters"
    p = assert_problem(client.post(url, headers=bearer(token), json={"diagnoses": ["E11.9", "Q99.999"]}), 422,
                       "unknown-icd10cm")
    assert "Q99.999" in p["detail"]
    p = assert_problem(client.post(url, headers=bearer(token), json={"vitals": {"systolic_mmhg": 400}}), 422,
                       "implausible-vital")
    assert p["vital"] == "systolic_mmhg" and "400" in p["detail"]
    assert_problem(client.post(url, headers=bearer(token), json={"vitals": {"temperature_c": 60}}), 422,
                   "implausible-vital")
    assert_problem(client.post(url, headers=bearer(token), json={"vitals": {"systolic_mmhg": 80,
                                                                            "diastolic_mmhg": 95}}),
                   422, "implausible-vital")
    assert_problem(client.post(url, headers=bearer(token), json={"procedures": ["9921"]}), 422, "bad-cpt")
    assert_problem(client.post(url, headers=bearer(token), json={"type": "house_call"}), 422, "validation-failed")
    assert _events(owner) == before


def test_signed_notes_are_amended_never_edited_in_place(client, owner):
    token = login(client, DOCTOR)
    patient = _patient(client, token)
    e = client.post(f"/api/v1/patients/{patient}/encounters", headers=bearer(token), json=VISIT).json()
    r = client.post(f"/api/v1/encounters/{e['id']}/amendments", headers=bearer(token), json={
        "field": "note", "value": "Discussed diagnosis and diet.", "reason": "Incomplete note"})
    assert r.status_code == 200, r.text
    amended = r.json()
    assert amended["note"] == "Discussed diagnosis and diet."
    assert amended["amendments"][0]["previous"] == "Discussed diagnosis."
    assert amended["amendments"][0]["reason"] == "Incomplete note"
    r = client.post(f"/api/v1/encounters/{e['id']}/amendments", headers=bearer(token), json={
        "field": "diagnoses", "value": ["E11.65"], "reason": "More specific code"})
    assert r.json()["diagnoses"][0]["code"] == "E11.65" and len(r.json()["amendments"]) == 2
    assert_problem(client.post(f"/api/v1/encounters/{e['id']}/amendments", headers=bearer(token), json={
        "field": "diagnoses", "value": ["NOPE1"], "reason": "typo"}), 422, "unknown-icd10cm")
    assert_problem(client.post(f"/api/v1/encounters/{e['id']}/amendments", headers=bearer(token), json={
        "field": "signed_by", "value": "x", "reason": "forge"}), 422, "validation-failed")
    kinds = [r[0] for r in owner.execute("SELECT type FROM events WHERE stream_id = %s ORDER BY version",
                                         (e["id"],)).fetchall()]
    assert kinds == ["encounters.recorded", "encounters.amended", "encounters.amended"]


def test_the_chart_gathers_the_timeline_and_the_patient_sees_their_own(client, owner):
    token = login(client, DOCTOR)
    patient = str(demo_patient(owner))
    first = client.post(f"/api/v1/patients/{patient}/encounters", headers=bearer(token), json={
        **VISIT, "occurred_at": "2026-01-10T09:00:00+05:30"}).json()
    second = client.post(f"/api/v1/patients/{patient}/encounters", headers=bearer(token), json={
        "type": "telemedicine", "occurred_at": "2026-02-10T09:00:00+05:30", "diagnoses": ["E11.9"],
        "vitals": {"systolic_mmhg": 132, "diastolic_mmhg": 84}}).json()
    chart = client.get(f"/api/v1/patients/{patient}/chart", headers=bearer(token)).json()
    ids = [e["id"] for e in chart["encounters"]]
    assert ids.index(second["id"]) < ids.index(first["id"])  # newest first
    mine_at = {_at(first["occurred_at"]), _at(second["occurred_at"])}
    series = [v["systolic_mmhg"] for v in chart["vitals"] if _at(v["at"]) in mine_at]
    assert series == [148, 132]  # oldest first, for the trend chart
    assert {"E11.9", "I10"} <= {d["code"] for d in chart["diagnoses"]}
    assert "penicillin" in {a["substance"].lower() for a in chart["allergies"]}
    # The patient reads the same chart through their own door; the read is audited.
    mine = client.get("/api/v1/me/chart", headers=bearer(login(client, "patient@demo.carebase.local")))
    assert mine.status_code == 200 and second["id"] in [e["id"] for e in mine.json()["encounters"]]
    assert owner.execute("SELECT count(*) FROM audit_reads WHERE patient_id = %s AND purpose = 'patient-request'",
                         (patient,)).fetchone()[0] >= 1


def test_who_may_chart_and_read(client, owner):
    doctor = login(client, DOCTOR)
    patient = _patient(client, doctor)
    e = client.post(f"/api/v1/patients/{patient}/encounters", headers=bearer(doctor), json=VISIT).json()
    for who in ("receptionist@demo.carebase.local", "patient@demo.carebase.local", "pharmacist@demo.carebase.local"):
        r = client.post(f"/api/v1/patients/{patient}/encounters", headers=bearer(login(client, who)), json=VISIT)
        assert r.status_code == 403, (who, r.text)
    # A patient cannot read another patient's encounter, another clinic cannot read it at all.
    assert client.get(f"/api/v1/encounters/{e['id']}",
                      headers=bearer(login(client, "patient@demo.carebase.local"))).status_code == 404
    assert client.get(f"/api/v1/encounters/{e['id']}",
                      headers=bearer(login(client, "doctor@demo2.carebase.local"))).status_code == 404


def test_erasing_the_patient_empties_their_chart(client, owner):
    doctor = login(client, DOCTOR)
    patient = _patient(client, doctor)
    e = client.post(f"/api/v1/patients/{patient}/encounters", headers=bearer(doctor), json=VISIT).json()
    admin = login(client, "admin@demo.carebase.local")
    assert client.post(f"/api/v1/patients/{patient}/erase", headers=bearer(admin)).status_code == 204
    row = owner.execute("SELECT note, chief_complaint, diagnoses, medications FROM encounters WHERE id = %s",
                        (e["id"],)).fetchone()
    assert row == (None, None, [], [])


def test_a_merge_brings_the_merged_record_s_encounters_onto_the_kept_chart(client, owner):
    doctor = login(client, DOCTOR)
    kept, twin, third = _patient(client, doctor), _patient(client, doctor), _patient(client, doctor)
    on = {}
    for pid, code in ((kept, "I10"), (twin, "E11.9"), (third, "J45.909")):
        r = client.post(f"/api/v1/patients/{pid}/encounters", headers=bearer(doctor), json={
            "type": "office_visit", "diagnoses": [code]})
        assert r.status_code == 201, r.text
        on[pid] = r.json()["id"]
    admin = login(client, "admin@demo.carebase.local")
    # A chain: third into twin, then twin into kept; every encounter ends up on the kept chart.
    for source, into in ((third, twin), (twin, kept)):
        r = client.post(f"/api/v1/patients/{source}/merge", json={"into": into}, headers=bearer(admin))
        assert r.status_code == 200, r.text
    chart = client.get(f"/api/v1/patients/{kept}/chart", headers=bearer(doctor)).json()
    assert {e["id"] for e in chart["encounters"]} == set(on.values())
    assert {"I10", "E11.9", "J45.909"} <= {d["code"] for d in chart["diagnoses"]}
    # The merged id leads to the kept chart; the rows themselves were never rewritten.
    via_old = client.get(f"/api/v1/patients/{third}/chart", headers=bearer(doctor)).json()
    assert via_old["patient_id"] == kept and len(via_old["encounters"]) == 3
    assert str(owner.execute("SELECT patient_id FROM encounters WHERE id = %s", (on[third],)).fetchone()[0]) == third
    # Another patient's chart is untouched.
    other = _patient(client, doctor)
    assert client.get(f"/api/v1/patients/{other}/chart", headers=bearer(doctor)).json()["encounters"] == []
