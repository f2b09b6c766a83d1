"""Background jobs on the same PostgreSQL, with procrastinate.

- ``@job("<domain>.<verb>")`` registers an async handler ``fn(db, **ids)``. Handlers open their own
  transactions and must be safe to run twice.
- ``defer(session, name, **args)`` queues a job *inside the caller's transaction* by calling
  procrastinate's SQL function directly: the job exists if and only if the command committed
  (a transactional outbox without a second table).
- Failures are retried with exponential backoff (``job_retry_base_seconds`` × 2^attempt, at most
  ``job_max_attempts`` runs). Every failure is recorded in ``job_failures``; a job that runs out of
  attempts stays ``failed`` in procrastinate's table: that is the dead-letter list admins see.
- A worker that dies mid-job stops sending heartbeats; ``recover_stalled_jobs`` (run by every
  worker at start and then periodically) puts its jobs back in the queue.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import procrastinate
import psycopg
from procrastinate import RetryDecision
from procrastinate.retry import BaseRetryStrategy
from sqlalchemy import BigInteger, Column, DateTime, Identity, Integer, String, Table, Text, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform.db import Database, libpq_url, metadata, raw_connection, send_pending_context
from carebase.platform.logging import get_logger
from carebase.settings import get_settings

log = get_logger("carebase.jobs")

QUEUE = "default"

job_failures = Table(
    "job_failures",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("job_id", BigInteger, nullable=False, index=True),
    Column("task_name", String(128), nullable=False),
    Column("tenant_id", UUID(as_uuid=True), nullable=True),
    Column("attempt", Integer, nullable=False),
    Column("error_type", String(200), nullable=False),
    Column("error", Text, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

Handler = Callable[..., Awaitable[Any]]


class Backoff(BaseRetryStrategy):
    """base × 2^attempt seconds between runs, capped at an hour."""

    def get_retry_decision(self, *, exception: BaseException, job) -> RetryDecision | None:
        settings = get_settings()
        if job.attempts + 1 >= settings.job_max_attempts:
            return None
        wait = min(3600.0, settings.job_retry_base_seconds * (2 ** job.attempts))
        return RetryDecision(retry_in={"seconds": wait})


@dataclass
class _Registered:
    name: str
    handler: Handler


_registry: dict[str, _Registered] = {}
_app: procrastinate.App | None = None
_db: Database | None = None


def job(name: str) -> Callable[[Handler], Handler]:
    """Register ``async def handler(db, **args)`` as the job ``name`` (``<domain>.<verb>``)."""

    def register(fn: Handler) -> Handler:
        _registry[name] = _Registered(name, fn)
        if _app is not None:
            _bind(_app, _registry[name])
        return fn

    return register


# Jobs that run on their own every so often (name -> seconds): each worker queues the first run at
# start and every run queues the next, one at a time (a queueing lock per name).
_recurring: dict[str, float] = {}


def recurring(name: str, every_seconds: float) -> None:
    """Run the job ``name`` (no arguments) every ``every_seconds`` while any worker runs."""
    _recurring[name] = every_seconds


async def _queue_recurring(db: Database, name: str, delay_seconds: float) -> None:
    async with db.transaction() as session:
        await defer_once(session, name, queueing_lock=f"recurring:{name}", delay_seconds=delay_seconds)


def _bind(app: procrastinate.App, reg: _Registered) -> None:
    async def run(context, **args):
        assert _db is not None, "jobs run inside `carebase worker`"
        try:
            return await reg.handler(_db, **args)
        except Exception as exc:
            await _record_failure(context.job, exc)
            raise
        finally:
            if reg.name in _recurring:
                await _queue_recurring(_db, reg.name, _recurring[reg.name])

    app.task(name=reg.name, queue=QUEUE, retry=Backoff(), pass_context=True)(run)


async def _record_failure(job_row, exc: Exception) -> None:
    tenant = job_row.task_kwargs.get("tenant_id") if job_row.task_kwargs else None
    async with _db.transaction(owner=True) as session:
        await session.execute(job_failures.insert().values(
            job_id=job_row.id, task_name=job_row.task_name, tenant_id=uuid.UUID(tenant) if tenant else None,
            attempt=job_row.attempts + 1, error_type=type(exc).__name__, error=str(exc)[:2000]))
    # The message stays in the table (admins see it); the log gets only its type.
    log.warning("job_failed", task=job_row.task_name, job_id=job_row.id, attempt=job_row.attempts + 1,
                error_type=type(exc).__name__)


async def _autocommit(conn: psycopg.AsyncConnection) -> None:
    await conn.set_autocommit(True)


def procrastinate_app(db: Database) -> procrastinate.App:
    global _app, _db
    _db = db
    if _app is None:
        # Autocommit: each of procrastinate's queries is one statement (a SQL function), so the
        # pool's default transaction only added a COMMIT round trip to every fetch and finish.
        # (Set per connection: procrastinate opens its listener with the pool's kwargs plus its
        # own autocommit=True, so autocommit cannot be among them.)
        connector = procrastinate.PsycopgConnector(conninfo=libpq_url(db.urls.app), min_size=1, max_size=4,
                                                   configure=_autocommit)
        _app = procrastinate.App(connector=connector)
        for reg in _registry.values():
            _bind(_app, reg)
    return _app


_DEFER_SQL = ("SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(%s, %s, 0, NULL, %s, %s::jsonb, %s)"
              "::procrastinate_job_to_defer_v1]))")


async def defer(session: AsyncSession, name: str, *, delay_seconds: float = 0, run_at: dt.datetime | None = None,
                queueing_lock: str | None = None, **args: Any) -> int:
    """Queue a job in the caller's transaction, to run now, after ``delay_seconds`` or at
    ``run_at``. Arguments must be JSON (ids, not objects)."""
    pg = await _raw(session)
    return await defer_raw(pg, name, run_at=run_at or _after(delay_seconds), queueing_lock=queueing_lock, **args)


async def _raw(session: AsyncSession) -> psycopg.AsyncConnection:
    """The session's own connection, its tenant context sent: jobs commit or vanish with the caller."""
    pg, info = await raw_connection(session)
    await send_pending_context(pg, info)
    return pg


