"""The provider directory page in a real browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import expect

from carebase.providers.codes import make_npi
from tests.conftest import ARTIFACTS, bearer, login
from tests.e2e.test_portal import _sign_in, browser  # noqa: F401 - the shared browser fixture


def test_a_patient_finds_a_doctor_by_language_and_badges(browser, server):  # noqa: F811
    page = browser.new_page()
    _sign_in(page, server.url, "patient@demo.carebase.local")
    page.click("#find-a-doctor")
    expect(page).to_have_url(server.url + "/portal/providers")
    expect(page.locator("h1")).to_have_text("Providers")
    # Other tests fill this directory too (the fuzzer's "'; DROP TABLE" names sort first): find her by name.
    page.fill("input[name=q]", "Iyer")
    iyer = page.locator("#provider-list tr.provider", has_text="Meera Iyer")
    expect(iyer).to_contain_text("Cardiology")
    expect(iyer).to_contain_text("Bengaluru")
    expect(iyer).to_contain_text("en, hi, kn")
    expect(iyer.locator(".badge-verified")).to_be_visible()
    expect(iyer.locator(".badge-telemedicine")).to_be_visible()
    expect(iyer.locator(".badge-accepting")).to_be_visible()

    # Typing filters as you go (htmx); Malayalam is spoken only by Dr Nair.
    page.fill("input[name=q]", "")
    page.fill("input[name=language]", "ml")
    rows = page.locator("#provider-list tr.provider")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Rahul Nair")
    expect(rows.first.locator(".badge-verified")).to_have_count(0)

    # Dr Khan speaks Urdu but takes no new patients.
    page.fill("input[name=language]", "ur")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Fatima Khan")
    expect(rows.first.locator(".badge-accepting")).to_have_count(0)
    page.check("input[name=accepts_new_patients]")
    expect(page.locator("#no-providers")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "portal-providers.png"), full_page=True)
    page.close()


def test_the_directory_pages_with_more_and_admins_reach_it_from_the_dashboard(browser, server, client):  # noqa: F811
    admin = login(client, "admin@demo.carebase.local")
    city = "Portaltown" + uuid.uuid4().hex[:6]
    for i in range(27):
        r = client.post("/api/v1/providers", headers=bearer(admin), json={
            "npi": make_npi(f"{uuid.uuid4().int % 10**9:09d}"), "given_name": "Page", "family_name": f"Doc{i:02d}",
            "specialty": "General Practice", "country": "IN", "city": city})
        assert r.status_code == 201, r.text
    page = browser.new_page()
    _sign_in(page, server.url, "admin@demo.carebase.local")
    page.click("#nav-providers")
    page.fill("input[name=city]", city)
    rows = page.locator("#provider-list tr.provider")
    # The filtered list has arrived when its "More" asks for the same city.
    expect(page.locator("#more-providers button")).to_have_attribute("hx-get", re.compile(f"city={city}"))
    expect(rows).to_have_count(25)
    page.click("#more-providers button")
    expect(rows).to_have_count(27)
    expect(page.locator("#more-providers")).to_have_count(0)
    names = rows.locator("strong").all_inner_texts()
    assert names == [f"Page Doc{i:02d}" for i in range(27)]
    page.close()


def test_the_page_works_without_javascript_and_needs_a_sign_in(server):
    import httpx

    with httpx.Client(base_url=server.url, follow_redirects=False) as c:
        assert c.get("/portal/providers").headers["location"] == "/login"
        assert c.get("/portal/fragments/providers").status_code == 401
        assert c.post("/login", data={"email": "doctor@demo.carebase.local", "password": "carebase-demo"}
                      ).status_code == 303
        r = c.get("/portal/providers", params={"language": "kn", "telemedicine_enabled": "on"})
        assert r.status_code == 200 and "Meera Iyer" in r.text and "Rahul Nair" not in r.text
        r = c.get("/portal/providers", params={"city": "x" * 101})
        assert r.status_code == 422
