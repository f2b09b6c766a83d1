"""The portal in a real browser: Debian's Chromium driven by Playwright."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.conftest import ARTIFACTS, ProcessServer, bearer, dead_job, login, tenant_id_of

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "./dev test installs Debian's chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def _sign_in(page, base: str, email: str, password: str = "carebase-demo") -> None:
    page.goto(base + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_admin_signs_in_sees_the_dashboard_and_signs_out(browser, server, owner):
    job_id = dead_job(owner, tenant_id_of(owner, "demo"))
    page = browser.new_page()
    _sign_in(page, server.url, "admin@demo.carebase.local")
    expect(page).to_have_url(server.url + "/portal")
    expect(page.locator("h1")).to_have_text("Administration")
    expect(page.locator("#tenant-name")).to_have_text("Demo Clinic")
    expect(page.locator("#role")).to_have_text("admin")
    row = page.locator("#dead-jobs tr", has_text=f"#{job_id}")
    expect(row).to_contain_text("SMTPConnectError")
    expect(page.locator("#members")).to_contain_text("Demo Doctor")
    expect(page.locator("#patient-list")).to_contain_text("Verma")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "portal-admin-dashboard.png"), full_page=True)
    row.locator("button").click()  # retry, with the CSRF header htmx adds
    expect(row.locator("button")).to_have_text("Queued")
    assert owner.execute("SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,)).fetchone()[0] == "todo"
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["carebase_access"]["httpOnly"] and cookies["carebase_refresh"]["httpOnly"]
    page.click("#logout")
    expect(page.locator("input[name=email]")).to_be_visible()
    page.goto(server.url + "/portal")
    expect(page).to_have_url(server.url + "/login")
    page.close()


def test_a_wrong_password_is_explained_on_the_page(browser, server):
    page = browser.new_page()
    _sign_in(page, server.url, "nurse@demo2.carebase.local", "not the password")
    expect(page.locator("#login-error")).to_be_visible()
    page.close()


def test_each_role_gets_its_own_dashboard(browser, server):
    for email, title, sees_patients in (("doctor@demo.carebase.local", "Clinician", True),
                                        ("pharmacist@demo.carebase.local", "Pharmacy", False),
                                        ("patient@demo.carebase.local", "My health", False)):
        page = browser.new_page()
        _sign_in(page, server.url, email)
        expect(page.locator("h1")).to_have_text(title)
        assert page.locator("#patient-list").count() == (1 if sees_patients else 0)
        page.close()


def test_the_patient_list_updates_live(browser, server, client):
    page = browser.new_page()
    _sign_in(page, server.url, "receptionist@demo.carebase.local")
    expect(page.locator("#live-status")).to_have_text("live")
    name = "Live" + uuid.uuid4().hex[:6]
    token = login(client, "receptionist@demo.carebase.local")
    r = client.post("/api/v1/patients", headers=bearer(token),
                    json={"given_name": "Ada", "family_name": name, "birth_date": "1980-02-02"})
    assert r.status_code == 201
    expect(page.locator("#patient-list")).to_contain_text(name, timeout=5000)
    page.close()


def test_without_sse_the_portal_falls_back_to_polling(browser, backend):
    srv = ProcessServer(backend, CAREBASE_PORTAL_POLL_SECONDS="1")
    try:
        page = browser.new_page()
        page.route("**/api/v1/events/stream**", lambda route: route.abort())
        _sign_in(page, srv.url, "receptionist@demo.carebase.local")
        expect(page.locator("#live-status")).to_have_text("updating every 1 s", timeout=10000)
        name = "Poll" + uuid.uuid4().hex[:6]
        with httpx.Client(base_url=srv.url) as c:
            token = login(c, "receptionist@demo.carebase.local")
            assert c.post("/api/v1/patients", headers=bearer(token),
                          json={"given_name": "Bo", "family_name": name, "birth_date": "1970-03-03"}).status_code == 201
        expect(page.locator("#patient-list")).to_contain_text(name, timeout=10000)
        page.close()
    finally:
        srv.stop()


def test_cookie_writes_need_the_csrf_token(server):
    with httpx.Client(base_url=server.url, follow_redirects=False) as c:
        r = c.post("/login", data={"email": "admin@demo.carebase.local", "password": "carebase-demo"})
        assert r.status_code == 303
        # The session cookie alone cannot write: a cross-site form would carry it too.
        r = c.post("/api/v1/locations", json={"name": "Forged"})
        assert r.status_code == 403 and r.json()["code"] == "csrf-failed"
        r = c.post("/api/v1/locations", json={"name": "Legit"}, headers={"X-CSRF-Token": c.cookies["carebase_csrf"]})
        assert r.status_code == 201
