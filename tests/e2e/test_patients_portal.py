"""Reception registers patients in the portal: the duplicate check shows candidates in place, and
search finds a patient as you type (accents ignored). Debian's Chromium, driven by Playwright."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from tests.conftest import ARTIFACTS
from tests.e2e.test_portal import _sign_in, browser  # noqa: F401  (the fixture)


def test_reception_registers_a_patient_sees_the_duplicate_check_and_finds_them(browser, server, owner):  # noqa: F811
    family = "Müller" + uuid.uuid4().hex[:6]
    page = browser.new_page()
    _sign_in(page, server.url, "receptionist@demo.carebase.local")
    page.click("#nav-patients")
    expect(page.locator("h1")).to_have_text("Patients")

    def fill():
        page.fill("input[name=given_name]", "Jürgen")
        page.fill("input[name=family_name]", family)
        page.fill("input[name=birth_date]", "1966-06-16")
        page.select_option("select[name=gender]", "M")
        page.fill("input[name=country]", "DE")
        page.fill("input[name=timezone]", "Europe/Berlin")
        page.click("#register-submit")

    fill()
    expect(page.locator("#registered")).to_contain_text("WXQ-DE-")
    # The same person again: the page offers the existing record instead of making a twin.
    fill()
    expect(page.locator("#duplicates")).to_contain_text(family)
    assert owner.execute("SELECT count(*) FROM patients WHERE family_name = %s", (family,)).fetchone()[0] == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "portal-patient-duplicates.png"), full_page=True)
    page.click("#register-anyway")
    expect(page.locator("#registered")).to_be_visible()
    assert owner.execute("SELECT count(*) FROM patients WHERE family_name = %s", (family,)).fetchone()[0] == 2
    # A bad time zone is explained, not a crash.
    page.fill("input[name=family_name]", "Other" + uuid.uuid4().hex[:6])
    page.fill("input[name=timezone]", "Mars/Olympus")
    page.click("#register-submit")
    expect(page.locator("#register-error")).to_contain_text("time zone")
    # Search as you type, without the umlaut.
    page.fill("#patient-search input[name=q]", "jurgen " + family[:4].replace("ü", "u"))
    expect(page.locator("#patient-search-results tbody tr")).to_have_count(2)
    page.close()
