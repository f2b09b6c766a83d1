"""Organizations, locations and staff memberships, and the roles that guard them."""

from __future__ import annotations

import pytest

from tests.conftest import bearer, login, new_staff, outbox, unique_email


def test_current_tenant_and_locations(client):
    admin = login(client, "admin@demo.carebase.local")
    t = client.get("/api/v1/tenants/current", headers=bearer(admin)).json()
    assert t["slug"] == "demo" and t["kind"] == "clinic" and t["timezone"] == "Asia/Kolkata"
    r = client.post("/api/v1/locations", json={"name": "North Wing", "address": "1 Main Road"}, headers=bearer(admin))
    assert r.status_code == 201, r.text
    loc = r.json()
    assert loc["timezone"] == "Asia/Kolkata"  # inherits the tenant's zone
    assert client.get(f"/api/v1/locations/{loc['id']}", headers=bearer(admin)).json()["name"] == "North Wing"
    names = [x["name"] for x in client.get("/api/v1/locations", headers=bearer(admin)).json()]
    assert "North Wing" in names


def test_a_location_needs_a_real_time_zone(client):
    admin = login(client, "admin@demo.carebase.local")
    r = client.post("/api/v1/locations", json={"name": "Nowhere", "timezone": "Mars/Olympus"}, headers=bearer(admin))
    assert r.status_code == 422 and r.json()["code"] == "bad-timezone"


def test_admin_invites_staff_who_sets_a_password_and_signs_in(client, owner):
    staff = new_staff(client, owner, "pharmacist")
    tokens = login(client, staff["email"], staff["password"])
    assert tokens["roles"] == ["pharmacist"]
    mail = outbox(owner, staff["email"])[0]
    assert mail[0] == "email" and "reset" in mail[1].lower()


def test_existing_account_gets_a_second_role_without_a_new_invitation(client, owner):
    admin = login(client, "admin@demo.carebase.local")
    staff = new_staff(client, owner, "nurse")
    sent = len(outbox(owner, staff["email"]))
    r = client.post("/api/v1/members", json={"email": staff["email"], "display_name": "x", "role": "receptionist"},
                    headers=bearer(admin))
    assert r.status_code == 201 and r.json()["invited"] is False
    assert len(outbox(owner, staff["email"])) == sent
    assert login(client, staff["email"], staff["password"])["roles"] == ["nurse", "receptionist"]
    dup = client.post("/api/v1/members", json={"email": staff["email"], "display_name": "x", "role": "nurse"},
                      headers=bearer(admin))
    assert dup.status_code == 409


def test_removing_a_member_takes_the_role_away(client, owner):
    admin = login(client, "admin@demo.carebase.local")
    email = unique_email("temp")
    m = client.post("/api/v1/members", json={"email": email, "display_name": "Temp", "role": "lab"},
                    headers=bearer(admin)).json()
    assert client.delete(f"/api/v1/members/{m['id']}", headers=bearer(admin)).status_code == 204
    assert all(x["id"] != m["id"] for x in client.get("/api/v1/members", headers=bearer(admin)).json())
    assert client.delete(f"/api/v1/members/{m['id']}", headers=bearer(admin)).status_code == 404


def test_an_admin_cannot_remove_their_own_admin_role(client):
    admin = login(client, "admin@demo.carebase.local")
    me = client.get("/api/v1/me", headers=bearer(admin)).json()
    mine = next(x for x in client.get("/api/v1/members", headers=bearer(admin)).json()
                if x["account_id"] == me["id"] and x["role"] == "admin")
    r = client.delete(f"/api/v1/members/{mine['id']}", headers=bearer(admin))
    assert r.status_code == 409


def test_staff_can_sign_in_to_the_tenant_they_choose(client, owner):
    # The demo2 admin invites a demo staff member: one person, two clinics.
    staff = new_staff(client, owner, "doctor")
    admin2 = login(client, "admin@demo2.carebase.local")
    assert client.post("/api/v1/members", json={"email": staff["email"], "display_name": "x", "role": "doctor"},
                       headers=bearer(admin2)).status_code == 201
    t1 = login(client, staff["email"], staff["password"])
    t2 = login(client, staff["email"], staff["password"], tenant="demo2")
    assert t1["tenant_id"] != t2["tenant_id"]
    me = client.get("/api/v1/me", headers=bearer(t2)).json()
    assert {m["tenant_slug"] for m in me["memberships"]} == {"demo", "demo2"}
    r = client.post("/api/v1/auth/token", data={"username": staff["email"], "password": staff["password"],
                                                "tenant": "nowhere"})
    assert r.status_code == 403


