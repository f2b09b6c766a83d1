"""Sign-in flows over real HTTP against real PostgreSQL."""

from __future__ import annotations

import time

import jwt
import pytest
import pyotp

from tests.conftest import PASSWORD, bearer, login, new_staff, outbox, unique_email


def test_demo_users_sign_in_with_their_role(client):
    for role in ("admin", "doctor", "nurse", "receptionist", "pharmacist", "lab", "patient"):
        tokens = login(client, f"{role}@demo.carebase.local")
        assert tokens["token_type"] == "bearer"
        assert tokens["roles"] == [role]
        me = client.get("/api/v1/me", headers=bearer(tokens)).json()
        assert me["email"] == f"{role}@demo.carebase.local"
        assert me["memberships"][0]["tenant_slug"] == "demo"


def test_access_token_is_asymmetric_short_lived_and_carries_no_personal_data(client):
    tokens = login(client, "patient@demo.carebase.local")
    header = jwt.get_unverified_header(tokens["access_token"])
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert header["alg"] == "EdDSA"
    assert claims["exp"] - claims["iat"] == 15 * 60
    text = str(claims).lower()
    assert "asha" not in text and "patient@" not in text and "9800000001" not in text


def test_register_then_sign_in_and_join_clinic_as_patient(client):
    email = unique_email("reg")
    r = client.post("/api/v1/auth/register", json={"email": email, "password": "a long passphrase",
                                                   "display_name": "New Person", "tenant": "demo"})
    assert r.status_code == 201, r.text
    assert r.json()["memberships"][0]["role"] == "patient"
    tokens = login(client, email, "a long passphrase")
    assert tokens["roles"] == ["patient"]
    again = client.post("/api/v1/auth/register", json={"email": email.upper(), "password": "another passphrase",
                                                       "display_name": "Dup"})
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


def test_wrong_password_is_401_and_repeated_failures_lock_the_account(client, owner):
    staff = new_staff(client, owner, "nurse")
    for _ in range(4):
        r = client.post("/api/v1/auth/token", data={"username": staff["email"], "password": "wrong password!"})
        assert r.status_code == 401
        assert r.json()["code"] == "invalid-credentials"
    r = client.post("/api/v1/auth/token", data={"username": staff["email"], "password": "wrong password!"})
    assert r.status_code == 401
    # Now locked: even the right password is refused, with a Retry-After.
    r = client.post("/api/v1/auth/token", data={"username": staff["email"], "password": staff["password"]})
    assert r.status_code == 429
    assert r.json()["code"] == "account-locked"
    assert int(r.headers["retry-after"]) > 0
    row = owner.execute("SELECT c.locked_until FROM credentials c JOIN accounts a ON a.id = c.account_id "
                        "WHERE a.email = %s", (staff["email"],)).fetchone()
    assert row[0] is not None


def test_unknown_email_answers_like_a_wrong_password(client):
    r = client.post("/api/v1/auth/token", data={"username": unique_email(), "password": "whatever pass"})
    assert r.status_code == 401
    assert r.json()["code"] == "invalid-credentials"


def test_refresh_rotates_and_reuse_revokes_the_whole_family(client):
    first = login(client, "receptionist@demo.carebase.local")
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"]
    third = client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}).json()
    assert client.get("/api/v1/me", headers=bearer(third)).status_code == 200
    # The first token comes back: someone copied it. The whole session dies.
    reuse = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    assert reuse.json()["code"] == "refresh-token-reused"
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": third["refresh_token"]}).status_code == 401
    dead = client.get("/api/v1/me", headers=bearer(third))
    assert dead.status_code == 401
    assert "Bearer" in dead.headers["www-authenticate"]


def test_logout_ends_access_and_refresh_at_once(client):
    tokens = login(client, "lab@demo.carebase.local")
    assert client.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]},
                       headers=bearer(tokens)).status_code == 204
    assert client.get("/api/v1/me", headers=bearer(tokens)).status_code == 401
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401