def _after(delay_seconds: float) -> dt.datetime | None:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay_seconds) if delay_seconds else None


async def defer_once(session: AsyncSession, name: str, *, queueing_lock: str, delay_seconds: float = 0,
                     **args: Any) -> int | None:
    """``defer`` unless a job with this ``queueing_lock`` is already waiting (then None): for
    batches, where the job already queued will do this caller's work too. A savepoint keeps the
    refusal from spoiling the caller's transaction."""
    pg = await _raw(session)
    try:
        async with pg.transaction():
            return await defer_raw(pg, name, run_at=_after(delay_seconds), queueing_lock=queueing_lock, **args)
    except psycopg.errors.UniqueViolation:
        return None


async def defer_raw(pg: psycopg.AsyncConnection, name: str, *, run_at: dt.datetime | None = None,
                    queueing_lock: str | None = None, **args: Any) -> int:
    """``defer`` on a psycopg connection whose transaction (and tenant context) is already the
    caller's: procrastinate's own SQL function, straight from the driver (the delivery engine's
    hot path queues its retries this way)."""
    if name not in _registry:
        raise KeyError(f"unknown job {name!r}")
    cur = await pg.execute(_DEFER_SQL, (QUEUE, name, queueing_lock, json.dumps(args, default=str), run_at))
    return (await cur.fetchone())[0]


async def recover_stalled_jobs(app: procrastinate.App, stalled_seconds: float) -> int:
    """Put the jobs of workers that stopped sending heartbeats back in the queue."""
    stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_seconds)
    for j in stalled:
        await app.job_manager.retry_job(j)
        log.warning("job_recovered", task=j.task_name, job_id=j.id)
    await app.job_manager.prune_stalled_workers(seconds_since_heartbeat=stalled_seconds)
    return len(stalled)


STATISTICS_SECONDS = 5.0
# Rows changed since the last ANALYZE of the job table that call for a new one: past this, a burst
# of queued jobs is planned on statistics that predate it.
ANALYZE_AFTER_CHANGES = 1000


