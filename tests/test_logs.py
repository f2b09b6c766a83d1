"""Logs never carry PHI: a full flow is run and its captured log is searched for the demo
patient's name, phone and birth date."""

from __future__ import annotations

import json

from tests.conftest import bearer, demo_patient, login, outbox

NEEDLES = ("Asha", "Verma", "+919800000001", "9800000001", "1987-04-12", "patient@demo.carebase.local")


def test_a_full_flow_leaves_no_phi_in_the_log(client, owner, backend):
    pid = demo_patient(owner)
    start = backend.log_file.stat().st_size if backend.log_file.exists() else 0
    doctor = login(client, "doctor@demo.carebase.local")
    client.get(f"/api/v1/patients/{pid}", headers=bearer(doctor))
    client.get("/api/v1/patients", params={"q": "Verma"}, headers=bearer(doctor))
    client.get("/api/v1/patients", params={"q": "+919800000001 1987-04-12"}, headers=bearer(doctor))
    client.patch(f"/api/v1/patients/{pid}", json={"given_name": "Asha"}, headers=bearer(doctor))
    # Failures too: their messages must not echo the input.
    client.post("/api/v1/patients", json={"given_name": "Asha", "family_name": "Verma", "birth_date": "not-a-date",
                                          "phone": "+919800000001"}, headers=bearer(doctor))
    client.post("/api/v1/auth/token", data={"username": "patient@demo.carebase.local", "password": "wrong one!"})
    patient = login(client, "patient@demo.carebase.local")
    client.get(f"/api/v1/patients/{pid}", headers=bearer(patient))
    r = client.post("/api/v1/auth/otp/request", json={"phone": "+919800000001"})
    code = outbox(owner, "+919800000001")[-1][2].split("code is ")[1][:6]
    assert client.post("/api/v1/auth/otp/verify", json={"challenge_id": r.json()["challenge_id"],
                                                        "code": code}).status_code == 200
    client.post("/api/v1/auth/password/forgot", json={"email": "patient@demo.carebase.local"})
    client.post("/api/v1/auth/register", json={"email": "patient@demo.carebase.local", "password": "x" * 12,
                                               "display_name": "Asha Verma", "phone": "+919800000001"})

    log = backend.log_file.read_text()[start:]
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len(lines) >= 10, "the flow should have been logged"
    assert any(x.get("event") == "request" for x in lines)
    for needle in NEEDLES:
        assert needle not in log, f"PHI {needle!r} found in the log"
