"""The append fast path: stream heads known without a read, pipelined inserts and projections, and
the tenant context sent with the first statement. Each shortcut must be as safe as the slow path."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select, text

from carebase.platform import eventstore
from carebase.platform.db import Database, set_context
from carebase.platform.errors import Conflict
from carebase.platform.eventstore import NewEvent
from carebase.settings import set_settings
from tests.conftest import run_db, tenant_id_of


def _append(backend, tenant, stream, expected, *types):
    async def go(session):
        return await eventstore.append(session, stream_type="test", stream_id=stream, tenant_id=tenant,
                                       expected_version=expected, new_events=[NewEvent(t, {"t": t}) for t in types])

    return run_db(backend, go)


def _chain_problems(backend, stream) -> list[str]:
    async def go(session):
        return (await eventstore.verify_chain(session))[1]

    return [str(p) for p in run_db(backend, go) if p.stream_id == str(stream)]


def test_a_head_cached_before_another_writer_still_gets_409_and_a_reread_chains_on(backend, owner):
    tenant = tenant_id_of(owner, "demo")
    stream = uuid.uuid4()
    _append(backend, tenant, stream, 0, "test.a", "test.b")
    assert eventstore._HEAD_CACHE[stream][0] == 2
    stale = eventstore._HEAD_CACHE[stream]
    assert [e.version for e in _append(backend, tenant, stream, 2, "test.c")] == [3]  # from the cache
    # What another process's append leaves behind in this one: a cache one version behind the log.
    eventstore._HEAD_CACHE[stream] = stale
    with pytest.raises(Conflict) as err:
        _append(backend, tenant, stream, 2, "test.d")
    assert err.value.status == 409 and err.value.code == "version-conflict"
    # The caller reloads (version 3): the cache disagrees, so the head is read, and the chain holds.
    assert [e.version for e in _append(backend, tenant, stream, 3, "test.d")] == [4]
    assert eventstore._HEAD_CACHE[stream][0] == 4
    assert _chain_problems(backend, stream) == []


def test_an_existing_stream_cannot_be_started_again(backend, owner):
    tenant = tenant_id_of(owner, "demo")
    stream = uuid.uuid4()
    _append(backend, tenant, stream, 0, "test.a")
    eventstore._HEAD_CACHE.pop(stream)
    with pytest.raises(Conflict):
        _append(backend, tenant, stream, 0, "test.again")  # version 1 without a read: collides


def test_a_rolled_back_append_leaves_no_head_behind(backend, owner):
    tenant = tenant_id_of(owner, "demo")
    stream = uuid.uuid4()

    async def then_fail(session):
        await eventstore.append(session, stream_type="test", stream_id=stream, tenant_id=tenant,
                                expected_version=0, new_events=[NewEvent("test.a", {})])
        raise RuntimeError("the request failed after the append")

    with pytest.raises(RuntimeError):
        run_db(backend, then_fail)
    assert stream not in eventstore._HEAD_CACHE
    assert [e.version for e in _append(backend, tenant, stream, 0, "test.a")] == [1]


def test_two_appends_in_one_transaction_chain_onto_each_other(backend, owner):
    tenant = tenant_id_of(owner, "demo")
    stream = uuid.uuid4()

    async def twice(session):
        first = await eventstore.append(session, stream_type="test", stream_id=stream, tenant_id=tenant,
                                        expected_version=0, new_events=[NewEvent("test.a", {})])
        second = await eventstore.append(session, stream_type="test", stream_id=stream, tenant_id=tenant,
                                         expected_version=1, new_events=[NewEvent("test.b", {})])
        return first + second

    stored = run_db(backend, twice)
    assert [e.version for e in stored] == [1, 2]
    assert stored[0].position < stored[1].position  # positions are filled in after the pipeline
    assert _chain_problems(backend, stream) == []


@eventstore.projector("test.projector-that-reads")
async def _reading_projector(session, ev):
    await session.execute(select(eventstore.events.c.position).limit(1))


def test_a_projector_that_reads_is_refused_not_silently_given_nothing(backend, owner):
    tenant = tenant_id_of(owner, "demo")
    with pytest.raises(RuntimeError, match="Projectors must only write"):
        _append(backend, tenant, uuid.uuid4(), 0, "test.projector-that-reads")


def test_the_tenant_context_travels_with_the_first_statement_and_never_to_the_next_user(backend, owner):
    tenant = tenant_id_of(owner, "demo")

    async def go():
        set_settings(backend.settings)
        db = Database(backend.settings, backend.urls)
        try:
            async with db.app_sessions() as session, session.begin():
                await set_context(session, tenant, None)
                pid, seen = (await session.execute(text(
                    "SELECT pg_backend_pid(), current_setting('app.tenant_id', true)"))).one()
            async with db.app_sessions() as session, session.begin():
                await set_context(session, tenant, None)  # set, but nothing runs before the rollback
                await session.rollback()
            async with db.app_sessions() as session, session.begin():
                pid_after, left = (await session.execute(text(
                    "SELECT pg_backend_pid(), current_setting('app.tenant_id', true)"))).one()
            return pid, seen, pid_after, left
        finally:
            await db.dispose()

    pid, seen, pid_after, left = asyncio.run(go())
    assert seen == str(tenant)
    assert pid_after == pid  # the same pooled connection, so the check below means something
    assert left in ("", None)


def test_a_refused_portal_form_leaves_no_phantom_head_behind(backend, owner):
    """``refusable`` runs a page's command in a savepoint. Rolling that back must forget the heads
    appended inside it, and committing it must not publish them before the transaction commits, or
    a later append could chain onto an event that never committed."""
    from carebase.platform.errors import ValidationFailed
    from carebase.platform.web import refusable

    tenant = tenant_id_of(owner, "demo")
    stream = uuid.uuid4()
    _append(backend, tenant, stream, 0, "test.a")

    async def go(session):
        async def command():
            await eventstore.append(session, stream_type="test", stream_id=stream, tenant_id=tenant,
                                    expected_version=1, new_events=[NewEvent("test.rolled-back", {})])
            raise ValidationFailed("refused after writing", code="refused")

        refused = await refusable(session, command)
        assert isinstance(refused, ValidationFailed)
        # Version 2 never happened: chaining onto it must be a conflict, not a gap in the stream.
        phantom = await refusable(session, lambda: eventstore.append(
            session, stream_type="test", stream_id=stream, tenant_id=tenant, expected_version=2,
            new_events=[NewEvent("test.on-phantom", {})]))
        assert isinstance(phantom, Conflict), phantom
        kept = await refusable(session, lambda: eventstore.append(
            session, stream_type="test", stream_id=stream, tenant_id=tenant, expected_version=1,
            new_events=[NewEvent("test.kept", {})]))
        # The savepoint committed, the transaction has not: nothing may reach the process's cache yet.
        assert eventstore._HEAD_CACHE[stream][0] == 1
        return [e.version for e in kept]

    assert run_db(backend, go) == [2]  # the rolled-back version 2 is free again
    assert eventstore._HEAD_CACHE[stream][0] == 2
    types = [r[0] for r in owner.execute("SELECT type FROM events WHERE stream_id = %s ORDER BY version",
                                         (stream,)).fetchall()]
    assert types == ["test.a", "test.kept"]
    assert _chain_problems(backend, stream) == []
