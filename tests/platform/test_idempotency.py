"""Idempotency-Key on POST: a retried request returns the first answer and never writes twice.

The key is claimed in the request's own transaction (src/carebase/platform/web.py), so the stored
response and the write it describes commit together, and a refused request leaves no trace.
"""

from __future__ import annotations

import threading
import uuid

import httpx
import psycopg

from tests.conftest import assert_problem, bearer, login, new_staff

RECEPTIONIST = "receptionist@demo.carebase.local"


def new_key() -> str:
    # Keys live as long as the database: a unique one per test keeps tests independent.
    return f"k1-{uuid.uuid4().hex}"


def patient_body(**extra) -> dict:
    return {"given_name": f"Idem-{uuid.uuid4().hex[:12]}", "family_name": "B", "birth_date": "1990-01-01",
            "allow_duplicate": True, **extra}


def post_patient(client: httpx.Client, tokens: dict, body: dict, key: str | None) -> httpx.Response:
    headers = bearer(tokens)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/api/v1/patients", json=body, headers=headers)


def patient_rows(owner: psycopg.Connection, body: dict) -> int:
    return owner.execute("SELECT count(*) FROM patients WHERE given_name = %s", (body["given_name"],)).fetchone()[0]


def registered_events(owner: psycopg.Connection) -> int:
    return owner.execute("SELECT count(*) FROM events WHERE type = 'patients.registered'").fetchone()[0]


def stored_keys(owner: psycopg.Connection, key: str) -> list[tuple]:
    return owner.execute("SELECT scope, status FROM idempotency_keys WHERE key = %s ORDER BY scope",
                         (key,)).fetchall()


def account_id(client: httpx.Client, tokens: dict) -> str:
    return client.get("/api/v1/me", headers=bearer(tokens)).json()["id"]


def assert_replay_of(first: httpx.Response, again: httpx.Response) -> None:
    assert again.status_code == first.status_code
    assert again.content == first.content
    assert again.headers.get("idempotent-replayed") == "true"
    for header in ("content-type", "location", "etag"):
        assert again.headers.get(header) == first.headers.get(header), header


def test_same_key_and_body_replays_the_first_answer_and_writes_once(client, owner):
    tokens = login(client, RECEPTIONIST)
    key, body = new_key(), patient_body()
    events = registered_events(owner)

    first = post_patient(client, tokens, body, key)
    again = post_patient(client, tokens, body, key)

    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    assert_replay_of(first, again)
    assert patient_rows(owner, body) == 1
    assert registered_events(owner) == events + 1
    assert stored_keys(owner, key) == [(account_id(client, tokens), 201)]


def test_same_key_with_another_body_or_route_is_refused_and_writes_nothing(client, owner):
    tokens = login(client, RECEPTIONIST)
    key, body, other = new_key(), patient_body(), patient_body()
    first = post_patient(client, tokens, body, key)
    assert first.status_code == 201, first.text
    events = registered_events(owner)

    reused = post_patient(client, tokens, other, key)
    assert_problem(reused, 422, "idempotency-key-reused")
    assert "idempotent-replayed" not in reused.headers
    # The same body on another route is another request too.
    elsewhere = client.post("/api/v1/locations", json=body, headers={**bearer(tokens), "Idempotency-Key": key})
    assert_problem(elsewhere, 422, "idempotency-key-reused")

    assert patient_rows(owner, other) == 0
    assert patient_rows(owner, body) == 1
    assert registered_events(owner) == events
    # The refusal did not disturb what the key stands for.
    assert_replay_of(first, post_patient(client, tokens, body, key))


def test_keys_are_scoped_per_account(client, owner):
    receptionist, doctor = login(client, RECEPTIONIST), login(client, "doctor@demo.carebase.local")
    key, body = new_key(), patient_body()
    events = registered_events(owner)

    mine = post_patient(client, receptionist, body, key)
    theirs = post_patient(client, doctor, body, key)

    assert mine.status_code == 201, mine.text
    assert theirs.status_code == 201, theirs.text
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]
    assert patient_rows(owner, body) == 2
    assert registered_events(owner) == events + 2
    assert set(stored_keys(owner, key)) == {(account_id(client, receptionist), 201), (account_id(client, doctor), 201)}
    # Each account replays its own answer, never the other's.
    assert_replay_of(mine, post_patient(client, receptionist, body, key))
    assert_replay_of(theirs, post_patient(client, doctor, body, key))


def test_concurrent_duplicates_all_get_the_one_answer_and_one_write(server, client, owner):
    tokens = login(client, RECEPTIONIST)
    key, body = new_key(), patient_body()
    events = registered_events(owner)
    n = 8
    barrier = threading.Barrier(n)
    answers: list[httpx.Response | BaseException] = [None] * n  # type: ignore[list-item]

    def fire(i: int) -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=60) as own:
                own.get("/health")  # connect first, so the POSTs leave together
                barrier.wait(timeout=30)
                answers[i] = post_patient(own, tokens, body, key)
        except BaseException as exc:  # surfaced by the assertions below
            answers[i] = exc

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)

    errors = [a for a in answers if not isinstance(a, httpx.Response)]
    assert not errors, errors
    assert [a.status_code for a in answers] == [201] * n, [a.text[:200] for a in answers]
    assert len({a.content for a in answers}) == 1
    originals = [a for a in answers if a.headers.get("idempotent-replayed") != "true"]
    assert len(originals) == 1
    assert patient_rows(owner, body) == 1
    assert registered_events(owner) == events + 1


