"""AI-assisted consultation in Debian's Chromium: a patient consults, the doctor approves with one
edit, the patient signs and downloads the PDF, and the verify page says valid; a chest-pain
consultation is stopped as an emergency and appears at the top of the doctor's queue, live."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.conftest import ARTIFACTS, bearer, demo_patient, login
from tests.consult.test_consult import ANSWERS
from tests.e2e.test_portal import _sign_in, browser  # noqa: F401  (the fixture)
from tests.encounters.test_export import pdf_text


def _consult(page, base: str, complaint: str) -> None:
    page.goto(f"{base}/portal/consult")
    page.fill("#consult-text", complaint)
    page.click("#consult-start")
    page.wait_for_url("**/portal/consult/*")


def test_consult_review_sign_download_and_verify(browser, server):  # noqa: F811
    patient_ctx, doctor_ctx = browser.new_context(accept_downloads=True), browser.new_context()
    patient, doctor = patient_ctx.new_page(), doctor_ctx.new_page()
    _sign_in(patient, server.url, "patient@demo.carebase.local")
    _sign_in(doctor, server.url, "doctor@demo.carebase.local")

    _consult(patient, server.url, "Sore throat, runny nose and sneezing since Monday")
    expect(patient.locator(".turn-assistant").first).to_contain_text("intake assistant")
    for n, answer in enumerate(ANSWERS, start=2):
        if patient.locator("#transcript").get_attribute("data-status") != "active":
            break
        patient.fill("#say-text", answer)
        patient.click("#say")
        expect(patient.locator(".turn-patient")).to_have_count(n)
    expect(patient.locator("#summary")).to_contain_text("runny nose")
    expect(patient.locator("#say-form")).to_be_hidden()
    consultation = patient.url.rsplit("/", 1)[1]

    # The doctor finds the draft in the queue, edits one line, approves.
    doctor.goto(f"{server.url}/portal/prescriptions/queue")
    expect(doctor.locator("#live-status")).to_have_text("live")
    draft = doctor.locator(f'.queue-item[data-consultation="{consultation}"]')
    expect(draft).to_contain_text("Common cold")
    draft.locator("a").click()
    doctor.wait_for_url("**/portal/prescriptions/*")
    expect(doctor.locator("#consult-summary")).to_contain_text("Sore throat, runny nose and sneezing since Monday")
    rx = doctor.url.rsplit("/", 1)[1]
    first = doctor.locator(".item-row").first
    first.locator('input[name="dose"]').fill("500")
    first.locator('select[name="unit"]').select_option("mg")
    first.locator('input[name="times_per_day"]').fill("3")
    first.locator('input[name="duration_days"]').fill("5")
    with doctor.expect_navigation():  # saved, re-checked, and the page shown again
        doctor.click("#save-items")
    expect(doctor.locator(".item-row").first.locator('input[name="dose"]')).to_have_value("500")
    doctor.fill("#approve-notes", "Paracetamol for the fever; rest and fluids.")
    if doctor.locator("#override-reason").count():
        doctor.fill("#override-reason", "Reviewed: acceptable for a short course.")
    doctor.click("#approve")
    expect(doctor.locator("#rx-status")).to_have_text("approved")
    expect(doctor.locator("#rx-hash")).to_be_visible()

    # The patient signs on the pad before the prescription is shown, then downloads the PDF.
    patient.goto(f"{server.url}/portal/prescriptions")
    patient.locator("#my-prescriptions a").first.click()
    patient.wait_for_url(f"**/portal/prescriptions/{rx}")
    expect(patient.locator("#sign-box")).to_be_visible()
    expect(patient.locator("#rx-items")).to_have_count(0)
    pad = patient.locator("#signature-pad").bounding_box()
    patient.mouse.move(pad["x"] + 20, pad["y"] + 100)
    patient.mouse.down()
    for x, y in ((80, 30), (140, 90), (220, 40), (330, 70)):
        patient.mouse.move(pad["x"] + x, pad["y"] + y, steps=5)
    patient.mouse.up()
    patient.click("#sign")
    expect(patient.locator("#rx-items")).to_contain_text("paracetamol")
    with patient.expect_download() as download:
        patient.click("#download-pdf")
    path = download.value.path()
    content = open(path, "rb").read()
    assert content.startswith(b"%PDF") and "paracetamol" in pdf_text(content)

    # The verify page, as a phone would open the QR code.
    patient.click("#verify-link")
    expect(patient.locator("#verify-status")).to_have_text("Valid prescription")
    ARTIFACTS.mkdir(exist_ok=True)
    doctor.screenshot(path=str(ARTIFACTS / "portal-prescription-doctor.png"), full_page=True)
    patient.screenshot(path=str(ARTIFACTS / "portal-prescription-verify.png"), full_page=True)

    # The doctor revokes it; the same verify page now says so.
    doctor.click("#revoke-form >> xpath=.. >> summary")
    doctor.fill("#revoke-reason", "Wrong dose; a new prescription follows.")
    doctor.click("#revoke")
    expect(doctor.locator("#rx-status")).to_have_text("revoked")
    patient.reload()
    expect(patient.locator("#verify-status")).to_have_text("Revoked")
    patient_ctx.close()
    doctor_ctx.close()


def test_chest_pain_stops_as_an_emergency_and_tops_the_doctors_queue(browser, server, client):  # noqa: F811
    # The on-call doctor has dealt with every earlier emergency (other tests leave some).
    token = login(client, "doctor@demo.carebase.local")
    for c in client.get("/api/v1/consultations?status=emergency", headers=bearer(token)).json():
        client.post(f"/api/v1/consultations/{c['id']}/handled", headers=bearer(token), json={"note": "seen"})
    patient_ctx, doctor_ctx = browser.new_context(), browser.new_context()
    patient, doctor = patient_ctx.new_page(), doctor_ctx.new_page()
    _sign_in(doctor, server.url, "doctor@demo.carebase.local")
    doctor.goto(f"{server.url}/portal/prescriptions/queue")
    expect(doctor.locator("#live-status")).to_have_text("live")

    _sign_in(patient, server.url, "patient@demo.carebase.local")
    _consult(patient, server.url, "Crushing chest pain when I climb the stairs, spreading to my left arm")
    expect(patient.locator("#emergency")).to_contain_text("emergency services")
    expect(patient.locator("#say-form")).to_be_hidden()
    consultation = patient.url.rsplit("/", 1)[1]

    # Without a reload, the doctor's queue now starts with it.
    top = doctor.locator(".queue-item").first
    expect(top).to_have_attribute("data-id", consultation)
    expect(top).to_have_attribute("data-kind", "emergency")
    ARTIFACTS.mkdir(exist_ok=True)
    doctor.screenshot(path=str(ARTIFACTS / "portal-emergency-queue.png"), full_page=True)
    # The doctor opens it and records what was done: it leaves the queue.
    top.locator("a").click()
    doctor.fill("#handled-note", "Called the patient; ambulance on its way.")
    doctor.click("#handled")
    expect(doctor.locator("#handled-info")).to_contain_text("ambulance on its way")
    doctor.goto(f"{server.url}/portal/prescriptions/queue")
    expect(doctor.locator(f'.queue-item[data-id="{consultation}"]')).to_have_count(0)
    patient_ctx.close()
    doctor_ctx.close()


def test_a_doctor_writes_from_the_chart_and_overrides_an_allergy_flag(browser, server, owner):  # noqa: F811
    page = browser.new_page()
    _sign_in(page, server.url, "doctor@demo.carebase.local")
    page.goto(f"{server.url}/portal/patients/{demo_patient(owner)}/chart")  # allergic to penicillin
    page.click("#chart-prescribe")
    page.fill("#rx-diagnosis", "Acute otitis media")
    row = page.locator(".item-row").first
    row.locator('input[name="medicine"]').fill("Amoxil")  # a brand name: the generic is found
    row.locator('input[name="dose"]').fill("500")
    row.locator('select[name="unit"]').select_option("mg")
    row.locator('input[name="times_per_day"]').fill("3")
    row.locator('input[name="duration_days"]').fill("7")
    page.click("#check-rx")
    page.wait_for_url("**/portal/prescriptions/*")
    expect(page.locator("#safety .flag-blocking")).to_contain_text("allergic to Penicillin")
    # Approving without a reason is refused in place; with one, it is signed.
    page.click("#approve")
    expect(page.locator("#rx-error")).to_contain_text("need your reason to override")
    page.fill("#override-reason", "Childhood rash was viral; amoxicillin tolerated in 2024.")
    page.click("#approve")
    expect(page.locator("#rx-status")).to_have_text("approved")
    expect(page.locator("#rx-items")).to_contain_text("amoxicillin")
    page.close()
