"""Chat in Debian's Chromium: a patient and a doctor in two browser contexts, live, with the typing
indicator and read receipts."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.conftest import ARTIFACTS, bearer, demo_patient, login
from tests.e2e.test_portal import _sign_in, browser  # noqa: F401  (the fixture)


def _unread_with(client, token: dict, doctor_name: str) -> tuple[str | None, int]:
    """The patient's conversation with this doctor (if any) and its unread count."""
    for c in client.get("/api/v1/messages/conversations", headers=bearer(token)).json():
        if any(p["display_name"] == doctor_name for p in c["participants"]):
            return c["id"], c["unread"]
    return None, 0


def test_a_patient_and_a_doctor_chat_live(browser, server, owner, client):  # noqa: F811
    patient_token = login(client, "patient@demo.carebase.local")
    doctor_name = client.get("/api/v1/me", headers=bearer(login(client, "doctor@demo.carebase.local"))).json()[
        "display_name"]
    _, unread_before = _unread_with(client, patient_token, doctor_name)  # the demo's welcome message, say
    doctor_ctx, patient_ctx = browser.new_context(), browser.new_context()
    doctor, patient = doctor_ctx.new_page(), patient_ctx.new_page()
    _sign_in(doctor, server.url, "doctor@demo.carebase.local")
    _sign_in(patient, server.url, "patient@demo.carebase.local")
    # The doctor starts from the patient's chart.
    doctor.goto(f"{server.url}/portal/patients/{demo_patient(owner)}/chart")
    doctor.click("#chart-message")
    doctor.fill("#new-message textarea", "Hello Asha, how is the new inhaler working?")
    doctor.click("#new-message button[type=submit]")
    doctor.wait_for_url("**/portal/messages/*")
    conversation = doctor.url.rsplit("/", 1)[1]
    expect(doctor.locator("#live-status")).to_have_text("live")
    # The patient sees an unread badge, opens the conversation.
    patient.goto(f"{server.url}/portal/messages")
    link = patient.locator(f'.conversation-link[data-id="{conversation}"]')
    expect(link.locator("xpath=..").locator(".unread-badge")).to_have_text(str(unread_before + 1))
    link.click()
    expect(patient.locator("#live-status")).to_have_text("live")
    expect(patient.locator("#thread")).to_contain_text("how is the new inhaler working?")
    # Opening it marked it read: the doctor's page shows "Seen" without a reload.
    expect(doctor.locator("#seen")).to_be_visible()
    # The patient types: the doctor sees the indicator; then the message arrives live.
    patient.type("#message-body", "Much better, thank you", delay=30)
    expect(doctor.locator("#typing")).to_contain_text("is typing")
    patient.click("#send")
    expect(doctor.locator("#thread")).to_contain_text("Much better, thank you")
    expect(doctor.locator("#typing")).to_have_text("")
    # The doctor's page marked the reply read on arrival: the patient's page shows "Seen".
    expect(patient.locator("#seen")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    doctor.screenshot(path=str(ARTIFACTS / "portal-chat-doctor.png"), full_page=True)
    patient.screenshot(path=str(ARTIFACTS / "portal-chat-patient.png"), full_page=True)
    doctor_ctx.close()
    patient_ctx.close()
