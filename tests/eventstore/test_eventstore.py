"""The event store: optimistic concurrency, hash chains, signed checkpoints, sealed PHI,
crypto-shredding and projection rebuilds, on real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid

import pytest

from carebase.platform import eventstore
from carebase.platform.db import Database
from carebase.platform.errors import Conflict
from carebase.platform.eventstore import NewEvent
from carebase.settings import set_settings
from tests.conftest import bearer, carebase_cli, demo_patient, login, run_db, tenant_id_of


def _new_patient(client, token, given="Chain", family="Tester") -> dict:
    r = client.post("/api/v1/patients", headers=bearer(token),
                    json={"given_name": given, "family_name": family, "birth_date": "1990-05-06",
                          "allow_duplicate": True})
    assert r.status_code == 201, r.text
    return r.json()


def test_append_checks_the_expected_version(backend, owner):
    tenant = tenant_id_of(owner, "demo")
    stream = uuid.uuid4()

    async def first(session):
        return await eventstore.append(session, stream_type="test", stream_id=stream, tenant_id=tenant,
                                       expected_version=0, new_events=[NewEvent("test.a", {"n": 1}),
                                                                        NewEvent("test.b", {"n": 2})])

    stored = run_db(backend, first)
    assert [e.version for e in stored] == [1, 2]

    async def stale(session):
        await eventstore.append(session, stream_type="test", stream_id=stream, tenant_id=tenant,
                                expected_version=1, new_events=[NewEvent("test.c", {})])

    with pytest.raises(Conflict) as err:
        run_db(backend, stale)
    assert err.value.status == 409

    async def load(session):
        return await eventstore.load(session, stream)

    assert [e.type for e in run_db(backend, load)] == ["test.a", "test.b"]


def test_concurrent_writers_of_one_stream_one_wins_one_gets_409(backend, owner):
    tenant = tenant_id_of(owner, "demo")
    stream = uuid.uuid4()

    async def race():
        set_settings(backend.settings)
        db = Database(backend.settings, backend.urls)
        first_in = asyncio.Event()

        async def writer(name: str, wait: bool):
            async with db.transaction(owner=True) as session:
                await eventstore.append(session, stream_type="test", stream_id=stream, tenant_id=tenant,
                                        expected_version=0, new_events=[NewEvent("test.w", {"by": name})])
                if not wait:
                    first_in.set()
                    await asyncio.sleep(0.5)  # hold the transaction open while the other one tries
            return name

        async def second():
            await first_in.wait()
            return await writer("second", True)

        results = await asyncio.gather(writer("first", False), second(), return_exceptions=True)
        await db.dispose()
        return results

    results = asyncio.run(race())
    assert results[0] == "first"
    assert isinstance(results[1], Conflict) and results[1].status == 409
    rows = owner.execute("SELECT data->>'by' FROM events WHERE stream_id = %s", (stream,)).fetchall()
    assert rows == [("first",)]


def test_appends_to_different_streams_do_not_wait_for_each_other(backend, owner):
    tenant = tenant_id_of(owner, "demo")

    async def scenario():
        set_settings(backend.settings)
        db = Database(backend.settings, backend.urls)
        holding = asyncio.Event()
        release = asyncio.Event()

        async def slow():
            async with db.transaction(owner=True) as session:
                await eventstore.append(session, stream_type="test", stream_id=uuid.uuid4(), tenant_id=tenant,
                                        expected_version=0, new_events=[NewEvent("test.slow", {})])
                holding.set()
                await release.wait()

        async def fast():
            await holding.wait()
            async with db.transaction(owner=True) as session:
                await eventstore.append(session, stream_type="test", stream_id=uuid.uuid4(), tenant_id=tenant,
                                        expected_version=0, new_events=[NewEvent("test.fast", {})])
            return "committed"

        slow_task = asyncio.create_task(slow())
        try:
            # If appends serialised on a global lock this would time out while `slow` holds it.
            return await asyncio.wait_for(fast(), timeout=5)
        finally:
            release.set()
            await slow_task
            await db.dispose()

    assert asyncio.run(scenario()) == "committed"


def test_concurrent_http_updates_with_the_same_etag_one_gets_409(client, backend):
    token = login(client, "receptionist@demo.carebase.local")
    p = _new_patient(client, token)
    barrier = threading.Barrier(2)
    statuses = []

    def patch(name):
        barrier.wait()
        r = client.patch(f"/api/v1/patients/{p['id']}", json={"given_name": name},
                         headers={**bearer(token), "If-Match": f'W/"{p["version"]}"'})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=patch, args=(n,)) for n in ("One", "Two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 409]


def test_phi_is_sealed_in_the_log(client, owner):
    token = login(client, "doctor@demo.carebase.local")
    p = _new_patient(client, token, given="Zephyrine", family="Quillfeather")
    raw = owner.execute("SELECT data::text FROM events WHERE stream_id = %s", (p["id"],)).fetchone()[0]
    assert "Zephyrine" not in raw and "Quillfeather" not in raw and "1990-05-06" not in raw
    assert "_phi" in raw


def test_verify_chain_passes_on_an_untouched_log(backend):
    assert carebase_cli(backend, "checkpoint").returncode == 0
    r = carebase_cli(backend, "verify-chain", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["problems"] == []


class _Tamper:
    """Change the log behind the app's back, then put it back exactly as it was."""

    def __init__(self, owner, stream_id):
        self.owner = owner
        self.rows = owner.execute("SELECT * FROM events WHERE stream_id = %s ORDER BY version", (stream_id,)).fetchall()
        self.cols = [d.name for d in owner.execute("SELECT * FROM events LIMIT 0").description]
        self.stream_id = stream_id

    def restore(self):
        self.owner.execute("DELETE FROM events WHERE stream_id = %s", (self.stream_id,))
        cols = ", ".join(self.cols)
        marks = ", ".join(["%s"] * len(self.cols))
        for row in self.rows:
            values = [json.dumps(v) if isinstance(v, dict) else v for v in row]
            self.owner.execute(f"INSERT INTO events ({cols}) OVERRIDING SYSTEM VALUE VALUES ({marks})", values)