# role -> (method, path, body) that it must NOT be allowed to do
REFUSED = [
    ("nurse", "POST", "/api/v1/members", {"email": "x@example.org", "display_name": "x", "role": "doctor"}),
    ("doctor", "POST", "/api/v1/locations", {"name": "x"}),
    ("receptionist", "GET", "/api/v1/audit/reads", None),
    ("pharmacist", "GET", "/api/v1/patients", None),
    ("lab", "POST", "/api/v1/patients", {"given_name": "a", "family_name": "b", "birth_date": "1990-01-01"}),
    ("patient", "GET", "/api/v1/members", None),
    ("patient", "POST", "/api/v1/patients", {"given_name": "a", "family_name": "b", "birth_date": "1990-01-01"}),
    ("doctor", "POST", "/api/v1/patients/{pid}/erase", None),
]


@pytest.mark.parametrize(("role", "method", "path", "body"), REFUSED, ids=[f"{r}-{m}-{p}" for r, m, p, _ in REFUSED])
def test_wrong_role_gets_403_and_changes_nothing(client, owner, role, method, path, body):
    from tests.conftest import demo_patient

    token = login(client, f"{role}@demo.carebase.local")
    before = owner.execute("SELECT max(position) FROM events").fetchone()[0]
    r = client.request(method, path.format(pid=demo_patient(owner)), json=body, headers=bearer(token))
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "forbidden"
    assert owner.execute("SELECT max(position) FROM events").fetchone()[0] == before


def test_operator_onboards_a_tenant_whose_admin_is_invited(client, owner, backend):
    from tests.conftest import carebase_cli

    slug = "sunrise-" + unique_email().split("-")[1][:6]
    admin_email = unique_email("admin")
    r = carebase_cli(backend, "create-tenant", "--slug", slug, "--name", "Sunrise Pharmacy", "--kind", "pharmacy",
                     "--timezone", "Asia/Kolkata", "--admin-email", admin_email)
    assert r.returncode == 0, r.stderr
    assert "invited by e-mail" in r.stdout
    body = outbox(owner, admin_email)[-1][2]
    token = body.split("reset token: ")[1].split()[0]
    assert client.post("/api/v1/auth/password/reset", json={"token": token, "new_password": "sunrise rises"}).status_code == 204
    tokens = login(client, admin_email, "sunrise rises", tenant=slug)
    assert tokens["roles"] == ["admin"]
    t = client.get("/api/v1/tenants/current", headers=bearer(tokens)).json()
    assert t["kind"] == "pharmacy" and t["name"] == "Sunrise Pharmacy"
    again = carebase_cli(backend, "create-tenant", "--slug", slug, "--name", "x", "--admin-email", admin_email)
    assert again.returncode == 2 and "taken" in again.stderr
    bad = carebase_cli(backend, "create-tenant", "--slug", "Bad Slug!", "--name", "x", "--admin-email", admin_email)
    assert bad.returncode == 2 and "slug" in bad.stderr


def test_seed_demo_is_idempotent(backend, owner):
    from tests.conftest import carebase_cli

    def counts():
        return owner.execute("SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM accounts), "
                             "(SELECT count(*) FROM memberships), (SELECT count(*) FROM events)").fetchone()

    before = counts()
    r = carebase_cli(backend, "seed-demo")
    assert r.returncode == 0, r.stderr
    assert "already present" in r.stdout
    assert counts() == before
    for slug, domain in (("demo", "demo.carebase.local"), ("demo2", "demo2.carebase.local")):
        roles = {row[0] for row in owner.execute(
            "SELECT m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id JOIN accounts a "
            "ON a.id = m.account_id WHERE t.slug = %s AND a.email LIKE %s", (slug, f"%@{domain}")).fetchall()}
        assert roles == {"admin", "doctor", "nurse", "receptionist", "pharmacist", "lab", "patient"}
