"""The clinical portal flows of issue 4 in Debian's Chromium: reception registers a patient and
books a visit; the doctor goes from the day list to the chart and records an encounter with vitals
and a diagnosis; a patient books a telemedicine visit and sees the encounter on their own chart."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

from playwright.sync_api import expect

from tests.conftest import ARTIFACTS, bearer, login
from tests.e2e.test_portal import _sign_in, browser  # noqa: F401  (the fixture)
from tests.scheduling.test_scheduling import Clinic, _next_monday

DOCTOR = "doctor@demo.carebase.local"


def _doctor_schedule(owner) -> tuple[str, str]:
    """The demo doctor's provider id and the location where they see patients (seeded by the demo)."""
    row = owner.execute(
        "SELECT a.provider_id, a.location_id FROM availability a JOIN providers p ON p.id = a.provider_id "
        "JOIN accounts acc ON acc.id = p.account_id WHERE acc.email = %s LIMIT 1", (DOCTOR,)).fetchone()
    assert row, "the demo doctor has no schedule"
    return str(row[0]), str(row[1])


def _book_first_free_slot(page, clinic: Clinic, reason: str) -> str:
    """On the booking page: the clinic's provider and location from next Monday, then the first
    free time offered. Returns that slot's start."""
    page.select_option("#booking-provider", clinic.provider)
    page.select_option("#booking-location", clinic.location)
    page.fill("#booking-date", _next_monday().isoformat())
    page.dispatch_event("#booking-date", "change")
    page.fill("#booking-reason", reason)
    page.wait_for_load_state("networkidle")  # the slots of these choices, not of the page's defaults
    first = page.locator("#slots button.slot").first
    expect(first).to_be_visible()
    starts_at = first.get_attribute("data-starts-at")
    first.click()
    return starts_at


def test_reception_registers_a_patient_and_books_a_visit(browser, server, client):  # noqa: F811
    c = Clinic(client)
    family = f"Okafor{uuid.uuid4().hex[:6]}"
    page = browser.new_page()
    _sign_in(page, server.url, "receptionist@demo.carebase.local")
    page.click("#nav-patients")
    page.fill("#register-patient input[name=given_name]", "Chidi")
    page.fill("#register-patient input[name=family_name]", family)
    page.fill("#register-patient input[name=birth_date]", "1991-03-14")
    page.fill("#register-patient input[name=phone]", f"+4915{uuid.uuid4().int % 10**9:09d}")
    page.click("#register-submit")
    expect(page.locator("#registered")).to_contain_text(family)
    page.click("#book-registered")
    expect(page.locator("#booking-patient")).to_contain_text(family)
    starts_at = _book_first_free_slot(page, c, "First visit")
    expect(page.locator("#booked")).to_contain_text("office visit")
    # The slot is gone from the list (it refreshed), and the API sees the visit with its reason.
    expect(page.locator(f'#slots button.slot[data-starts-at="{starts_at}"]')).to_have_count(0)
    # The new patient's one visit, at that time, with that provider and reason.
    patient = client.get("/api/v1/patients", headers=bearer(c.token), params={"q": family}).json()
    assert len(patient) == 1, patient
    mine = client.get("/api/v1/appointments", headers=bearer(c.token),
                      params={"patient_id": patient[0]["id"]}).json()
    assert len(mine) == 1, (starts_at, mine)
    assert datetime.fromisoformat(mine[0]["starts_at"]) == datetime.fromisoformat(starts_at), (starts_at, mine)
    assert mine[0]["provider_id"] == c.provider and mine[0]["reason_for_visit"] == "First visit"
    assert mine[0]["status"] == "scheduled"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "portal-booking.png"), full_page=True)
    # Booking the same time again from a stale page is refused on the page, not with an error page.
    page.evaluate("""(s) => htmx.ajax('POST', '/portal/appointments', {source: '#booking-form',
                      values: {starts_at: s}, target: '#booking-result'})""", starts_at)
    expect(page.locator("#booking-result .error")).to_contain_text("taken")
    page.close()


