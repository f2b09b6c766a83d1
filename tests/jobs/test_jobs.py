"""Background jobs with real worker processes: retries with backoff, the dead-letter list, recovery
of a job whose worker was SIGKILLed, and deferral that commits or vanishes with its command."""

from __future__ import annotations

import uuid

import pytest

import tests.jobs_fixture  # noqa: F401 - registers the test jobs in this process for defer()
from carebase.platform import heap, jobs
from tests.conftest import WorkerProcess, bearer, carebase_cli, login, run_db, tenant_id_of, wait_for


def _defer(backend, name: str, **args) -> int:
    async def go(session):
        return await jobs.defer(session, name, **args)

    return run_db(backend, go)


def _job(owner, job_id: int):
    return owner.execute("SELECT status, attempts FROM procrastinate_jobs WHERE id = %s", (job_id,)).fetchone()


def _probe(owner, tag: str) -> list[str]:
    exists = owner.execute("SELECT to_regclass('job_probe')").fetchone()[0]
    if not exists:
        return []
    return [r[0] for r in owner.execute("SELECT note FROM job_probe WHERE job = %s ORDER BY at", (tag,)).fetchall()]


def test_a_failing_job_is_retried_with_backoff_then_dead_lettered(backend, owner, client):
    tag = uuid.uuid4().hex
    demo = tenant_id_of(owner, "demo")
    job_id = _defer(backend, "testing.fail_always", tag=tag, tenant_id=str(demo))
    worker = WorkerProcess(backend, CAREBASE_JOB_MAX_ATTEMPTS="3", CAREBASE_JOB_RETRY_BASE_SECONDS="0.5")
    try:
        wait_for(lambda: _job(owner, job_id)[0] == "failed", 60, message="the job to be dead-lettered")
    finally:
        worker.stop()
    assert _probe(owner, tag) == ["ran", "ran", "ran"]  # three attempts, never lost
    failures = owner.execute("SELECT attempt, error_type, error, failed_at FROM job_failures WHERE job_id = %s "
                             "ORDER BY id", (job_id,)).fetchall()
    assert [f[0] for f in failures] == [1, 2, 3]
    assert all(f[1] == "RuntimeError" and "printer is on fire" in f[2] for f in failures)
    gaps = [(b[3] - a[3]).total_seconds() for a, b in zip(failures, failures[1:])]
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0  # 0.5 s, then 1 s: exponential backoff

    admin = login(client, "admin@demo.carebase.local")
    dead = client.get("/api/v1/jobs/dead", headers=bearer(admin)).json()
    mine = [d for d in dead if d["id"] == job_id]
    assert mine and mine[0]["error_type"] == "RuntimeError" and "printer" in mine[0]["error"]
    other = client.get("/api/v1/jobs/dead", headers=bearer(login(client, "admin@demo2.carebase.local"))).json()
    assert all(d["id"] != job_id for d in other)
    assert client.get("/api/v1/jobs/dead", headers=bearer(login(client, "doctor@demo.carebase.local"))).status_code == 403

    # Retrying puts it back in the queue with fresh attempts.
    assert client.post(f"/api/v1/jobs/{job_id}/retry", headers=bearer(admin)).status_code == 204
    assert _job(owner, job_id) == ("todo", 0)
    assert client.post(f"/api/v1/jobs/{job_id}/retry", headers=bearer(admin)).status_code == 404


def test_a_job_whose_worker_is_killed_is_picked_up_again(backend, owner):
    tag = uuid.uuid4().hex
    job_id = _defer(backend, "testing.slow", tag=tag, seconds=3)
    fast = {"CAREBASE_WORKER_HEARTBEAT_SECONDS": "0.5", "CAREBASE_WORKER_STALLED_SECONDS": "2"}
    first = WorkerProcess(backend, **fast)
    try:
        wait_for(lambda: _probe(owner, tag) == ["started"], 30, message="the job to start")
        assert _job(owner, job_id)[0] == "doing"
    finally:
        first.kill()
    second = WorkerProcess(backend, **fast)
    try:
        wait_for(lambda: _job(owner, job_id)[0] == "succeeded", 60, message="another worker to finish the job")
    finally:
        second.stop()
    assert _probe(owner, tag) == ["started", "started", "finished"]


