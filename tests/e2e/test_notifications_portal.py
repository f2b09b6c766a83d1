"""Notifications in Debian's Chromium: a patient switches promotions off and sees an order update
arrive live while the promotion is suppressed; an admin finds a dead letter with its attempts."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.conftest import ARTIFACTS, bearer, login
from tests.e2e.test_portal import _sign_in, browser  # noqa: F401  (the fixture)
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import free_port
from tests.notifications import test_engine as engine
from tests.notifications.test_engine import _delivery, _person


def _off_loop(fn, *args, **kwargs):
    # Playwright's sync API runs an event loop in this thread; the engine's helpers start their own.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def _notify(*args, **kwargs):
    return _off_loop(engine._notify, *args, **kwargs)


def _run(*args, **kwargs):
    return _off_loop(engine._run, *args, **kwargs)

PATIENT = "patient@demo.carebase.local"


def test_a_patient_turns_promotions_off_and_still_gets_order_updates(browser, server, client, owner,
                                                                      backend):  # noqa: F811
    person = _person(client)
    page = browser.new_page()
    _sign_in(page, server.url, person["email"], "notify me please")
    page.click("#nav-notifications")
    page.click("#to-settings")
    expect(page.locator("#pref-category-orders")).to_be_disabled()  # always on
    expect(page.locator("#pref-category-promotions")).to_be_checked()
    page.uncheck("#pref-category-promotions")
    page.select_option("#pref-language", "en")
    page.click("#save-settings")
    expect(page.locator("#settings-result")).to_have_text("Saved.")
    prefs = client.get("/api/v1/me/notification-preferences", headers=bearer(person["token"])).json()
    assert prefs["categories_off"] == ["promotions"]
    page.goto(f"{server.url}/portal/notifications")
    expect(page.locator("#live-status")).to_have_text("live")
    assert not _notify(backend, owner, person, "promotion", headline="20% off vitamins", text="This week only.")
    assert _notify(backend, owner, person)  # the order update, while the page is open
    expect(page.locator("#notices")).to_contain_text("Order ORD-1: out for delivery")
    expect(page.locator("#unread-count")).to_have_text("1")
    expect(page.locator("#notices")).not_to_contain_text("vitamins")
    assert _delivery(owner, person, "promotion")[1] == "suppressed"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "portal-notifications.png"), full_page=True)
    page.click("#read-all")
    expect(page.locator("#unread-count")).to_have_text("0")
    page.close()


def test_an_admin_sees_a_dead_letter_with_every_attempt(browser, server, client, owner, backend):  # noqa: F811
    person = _person(client, phone=False)
    _notify(backend, owner, person, "document.ready", document="Your lab report")
    d = _delivery(owner, person, "document.ready")
    dead_smtp = {"email_provider": "smtp", "smtp_host": "127.0.0.1", "smtp_port": free_port(),
                 "delivery_retries_per_channel": 1, "delivery_retry_base_seconds": 0.0}
    for _ in range(2):
        _run(backend, d[0], **dead_smtp)
    assert _delivery(owner, person, "document.ready")[1] == "dead"
    page = browser.new_page()
    _sign_in(page, server.url, "admin@demo.carebase.local")
    page.click("#nav-deliveries")
    letter = page.locator(f"#dead-{d[0]}")
    expect(letter).to_contain_text("document.ready")
    letter.locator("summary").click()
    rows = letter.locator("tbody tr")
    expect(rows).to_have_count(3)  # two tries by e-mail, then WhatsApp skipped (no number)
    expect(rows.nth(0)).to_contain_text("transient")
    expect(rows.nth(0)).to_contain_text("unreachable")
    expect(rows.nth(2)).to_contain_text("skipped")
    expect(page.locator("#channel-stats")).to_contain_text("smtp")
    page.wait_for_function("document.getElementById('delivery-chart') !== null")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "portal-deliveries.png"), full_page=True)
    # Patients do not see the delivery log.
    other = browser.new_page()
    _sign_in(other, server.url, PATIENT)
    assert other.goto(f"{server.url}/portal/deliveries").status == 403
    other.close()
    page.close()
    assert login(client, PATIENT)  # the demo patient still signs in
