"""Integrations in Debian's Chromium: an admin creates an API key for an HL7 feed, a message the
feed sends fails (its patient is unknown), the admin reads it in the inbox, registers the patient
and replays it from the page."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from tests.conftest import ARTIFACTS
from tests.e2e.test_portal import _sign_in, browser  # noqa: F401  (the fixture)
from tests.hl7v2.test_adt import message, msa, send


def test_create_a_key_read_a_failed_message_and_replay_it(browser, server, client):  # noqa: F811
    page = browser.new_context().new_page()
    _sign_in(page, server.url, "admin@demo.carebase.local")
    page.goto(f"{server.url}/portal/integrations")
    page.locator("#api-keys input[name=name]").fill("E2E feed " + uuid.uuid4().hex[:6])
    page.locator("#api-keys button[type=submit]").click()
    expect(page.locator("#created-key code")).to_contain_text("cbk_")
    key = page.locator("#created-key code").inner_text().strip()

    mrn = "E" + uuid.uuid4().hex[:9].upper()
    update = send(client, key, message("A08", mrn, phone="+2348037777777"))
    assert msa(update)[1] == "AE"
    page.goto(f"{server.url}/portal/integrations?status=error")
    row = page.locator("tr[data-status=error]", has=page.locator(f"code:text-is('{msa(update)[2]}')"))
    expect(row).to_contain_text("No patient with record number")
    row.get_by_role("button", name="Open").click()
    expect(row.locator("pre.hl7-body")).to_contain_text("PID|1||" + mrn)
    page.screenshot(path=str(ARTIFACTS / "integrations.png"), full_page=True)

    assert msa(send(client, key, message("A04", mrn)))[1] == "AA"
    row.locator("button.replay").click()
    expect(row.locator(".replayed")).to_have_attribute("data-ack", "AA")
