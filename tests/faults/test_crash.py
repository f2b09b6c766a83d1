"""A real server process killed with SIGKILL mid-command leaves all of the command or none."""

from __future__ import annotations

import threading
import time

import httpx

from tests.conftest import ProcessServer, bearer, login


def _counts(owner, marker: str) -> dict[str, int]:
    pid = owner.execute("SELECT id FROM patients WHERE mrn = %s", (marker,)).fetchone()
    events = owner.execute("SELECT count(*) FROM events WHERE data->>'mrn' = %s", (marker,)).fetchone()[0]
    keys = owner.execute("SELECT count(*) FROM subject_keys WHERE subject_id = %s", (pid[0],)).fetchone()[0] if pid else 0
    return {"patients": 1 if pid else 0, "events": events, "subject_keys": keys}


def _register(url: str, token: dict, mrn: str, out: dict) -> None:
    try:
        r = httpx.post(url + "/api/v1/patients", headers=bearer(token), timeout=60,
                       json={"given_name": "Crash", "family_name": "Test", "birth_date": "1970-01-01", "mrn": mrn,
                             "allow_duplicate": True})
        out["status"] = r.status_code
    except httpx.HTTPError as exc:
        out["error"] = type(exc).__name__


def _in_flight(owner) -> bool:
    """The command has written (uncommitted) and now sits at the failpoint."""
    rows = owner.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'carebase_app' "
                         "AND state = 'idle in transaction'").fetchone()[0]
    return rows > 0


def test_sigkill_mid_command_leaves_none_of_it(backend, owner):
    srv = ProcessServer(backend, CAREBASE_FAILPOINTS="eventstore.before_commit=sleep:60")
    try:
        with httpx.Client(base_url=srv.url) as c:
            token = login(c, "receptionist@demo.carebase.local")
        out: dict = {}
        mrn = f"CRASH-{int(time.time() * 1000) % 10**8}"
        t = threading.Thread(target=_register, args=(srv.url, token, mrn, out))
        t.start()
        deadline = time.time() + 20
        while not _in_flight(owner):
            assert time.time() < deadline, "the command never reached the failpoint"
            time.sleep(0.05)
    finally:
        srv.kill()
    t.join(30)
    assert "status" not in out  # the client never got an answer
    deadline = time.time() + 10
    while _in_flight(owner) and time.time() < deadline:  # PostgreSQL notices the dead client
        time.sleep(0.1)
    assert _counts(owner, mrn) == {"patients": 0, "events": 0, "subject_keys": 0}


def test_sigkill_after_the_answer_keeps_all_of_it(backend, owner):
    srv = ProcessServer(backend)
    mrn = f"KEEP-{int(time.time() * 1000) % 10**8}"
    try:
        with httpx.Client(base_url=srv.url) as c:
            token = login(c, "receptionist@demo.carebase.local")
        out: dict = {}
        _register(srv.url, token, mrn, out)
        assert out["status"] == 201
    finally:
        srv.kill()
    assert _counts(owner, mrn) == {"patients": 1, "events": 1, "subject_keys": 1}