def test_a_job_deferred_in_a_failed_command_never_exists(backend, owner):
    tag = uuid.uuid4().hex

    async def go(session):
        await jobs.defer(session, "testing.slow", tag=tag, seconds=0)
        raise RuntimeError("the command fails after queueing")

    with pytest.raises(RuntimeError):
        run_db(backend, go)
    assert owner.execute("SELECT count(*) FROM procrastinate_jobs WHERE args->>'tag' = %s", (tag,)).fetchone()[0] == 0


def test_unknown_jobs_cannot_be_deferred(backend):
    async def go(session):
        await jobs.defer(session, "nobody.knows")

    with pytest.raises(KeyError):
        run_db(backend, go)


def test_workers_analyze_the_job_table_after_a_burst(backend, owner):
    """A burst of queued jobs planned on statistics from before it is fetched by reading every
    queued job (O(N²) for the burst); the workers' upkeep analyzes the table once it grew, long
    before autovacuum would (switched off here, so it cannot do it for them)."""
    import asyncio

    from carebase.platform.db import Database
    from carebase.settings import set_settings

    def analyze() -> bool:
        async def go():
            set_settings(backend.settings)
            db = Database(backend.settings, backend.urls)
            try:
                return await jobs.analyze_if_grown(db)
            finally:
                await db.dispose()

        return asyncio.run(go())

    def changed() -> int:
        return owner.execute("SELECT n_mod_since_analyze FROM pg_stat_user_tables "
                             "WHERE relid = 'procrastinate_jobs'::regclass").fetchone()[0]

    tag = uuid.uuid4().hex
    burst = jobs.ANALYZE_AFTER_CHANGES + 200
    owner.execute("ALTER TABLE procrastinate_jobs SET (autovacuum_enabled = false)")
    try:
        owner.execute("ANALYZE procrastinate_jobs")
        wait_for(lambda: changed() < jobs.ANALYZE_AFTER_CHANGES, message="the counter reset by ANALYZE")
        assert not analyze()  # nothing much changed: no ANALYZE
        # Tomorrow's jobs: no worker takes them while the test looks.
        owner.execute(
            "SELECT procrastinate_defer_jobs_v1(array_agg(ROW('default', 'testing.slow', 0, NULL, NULL, "
            "jsonb_build_object('tag', %s::text, 'seconds', 0), now() + interval '1 day')"
            "::procrastinate_job_to_defer_v1)) FROM generate_series(1, %s)", (tag, burst))
        owner.execute("SELECT pg_stat_force_next_flush()")
        wait_for(lambda: changed() >= burst, message="the burst in the statistics counters")
        assert analyze()
        wait_for(lambda: changed() < jobs.ANALYZE_AFTER_CHANGES, message="the counter reset by the workers' ANALYZE")
        planned = owner.execute("SELECT reltuples FROM pg_class WHERE oid = 'procrastinate_jobs'::regclass"
                                ).fetchone()[0]
        assert planned >= burst  # the planner now knows the queue is long
        assert not analyze()
    finally:
        owner.execute("DELETE FROM procrastinate_jobs WHERE args->>'tag' = %s", (tag,))
        owner.execute("ALTER TABLE procrastinate_jobs RESET (autovacuum_enabled)")


def test_a_worker_with_an_unknown_channel_provider_stops_at_start(backend):
    done = carebase_cli(backend, "worker", timeout=60, CAREBASE_SMS_PROVIDER="carrier-pigeon")
    assert done.returncode == 2
    assert "CAREBASE_SMS_PROVIDER='carrier-pigeon': not one of" in done.stderr and "twilio" in done.stderr


def test_the_worker_tunes_the_garbage_collector_like_the_server(backend, owner):
    tag = uuid.uuid4().hex
    _defer(backend, "testing.heap", tag=tag)
    worker = WorkerProcess(backend)
    try:
        wait_for(lambda: _probe(owner, tag), 30, message="the heap probe to run")
    finally:
        worker.stop()
    threshold, frozen = map(int, _probe(owner, tag)[0].split())
    assert threshold == heap.GEN0 and frozen > 10_000  # start-up's modules are out of the collector's walk
