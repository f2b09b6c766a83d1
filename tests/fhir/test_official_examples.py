"""The official FHIR R4 example resources (npm package hl7.fhir.r4.examples, CC0, installed by
./dev from package-lock.json, never copied here): each Patient example imports through the API,
reads back equal in the fields Carebase keeps, and a search finds it.

Carebase creates Patients (and Appointments, which book against its own calendars) through FHIR;
the clinical types are recorded in encounters and served read-only, so their examples cannot be
imported. For those, test_fhir_resources checks Carebase's own resources against the same models.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import bearer, login

EXAMPLES = Path(__file__).resolve().parents[2] / "node_modules" / "hl7.fhir.r4.examples"
PATIENTS = sorted(EXAMPLES.glob("Patient-*.json"))
GENDER = {"male", "female", "other", "unknown"}


def test_the_examples_are_installed():
    # ./dev setup installs them (package.json devDependencies); a missing package is a broken setup.
    assert len(PATIENTS) >= 20, f"hl7.fhir.r4.examples is not installed under {EXAMPLES}"


def _kept(resource: dict) -> dict:
    """What Carebase keeps of a Patient: official (or first) name, gender, birth date, first phone
    and e-mail, a two-letter country, the preferred language."""
    names = resource.get("name") or []
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    telecom = resource.get("telecom") or []
    phone = next((t.get("value") for t in telecom if t.get("system") == "phone"), None)
    email = next((t.get("value") for t in telecom if t.get("system") == "email"), None)
    country = ((resource.get("address") or [{}])[0]).get("country")
    return {"family": name.get("family"), "given": " ".join(name.get("given") or []) or None,
            "gender": resource.get("gender", "unknown"), "birthDate": resource.get("birthDate"),
            "phone": "".join(c for c in phone if c.isdigit()) if phone else None, "email": email,
            "country": country if isinstance(country, str) and len(country) == 2 else None}


@pytest.mark.one_backend
@pytest.mark.parametrize("path", PATIENTS, ids=[p.stem for p in PATIENTS])
def test_each_patient_example_imports_reads_back_and_is_found(client, path):
    doctor = login(client, "doctor@demo.carebase.local")
    example = json.loads(path.read_text())
    r = client.post("/fhir/R4/Patient", json=example, headers=bearer(doctor))
    kept = _kept(example)
    if not (kept["family"] and kept["given"] and kept["birthDate"] and len(kept["birthDate"]) == 10):
        # Carebase registers a person only with a family name, a given name and a full birth date:
        # an example without them is refused with a clear OperationOutcome, and nothing is written.
        assert r.status_code == 422, r.text
        assert r.json()["resourceType"] == "OperationOutcome" and r.json()["issue"][0]["details"]["text"]
        return
    assert r.status_code == 201, r.text
    created = r.json()
    back = client.get(f"/fhir/R4/Patient/{created['id']}", headers=bearer(doctor)).json()
    mine = _kept(back)
    if mine["phone"] and kept["phone"]:
        assert mine["phone"].endswith(kept["phone"][-7:])  # kept as digits with a leading +
        mine["phone"] = kept["phone"]
    if not kept["phone"] or len(kept["phone"]) < 7:
        mine["phone"] = kept["phone"]
    assert mine == kept
    found = client.get("/fhir/R4/Patient", params={"family": kept["family"], "birthdate": kept["birthDate"]},
                       headers=bearer(doctor)).json()
    assert created["id"] in {e["resource"]["id"] for e in found.get("entry", []) if e["search"]["mode"] == "match"}