def test_doctor_goes_from_the_day_list_to_the_chart_and_records_an_encounter(browser, server, client,
                                                                             owner):  # noqa: F811
    provider, location = _doctor_schedule(owner)
    admin = login(client, "admin@demo.carebase.local")
    family = f"Lindqvist{uuid.uuid4().hex[:6]}"
    patient = client.post("/api/v1/patients", headers=bearer(admin), json={
        "given_name": "Maja", "family_name": family, "birth_date": "1975-06-02"}).json()["id"]
    monday = _next_monday()
    slots = client.get(f"/api/v1/providers/{provider}/slots", headers=bearer(admin),
                       params={"location_id": location, "start_date": monday.isoformat(), "days": 5,
                               "type": "office_visit"}).json()
    r = client.post("/api/v1/appointments", headers=bearer(admin), json={
        "patient_id": patient, "provider_id": provider, "location_id": location, "type": "office_visit",
        "starts_at": slots[-1]["starts_at"]})
    assert r.status_code == 201, r.text
    day = r.json()["starts_at"][:10]
    page = browser.new_page()
    _sign_in(page, server.url, DOCTOR)
    page.click("#nav-calendar")
    page.goto(f"{server.url}/portal/calendar?date={day}&provider_id={provider}")
    page.locator(f"#appt-{r.json()['id']} a.chart-link").click()
    expect(page.locator("#chart-patient")).to_contain_text(family)
    expect(page.locator("#no-encounters")).to_be_visible()
    form = page.locator("#encounter-form")
    form.locator("input[name=chief_complaint]").fill("Headache for three days")
    form.locator("input[name=systolic_mmhg]").fill("400")
    form.locator("input[name=diagnoses]").fill("R51.9")
    page.click("#sign-encounter")
    expect(page.locator("#encounter-error")).to_contain_text("systolic")  # impossible value, nothing written
    form.locator("input[name=systolic_mmhg]").fill("150")
    form.locator("input[name=diagnoses]").fill("R51.9, XX99")
    page.click("#sign-encounter")
    expect(page.locator("#encounter-error")).to_contain_text("XX99")
    assert owner.execute("SELECT count(*) FROM encounters WHERE patient_id = %s", (patient,)).fetchone()[0] == 0
    form.locator("input[name=diagnoses]").fill("R51.9")
    form.locator("input[name=diastolic_mmhg]").fill("95")
    form.locator("input[name=heart_rate_bpm]").fill("88")
    form.locator("input[name=temperature_c]").fill("37.2")
    form.locator("textarea[name=allergies]").fill("Penicillin")
    form.locator("textarea[name=medications]").fill("Ibuprofen 400 mg")
    form.locator("textarea[name=treatment_plan]").fill("Rest, fluids; review blood pressure in two weeks")
    page.click("#sign-encounter")
    timeline = page.locator("#timeline article.encounter")
    expect(timeline).to_have_count(1)
    expect(timeline.first).to_contain_text("R51.9")
    expect(timeline.first).to_contain_text("Headache, unspecified")
    expect(page.locator("#allergies")).to_contain_text("Penicillin")
    expect(page.locator("#medications")).to_contain_text("Ibuprofen 400 mg")
    expect(page.locator("#vitals-table")).to_contain_text("150")
    row = owner.execute("SELECT appointment_id, vitals FROM encounters WHERE patient_id = %s", (patient,)).fetchone()
    assert str(row[0]) == r.json()["id"] and row[1]["systolic_mmhg"] == 150
    # A second visit makes a trend: the chart is drawn.
    form = page.locator("#encounter-form")
    page.locator("#record-encounter summary").click()
    form.locator("input[name=systolic_mmhg]").fill("132")
    form.locator("input[name=diastolic_mmhg]").fill("84")
    page.click("#sign-encounter")
    expect(page.locator("#timeline article.encounter")).to_have_count(2)
    expect(page.locator("#vitals-chart")).to_be_visible()
    page.wait_for_function("window.carebaseVitalsChart === true")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "portal-chart.png"), full_page=True)
    page.close()


def test_patient_books_a_telemedicine_visit_and_sees_the_encounter_on_their_chart(browser, server, client,
                                                                                   owner):  # noqa: F811
    c = Clinic(client)
    h = bearer(c.token)
    assert client.patch(f"/api/v1/providers/{c.provider}", headers=h,
                        json={"telemedicine_enabled": True}).status_code == 200
    page = browser.new_page()
    _sign_in(page, server.url, "patient@demo.carebase.local")
    page.click("#book-visit")
    page.select_option("#booking-type", "telemedicine")
    expect(page).to_have_url(re.compile(r"type=telemedicine"))
    assert "emergency" not in page.locator("#booking-type").inner_text()  # the clinic books those
    starts_at = _book_first_free_slot(page, c, "Rash on both arms")
    expect(page.locator("#booked")).to_contain_text("telemedicine")
    own = client.get("/api/v1/me/patient", headers=bearer(login(client, "patient@demo.carebase.local"))).json()
    visit = [a for a in client.get("/api/v1/appointments", headers=h,
                                   params={"provider_id": c.provider, "from": starts_at}).json()
             if a["patient_id"] == own["id"]]
    assert len(visit) == 1 and visit[0]["type"] == "telemedicine" and visit[0]["reason_for_visit"] == "Rash on both arms"
    # The doctor sees them by video and signs the encounter; the patient finds it on their chart.
    r = client.post(f"/api/v1/patients/{own['id']}/encounters", headers=bearer(login(client, DOCTOR)), json={
        "type": "telemedicine", "appointment_id": visit[0]["id"], "chief_complaint": "Itchy rash",
        "diagnoses": ["L30.9"], "vitals": {"temperature_c": 36.8},
        "follow_up_instructions": "Apply the cream twice daily"})
    assert r.status_code == 201, r.text
    page.click("#nav-dashboard")
    page.click("#my-chart")
    expect(page.locator("h1")).to_have_text("My chart")
    entry = page.locator(f"#e-{r.json()['id']}")
    expect(entry).to_contain_text("telemedicine")
    expect(entry).to_contain_text("L30.9")
    expect(entry).to_contain_text("Apply the cream twice daily")
    assert page.locator("#encounter-form").count() == 0  # patients read their chart, they do not write it
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "portal-my-chart.png"), full_page=True)
    page.close()


def test_the_front_desk_books_but_does_not_read_charts(browser, server, client, owner):  # noqa: F811
    patient = str(owner.execute("SELECT patient_id FROM encounters LIMIT 1").fetchone()[0])
    page = browser.new_page()
    _sign_in(page, server.url, "receptionist@demo.carebase.local")
    response = page.goto(f"{server.url}/portal/patients/{patient}/chart")
    assert response.status == 403
    expect(page.locator("#page-error")).to_contain_text("read:charts")
    expect(page.locator("#nav-dashboard")).to_be_visible()  # still inside the portal
    page.goto(f"{server.url}/portal/patients")
    page.fill("#patient-search input[type=search]", "Verma")
    expect(page.locator("#patient-search-results .book-link").first).to_be_visible()
    assert page.locator("#patient-search-results .chart-link").count() == 0
    token = login(client, "receptionist@demo.carebase.local")
    for path in (f"/api/v1/patients/{patient}/chart", f"/api/v1/patients/{patient}/record.pdf",
                 f"/api/v1/patients/{patient}/record.fhir.json"):
        assert client.get(path, headers=bearer(token)).status_code == 403, path
    page.close()
