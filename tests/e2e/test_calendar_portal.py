"""The live calendar and the "Now serving" board in Debian's Chromium: a second user's open
calendar shows a new booking within 500 ms, and the board follows reception's "call next"."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from playwright.sync_api import expect

from tests.conftest import ARTIFACTS, bearer
from tests.e2e.test_portal import _sign_in, browser  # noqa: F401  (the fixture)
from tests.scheduling.test_scheduling import Clinic, _next_monday


def test_an_open_calendar_shows_a_new_booking_within_half_a_second(browser, server, client):  # noqa: F811
    c = Clinic(client)
    monday = _next_monday()
    slot = c.slots(monday, 1)[2]
    pages = []
    for who in ("receptionist@demo.carebase.local", "doctor@demo.carebase.local"):
        page = browser.new_page()
        _sign_in(page, server.url, who)
        page.goto(f"{server.url}/portal/calendar?date={monday.isoformat()}&provider_id={c.provider}")
        expect(page.locator("#live-status")).to_have_text("live")
        pages.append(page)
    r = c.book(slot, type="consultation", reason_for_visit="Second opinion")
    assert r.status_code == 201, r.text  # answered only after the commit
    committed = time.monotonic()
    for page in pages:
        page.wait_for_selector(f"#appt-{r.json()['id']}", timeout=3000)
    elapsed = time.monotonic() - committed
    assert elapsed < 0.5, f"the calendars updated {elapsed * 1000:.0f} ms after the commit"
    ARTIFACTS.mkdir(exist_ok=True)
    pages[1].screenshot(path=str(ARTIFACTS / "portal-live-calendar.png"), full_page=True)
    # The doctor moves the visit along from the page; the receptionist's page follows.
    pages[1].locator(f"#appt-{r.json()['id']} button", has_text="confirmed").click()
    expect(pages[0].locator(f"#appt-{r.json()['id']}")).to_have_attribute("data-status", "confirmed")
    for page in pages:
        page.close()


def test_the_now_serving_board_follows_call_next(browser, server, client):  # noqa: F811
    c = Clinic(client)
    soon = (datetime.now(UTC) + timedelta(minutes=30)).replace(second=0, microsecond=0)
    soon -= timedelta(minutes=soon.minute % 5)
    a = c.book(soon.isoformat(), type="emergency").json()
    assert client.post(f"/api/v1/appointments/{a['id']}/status", headers=bearer(c.token),
                       json={"status": "checked_in"}).status_code == 200
    ticket = a["id"].replace("-", "")[-4:].upper()
    board = browser.new_page()
    _sign_in(board, server.url, "receptionist@demo.carebase.local")
    board.goto(f"{server.url}/portal/queue/{c.location}")
    expect(board.locator("#waiting")).to_contain_text(ticket)
    expect(board.locator("#live-status")).to_have_text("live")
    desk = browser.new_page()
    _sign_in(desk, server.url, "receptionist@demo.carebase.local")
    desk.goto(f"{server.url}/portal/calendar")
    desk.click(f"#call-next-{c.location}")
    expect(desk.locator(f"#call-{c.location}")).to_contain_text(f"Called {ticket}")
    expect(board.locator("#now-serving")).to_have_text(ticket, timeout=2000)
    ARTIFACTS.mkdir(exist_ok=True)
    board.screenshot(path=str(ARTIFACTS / "portal-now-serving.png"), full_page=True)
    board.close()
    desk.close()