def test_bad_tokens_get_401_with_www_authenticate(client):
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic abc"}):
        r = client.get("/api/v1/me", headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["content-type"] == "application/problem+json"
    # A token signed with another key.
    forged = jwt.encode({"sub": "x", "exp": int(time.time()) + 60, "iat": int(time.time()), "aud": "carebase-api",
                         "iss": "carebase"}, "secret", algorithm="HS256")
    assert client.get("/api/v1/me", headers=bearer(forged)).status_code == 401


def test_expired_token_is_401(client, backend):
    from carebase.platform import tokens
    from carebase.platform.authz import Principal
    import uuid

    expired = tokens.issue_access_token(Principal.of(uuid.uuid4(), None, ["doctor"], uuid.uuid4()), -5)
    r = client.get("/api/v1/me", headers=bearer(expired))
    assert r.status_code == 401
    assert r.json()["code"] == "token-expired"
    assert "Bearer" in r.headers["www-authenticate"]


def test_otp_login_with_code_hashed_and_limited_attempts(client, owner):
    phone = "+919800000001"  # the demo patient
    r = client.post("/api/v1/auth/otp/request", json={"phone": phone})
    assert r.status_code == 202, r.text
    challenge = r.json()["challenge_id"]
    code = outbox(owner, phone)[-1][2].split("code is ")[1][:6]
    stored = owner.execute("SELECT code_hash FROM otp_challenges WHERE id = %s", (challenge,)).fetchone()[0]
    assert code not in stored and len(stored) == 64
    wrong = "000000" if code != "000000" else "111111"
    bad = client.post("/api/v1/auth/otp/verify", json={"challenge_id": challenge, "code": wrong})
    assert bad.status_code == 401 and bad.json()["attempts_left"] == 4
    ok = client.post("/api/v1/auth/otp/verify", json={"challenge_id": challenge, "code": code})
    assert ok.status_code == 200, ok.text
    assert ok.json()["roles"] == ["patient"]
    # Single use.
    assert client.post("/api/v1/auth/otp/verify", json={"challenge_id": challenge, "code": code}).status_code == 401


def test_otp_five_wrong_attempts_burn_the_code(client, owner):
    r = client.post("/api/v1/auth/otp/request", json={"email": "nurse@demo2.carebase.local", "channel": "email"})
    challenge = r.json()["challenge_id"]
    code = outbox(owner, "nurse@demo2.carebase.local")[-1][2].split("code is ")[1][:6]
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        assert client.post("/api/v1/auth/otp/verify", json={"challenge_id": challenge, "code": wrong}).status_code == 401
    assert client.post("/api/v1/auth/otp/verify", json={"challenge_id": challenge, "code": code}).status_code in (401, 429)


def test_otp_expires_after_five_minutes(client, owner):
    r = client.post("/api/v1/auth/otp/request", json={"phone": "+919800000002"})
    challenge = r.json()["challenge_id"]
    code = outbox(owner, "+919800000002")[-1][2].split("code is ")[1][:6]
    expires, created = owner.execute("SELECT expires_at, created_at FROM otp_challenges WHERE id = %s",
                                     (challenge,)).fetchone()
    assert (expires - created).total_seconds() == 300
    owner.execute("UPDATE otp_challenges SET expires_at = now() - interval '1 second' WHERE id = %s", (challenge,))
    r = client.post("/api/v1/auth/otp/verify", json={"challenge_id": challenge, "code": code})
    assert r.status_code == 401 and r.json()["code"] == "otp-expired"


def test_otp_for_unknown_number_answers_the_same_and_sends_nothing(client, owner):
    r = client.post("/api/v1/auth/otp/request", json={"phone": "+15550001234"})
    assert r.status_code == 202
    assert outbox(owner, "+15550001234") == []


def test_staff_totp_enrolment_then_sign_in_needs_the_code(client, owner):
    staff = new_staff(client, owner, "doctor")
    tokens = login(client, staff["email"], staff["password"])
    enrol = client.post("/api/v1/auth/totp/enroll", headers=bearer(tokens))
    assert enrol.status_code == 200, enrol.text
    totp = pyotp.TOTP(enrol.json()["secret"])
    assert client.post("/api/v1/auth/totp/verify", json={"code": "000000" if totp.now() != "000000" else "111111"},
                       headers=bearer(tokens)).status_code == 422
    assert client.post("/api/v1/auth/totp/verify", json={"code": totp.now()}, headers=bearer(tokens)).status_code == 204
    need = client.post("/api/v1/auth/token", data={"username": staff["email"], "password": staff["password"]})
    assert need.status_code == 401 and need.json()["code"] == "mfa-required"
    # The code used at enrolment cannot be replayed; the next time step's code works.
    step = int(time.time()) // 30
    ok = client.post("/api/v1/auth/token", data={"username": staff["email"], "password": staff["password"],
                                                 "totp_code": totp.at((step + 1) * 30)})
    assert ok.status_code == 200, ok.text
    me = client.get("/api/v1/me", headers=bearer(ok.json())).json()
    assert me["mfa_enabled"] is True


def test_patients_cannot_enrol_totp(client):
    tokens = login(client, "patient@demo.carebase.local")
    assert client.post("/api/v1/auth/totp/enroll", headers=bearer(tokens)).status_code == 403


def test_password_reset_token_is_single_use_and_ends_sessions(client, owner):
    staff = new_staff(client, owner, "receptionist")
    old = login(client, staff["email"], staff["password"])
    assert client.post("/api/v1/auth/password/forgot", json={"email": staff["email"]}).status_code == 202
    body = outbox(owner, staff["email"])[-1][2]
    assert "http://carebase.test/reset-password?token=" in body
    token = body.split("reset token: ")[1].split()[0]
    assert client.post("/api/v1/auth/password/reset",
                       json={"token": token, "new_password": "brand new secret"}).status_code == 204
    again = client.post("/api/v1/auth/password/reset", json={"token": token, "new_password": "yet another one"})
    assert again.status_code == 422 and again.json()["code"] == "reset-token-invalid"
    assert client.get("/api/v1/me", headers=bearer(old)).status_code == 401
    login(client, staff["email"], "brand new secret")
    r = client.post("/api/v1/auth/token", data={"username": staff["email"], "password": staff["password"]})
    assert r.status_code == 401


def test_forgot_password_for_unknown_email_sends_nothing(client, owner):
    email = unique_email()
    assert client.post("/api/v1/auth/password/forgot", json={"email": email}).status_code == 202
    assert outbox(owner, email) == []


def test_passwords_are_argon2id(owner):
    row = owner.execute("SELECT c.password_hash FROM credentials c JOIN accounts a ON a.id = c.account_id "
                        "WHERE a.email = 'doctor@demo.carebase.local'").fetchone()
    assert row[0].startswith("$argon2id$")
    assert PASSWORD not in row[0]


def test_sessions_are_visible_only_to_their_own_account(client, backend, owner):
    import psycopg

    login(client, "doctor@demo.carebase.local")
    login(client, "doctor@demo2.carebase.local")
    a = owner.execute("SELECT id FROM accounts WHERE email = 'doctor@demo.carebase.local'").fetchone()[0]
    b = owner.execute("SELECT id FROM accounts WHERE email = 'doctor@demo2.carebase.local'").fetchone()[0]
    with psycopg.connect(backend.app_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM auth_sessions").fetchone()[0] == 0
        conn.execute("SELECT set_config('app.account_id', %s, true)", (str(a),))
        owners = {r[0] for r in conn.execute("SELECT account_id FROM auth_sessions").fetchall()}
        assert owners == {a}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE auth_sessions SET account_id = %s", (b,))


def test_sign_in_attempts_are_rate_limited_per_address(backend, owner):
    import httpx

    from tests.conftest import ProcessServer

    def burst(c) -> tuple[list[int], httpx.Response]:
        owner.execute("DELETE FROM rate_limits")  # other tests signed in from this address too
        window = int(time.time()) // 60
        statuses = [c.post("/api/v1/auth/token", data={"username": unique_email(), "password": "wrong pass!"})
                    .status_code for _ in range(3)]
        fourth = c.post("/api/v1/auth/token", data={"username": "doctor@demo.carebase.local", "password": PASSWORD})
        return (statuses, fourth) if int(time.time()) // 60 == window else burst(c)  # the minute turned over

    srv = ProcessServer(backend, CAREBASE_AUTH_RATE_LIMIT_PER_MINUTE="3")
    try:
        with httpx.Client(base_url=srv.url) as c:
            statuses, r = burst(c)
            assert statuses == [401, 401, 401]
            assert r.status_code == 429 and r.json()["code"] == "rate-limited"  # even with the right password
            assert 0 < int(r.headers["retry-after"]) <= 60
            # Each public endpoint has its own budget per address.
            assert c.post("/api/v1/auth/password/forgot", json={"email": unique_email()}).status_code == 202
    finally:
        srv.stop()