def test_a_refused_request_does_not_burn_its_key(client, owner):
    tokens = login(client, RECEPTIONIST)
    key = new_key()
    incomplete = patient_body()
    del incomplete["family_name"]
    future = patient_body(birth_date="2999-01-01")  # valid JSON, refused by the service

    for bad, code in ((incomplete, "validation-failed"), (future, "bad-birth-date")):
        for _ in range(2):  # the retry is executed again, not answered from a store
            r = post_patient(client, tokens, bad, key)
            assert_problem(r, 422, code)
            assert "idempotent-replayed" not in r.headers
            assert stored_keys(owner, key) == []
            assert patient_rows(owner, bad) == 0
        key = new_key()

    # After a refusal the key is still free for the corrected request.
    corrected = {**future, "birth_date": "1990-01-01"}
    first = post_patient(client, tokens, corrected, key)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    assert_replay_of(first, post_patient(client, tokens, corrected, key))
    assert patient_rows(owner, corrected) == 1


def test_a_forbidden_request_is_executed_again_once_it_is_allowed(client, owner):
    """Same key, same body: refused while the caller may not register patients, done once they may."""
    staff = new_staff(client, owner, "lab")
    tokens = login(client, staff["email"], staff["password"])
    key, body = new_key(), patient_body()

    refused = post_patient(client, tokens, body, key)
    assert_problem(refused, 403, "forbidden")
    assert stored_keys(owner, key) == []

    admin = login(client, "admin@demo.carebase.local")
    grant = client.post("/api/v1/members", json={"email": staff["email"], "display_name": "Lab and desk",
                                                 "role": "receptionist"}, headers=bearer(admin))
    assert grant.status_code == 201, grant.text
    tokens = login(client, staff["email"], staff["password"])  # same account (same key scope), new role
    assert "receptionist" in tokens["roles"]

    done = post_patient(client, tokens, body, key)
    assert done.status_code == 201, done.text
    assert "idempotent-replayed" not in done.headers
    assert patient_rows(owner, body) == 1
    assert_replay_of(done, post_patient(client, tokens, body, key))


def test_a_conflict_is_executed_again_once_it_is_resolved(client, owner):
    """Same key, same body: refused while the person already has the role, done once it was removed."""
    admin = login(client, "admin@demo.carebase.local")
    headers = bearer(admin)
    body = {"email": f"idem-{uuid.uuid4().hex[:10]}@example.test", "display_name": "Idem Lab", "role": "lab"}
    existing = client.post("/api/v1/members", json=body, headers=headers)
    assert existing.status_code == 201, existing.text
    key = new_key()

    refused = client.post("/api/v1/members", json=body, headers={**headers, "Idempotency-Key": key})
    assert_problem(refused, 409, "already-member")
    assert stored_keys(owner, key) == []

    assert client.delete(f"/api/v1/members/{existing.json()['id']}", headers=headers).status_code == 204
    done = client.post("/api/v1/members", json=body, headers={**headers, "Idempotency-Key": key})
    assert done.status_code == 201, done.text
    assert "idempotent-replayed" not in done.headers
    assert done.json()["id"] != existing.json()["id"]
    assert_replay_of(done, client.post("/api/v1/members", json=body, headers={**headers, "Idempotency-Key": key}))


def test_an_unusable_key_is_refused_without_a_write(client, owner):
    tokens = login(client, RECEPTIONIST)
    events = registered_events(owner)
    for key in ("", "k" * 256):
        body = patient_body()
        r = post_patient(client, tokens, body, key)
        assert_problem(r, 422, "bad-idempotency-key")
        assert patient_rows(owner, body) == 0
    assert registered_events(owner) == events
    # 255 characters is still a key.
    body = patient_body()
    assert post_patient(client, tokens, body, "k" * 223 + uuid.uuid4().hex).status_code == 201
    assert patient_rows(owner, body) == 1


def test_a_refusal_that_keeps_its_bookkeeping_does_not_keep_the_key(client, owner):
    """A wrong password is refused but its failure count is committed (keep_writes): the key must
    not be committed with it, or the corrected retry under the same key would find a claim with no
    stored answer."""
    key = new_key()
    r = client.post("/api/v1/auth/token", data={"username": RECEPTIONIST, "password": "not it"},
                    headers={"Idempotency-Key": key})
    assert_problem(r, 401, "invalid-credentials")
    assert owner.execute("SELECT count(*) FROM idempotency_keys WHERE key = %s", (key,)).fetchone()[0] == 0
    r = client.post("/api/v1/auth/token", data={"username": RECEPTIONIST, "password": "carebase-demo"},
                    headers={"Idempotency-Key": key})
    assert r.status_code == 200 and r.json()["access_token"], r.text