async def analyze_if_grown(db: Database) -> bool:
    """``ANALYZE procrastinate_jobs`` when many jobs came or went since the last one.

    The planner fetches the next job by the priority index only when its statistics know the
    queue is long; with statistics from before a burst (or none, on a new database) it reads and
    sorts every queued job to take one, so a burst of N jobs costs O(N²) (docs/benchmarks.md,
    Notifications: fetch + finish at 75/s instead of ~1,200/s with 10,000 queued). Autovacuum
    catches up only after its naptime (a minute) and a fifth of the table changed; the workers,
    who pay for it, look every few seconds. Returns whether it analyzed."""
    async with db.transaction(owner=True) as session:
        changed = await session.scalar(text(
            "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relid = 'procrastinate_jobs'::regclass"))
        # One worker at a time; the others find the counter reset on their next look.
        if (changed or 0) < ANALYZE_AFTER_CHANGES or not await session.scalar(
                text("SELECT pg_try_advisory_xact_lock(hashtext('carebase.jobs.analyze'))")):
            return False
        await session.execute(text("ANALYZE procrastinate_jobs"))
    log.info("job_table_analyzed", changed=changed)
    return True


async def run_worker(db: Database, *, concurrency: int = 4, poll_seconds: float = 2.0,
                     heartbeat_seconds: float = 10.0, stalled_seconds: float = 30.0) -> None:
    app = procrastinate_app(db)
    async with app.open_async():
        await recover_stalled_jobs(app, stalled_seconds)
        for name in _recurring:
            await _queue_recurring(db, name, 0)

        async def keep_recovering():
            while True:
                await asyncio.sleep(stalled_seconds)
                try:
                    await recover_stalled_jobs(app, stalled_seconds)
                except Exception as exc:  # keep the worker alive; the next round retries
                    log.error("stalled_recovery_failed", error_type=type(exc).__name__)

        async def keep_statistics():
            while True:
                await asyncio.sleep(STATISTICS_SECONDS)
                try:
                    await analyze_if_grown(db)
                except Exception as exc:
                    log.error("job_statistics_failed", error_type=type(exc).__name__)

        upkeep = [asyncio.create_task(keep_recovering()), asyncio.create_task(keep_statistics())]
        try:
            await app.run_worker_async(concurrency=concurrency, fetch_job_polling_interval=poll_seconds,
                                       update_heartbeat_interval=heartbeat_seconds,
                                       stalled_worker_timeout=stalled_seconds, install_signal_handlers=True)
        finally:
            for task in upkeep:
                task.cancel()


# -- the dead-letter list --------------------------------------------------------------------


@dataclass
class DeadJob:
    id: int
    task_name: str
    args: dict
    attempts: int
    error_type: str | None
    error: str | None
    failed_at: dt.datetime | None


async def dead_jobs(session: AsyncSession, tenant_id: uuid.UUID | None, limit: int = 100) -> list[DeadJob]:
    """Jobs that ran out of attempts, newest first, with their last error. ``tenant_id`` None: all."""
    q = text(
        "SELECT j.id, j.task_name, j.args, j.attempts, f.error_type, f.error, f.failed_at "
        "FROM procrastinate_jobs j "
        "LEFT JOIN (SELECT DISTINCT ON (job_id) job_id, error_type, error, failed_at FROM job_failures "
        "           ORDER BY job_id, id DESC) f ON f.job_id = j.id "
        "WHERE j.status = 'failed' AND (CAST(:tenant AS text) IS NULL OR j.args->>'tenant_id' = CAST(:tenant AS text)) "
        "ORDER BY j.id DESC LIMIT :limit")
    rows = (await session.execute(q, {"tenant": str(tenant_id) if tenant_id else None, "limit": limit})).all()
    return [DeadJob(r.id, r.task_name, r.args, r.attempts, r.error_type, r.error, r.failed_at) for r in rows]


async def retry_dead_job(session: AsyncSession, job_id: int, tenant_id: uuid.UUID | None) -> bool:
    """Send a dead job back to the queue (after the cause was fixed)."""
    r = await session.execute(text(
        "UPDATE procrastinate_jobs SET status = 'todo', scheduled_at = NULL, attempts = 0 "
        "WHERE id = :id AND status = 'failed' "
        "AND (CAST(:tenant AS text) IS NULL OR args->>'tenant_id' = CAST(:tenant AS text)) RETURNING id"),
        {"id": job_id, "tenant": str(tenant_id) if tenant_id else None})
    return r.first() is not None