def _verify(backend) -> list[str]:
    r = carebase_cli(backend, "verify-chain", "--json")
    problems = json.loads(r.stdout)["problems"]
    assert (r.returncode == 1) == bool(problems)
    return problems


@pytest.fixture
def chained_patient(client, backend, owner):
    token = login(client, "doctor@demo.carebase.local")
    p = _new_patient(client, token)
    for name in ("B", "C"):
        r = client.patch(f"/api/v1/patients/{p['id']}", json={"given_name": name}, headers=bearer(token))
        assert r.status_code == 200
    assert carebase_cli(backend, "checkpoint").returncode == 0
    tamper = _Tamper(owner, p["id"])
    yield p["id"]
    tamper.restore()
    assert _verify(backend) == []


def test_verify_chain_finds_an_altered_event(backend, owner, chained_patient):
    owner.execute("UPDATE events SET data = jsonb_set(data, '{sex}', '\"male\"') "
                  "WHERE stream_id = %s AND version = 1", (chained_patient,))
    problems = _verify(backend)
    assert any(str(chained_patient) in p and "v1" in p and "hash" in p for p in problems)


def test_verify_chain_finds_a_removed_event(backend, owner, chained_patient):
    owner.execute("DELETE FROM events WHERE stream_id = %s AND version = 2", (chained_patient,))
    problems = _verify(backend)
    assert any(str(chained_patient) in p and "missing" in p for p in problems)


def test_verify_chain_finds_a_removed_tail_through_the_checkpoint(backend, owner, chained_patient):
    owner.execute("DELETE FROM events WHERE stream_id = %s AND version = 3", (chained_patient,))
    problems = _verify(backend)
    assert any(str(chained_patient) in p and "checkpoint" in p for p in problems)


