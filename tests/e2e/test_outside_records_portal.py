"""A doctor opens a chart in Debian's Chromium and finds what other systems sent about the patient
under "Outside records", apart from the encounters signed here."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from tests.conftest import ARTIFACTS, bearer, login
from tests.e2e.test_portal import _sign_in, browser  # noqa: F401  (the fixture)

DOCTOR = "doctor@demo.carebase.local"
SNOMED = "http://snomed.info/sct"


def test_the_chart_shows_outside_records_by_type(browser, server, client):  # noqa: F811
    token = login(client, DOCTOR)
    r = client.post("/api/v1/patients", headers=bearer(token), json={
        "given_name": "Elsewhere", "family_name": "Seen" + uuid.uuid4().hex[:6], "birth_date": "1980-08-08",
        "allow_duplicate": True, "consents": {"gdpr": True, "data_sharing": False}})
    pid = r.json()["id"]
    subject = {"reference": f"Patient/{pid}"}
    entries = [
        {"resourceType": "Condition", "subject": subject, "onsetDateTime": "2019-03-01",
         "code": {"coding": [{"system": SNOMED, "code": "44054006", "display": "Diabetes mellitus type 2"}]}},
        *({"resourceType": "Immunization", "status": "completed", "patient": subject,
           "occurrenceDateTime": f"202{i}-10-01T09:00:00Z",
           "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140",
                                       "display": f"Influenza, season {i}"}]}} for i in range(7)),
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"request": {"method": "POST", "url": e["resourceType"]}, "resource": e} for e in entries]}
    assert client.post("/fhir/R4", json=bundle, headers=bearer(token)).status_code == 200

    page = browser.new_page()
    _sign_in(page, server.url, DOCTOR)
    page.goto(f"{server.url}/portal/patients/{pid}/chart")
    section = page.locator("#outside-records")
    expect(section).to_contain_text("Condition (1)")
    expect(section).to_contain_text("Diabetes mellitus type 2")
    expect(section).to_contain_text("Immunization (7)")
    page.click("#outside-Immunization summary")
    immunizations = page.locator("#outside-Immunization")
    expect(immunizations).to_contain_text("Influenza, season 6")  # the newest first
    expect(immunizations).not_to_contain_text("Influenza, season 1")  # only the newest five are listed
    expect(immunizations).to_contain_text("The newest 5 of 7")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "portal-outside-records.png"), full_page=True)
    page.close()