def test_verify_chain_finds_an_inserted_event(backend, owner, chained_patient):
    owner.execute(
        "INSERT INTO events (tenant_id, stream_type, stream_id, version, type, data, metadata, recorded_at, hash) "
        "SELECT tenant_id, stream_type, stream_id, 4, 'patients.updated', '{\"sex\": \"male\"}', metadata, "
        "recorded_at, hash FROM events WHERE stream_id = %s AND version = 3", (chained_patient,))
    problems = _verify(backend)
    assert any(str(chained_patient) in p and "v4" in p for p in problems)


def test_verify_chain_finds_a_forged_checkpoint(backend, owner, chained_patient):
    owner.execute("UPDATE event_checkpoints SET position = position + 1 WHERE id = (SELECT max(id) FROM event_checkpoints)")
    problems = _verify(backend)
    assert any("signature" in p for p in problems)
    owner.execute("UPDATE event_checkpoints SET position = position - 1 WHERE id = (SELECT max(id) FROM event_checkpoints)")


PROJECTIONS = ("tenants", "locations", "memberships", "accounts", "patients")


def _snapshot(owner) -> dict[str, list]:
    return {t: owner.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in PROJECTIONS}


def test_rebuild_projections_reproduces_the_live_tables_exactly(client, backend, owner):
    admin = login(client, "admin@demo.carebase.local")
    p = _new_patient(client, admin, given="Rebuild", family="Subject")
    client.patch(f"/api/v1/patients/{p['id']}", json={"phone": "+919811111111"}, headers=bearer(admin))
    gone = _new_patient(client, admin, given="Erase", family="Me")
    assert client.post(f"/api/v1/patients/{gone['id']}/erase", headers=bearer(admin)).status_code == 204
    client.post("/api/v1/locations", json={"name": "Rebuild Wing"}, headers=bearer(admin))
    before = _snapshot(owner)
    assert all(before[t] for t in PROJECTIONS)
    r = carebase_cli(backend, "rebuild-projections")
    assert r.returncode == 0, r.stderr
    after = _snapshot(owner)
    for t in PROJECTIONS:
        assert after[t] == before[t], f"{t} differs after rebuild"


def test_crypto_shred_makes_the_subject_unreadable_but_keeps_the_chain(client, backend, owner):
    admin = login(client, "admin@demo.carebase.local")
    p = _new_patient(client, admin, given="Forget", family="Menot")
    assert client.post(f"/api/v1/patients/{p['id']}/erase", headers=bearer(admin)).status_code == 204
    row = owner.execute("SELECT given_name, family_name, birth_date, erased_at FROM patients WHERE id = %s",
                        (p["id"],)).fetchone()
    assert row[:3] == (None, None, None) and row[3] is not None
    key = owner.execute("SELECT wrapped_key, shredded_at FROM subject_keys WHERE subject_id = %s", (p["id"],)).fetchone()
    assert key[0] is None and key[1] is not None

    async def load(session):
        return await eventstore.load(session, uuid.UUID(p["id"]))

    events = run_db(backend, load)
    assert events[0].type == "patients.registered"
    assert events[0].phi is None and events[0].shredded
    assert len(events) == 2  # the log keeps its shape
    got = client.get(f"/api/v1/patients/{p['id']}", headers=bearer(admin)).json()
    assert got["erased"] is True and got["given_name"] is None
    assert _verify(backend) == []


def test_nothing_more_can_be_recorded_for_an_erased_subject(backend, client, owner):
    admin = login(client, "admin@demo.carebase.local")
    p = _new_patient(client, admin)
    client.post(f"/api/v1/patients/{p['id']}/erase", headers=bearer(admin))
    r = client.patch(f"/api/v1/patients/{p['id']}", json={"given_name": "Back"}, headers=bearer(admin))
    assert r.status_code == 409


def test_demo_patient_events_open_with_the_right_key(backend, owner):
    pid = demo_patient(owner)

    async def load(session):
        return await eventstore.load(session, pid)

    events = run_db(backend, load)
    assert events[0].phi["given_name"] == "Asha"
