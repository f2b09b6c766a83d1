"""Notifications (issue 5): deliveries/s through the local channels with 2 `carebase worker`
processes, next to the ceilings measured in the same run.

* ceiling: single-row INSERT transactions into ``outbound_messages`` (what the local channel
  writes) through plain psycopg, 2 clients;
* the job system's own ceiling: no-op jobs/s through the same 2 worker processes (procrastinate's
  fetch, the call and its bookkeeping, nothing of ours);
* deliveries/s: DELIVERIES deliveries queued with ``delivery.deliver()`` in one transaction
  (chain sms → e-mail, one `delivery.run` job each), committed while both workers wait; the clock
  runs from the commit to the last ``delivered``. Measured twice: first as a burst meets the job
  table's planner statistics (a fresh database: never analyzed), then with ``ANALYZE
  procrastinate_jobs`` in the queueing transaction (what autovacuum leaves a minute later).
  Every delivery must leave exactly one outbox message;
* where the time goes: the worker processes' and PostgreSQL's CPU per delivery (from /proc), and
  in this process, one at a time: ``deliver()``, ``delivery.run`` and
  procrastinate's fetch + finish of one job.

Chat fan-out between two server processes (the other half of issue 5's benchmark line) is
bench/chat.py.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

from bench.harness import ROOT, Row, log, server_env, urls_owner_dsn
from carebase.platform import jobs

DELIVERIES = 5_000
NOOP_JOBS = 5_000
WORKERS = 2
CONCURRENCY = 4  # `carebase worker`'s default
# Deliveries per second as a share of no-op jobs per second through the same workers: the engine's
# own work for a delivery (one transaction, a handful of statements) should cost no more than the
# job system's bookkeeping around it. (Raw outbox INSERT transactions/s are printed for scale, with
# no target: the job system alone reaches only ~0.06 of them on this machine, so a target there
# would measure procrastinate, not the engine.)
TARGET_VS_NOOP = 0.5
CONTENT = {"title": "Order ORD-1: out for delivery", "body": "Your order ORD-1 is out for delivery.",
           "short": "Carebase: your order ORD-1 is out for delivery."}


@jobs.job("bench.noop")
async def noop(db, run: str, n: int, tenant_id: str | None = None) -> None:
    """Nothing: the job system's own cost (the workers load this module, CAREBASE_JOB_MODULES)."""


# -- processes and their CPU -------------------------------------------------------------------


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _postgres_cpu() -> float:
    """Every postgres process on this machine (the bench's server; with --database-url, all of it)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes().startswith(b"postgres"):
                    total += _cpu_seconds(int(entry))
            except OSError:
                pass
    return total


class Workers:
    """WORKERS real `carebase worker` processes, up (registered with procrastinate) on entry."""

    def __init__(self, env: dict[str, str], dsn: str, tmp: Path):
        self.env = {**env, "CAREBASE_JOB_MODULES": "bench.notifications", "CAREBASE_WORKER_POLL_SECONDS": "0.2"}
        self.dsn, self.tmp = dsn, tmp

    def __enter__(self) -> Workers:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            before = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0]
            # Closed in __exit__.
            self.logs = [open(self.tmp / f"worker-{uuid.uuid4().hex[:6]}.log", "w")  # noqa: SIM115
                         for _ in range(WORKERS)]
            self.procs = [subprocess.Popen([sys.executable, "-m", "carebase.cli", "worker", "--concurrency",
                                            str(CONCURRENCY)], cwd=ROOT, env=self.env, stdout=out,
                                           stderr=subprocess.STDOUT) for out in self.logs]
            deadline = time.time() + 90
            while conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0] < before + WORKERS:
                if time.time() > deadline or any(p.poll() is not None for p in self.procs):
                    self.__exit__()
                    raise RuntimeError("the workers did not start:\n" + "".join(
                        Path(out.name).read_text()[-2000:] for out in self.logs))
                time.sleep(0.1)
        return self

    def cpu(self) -> float:
        return sum(_cpu_seconds(p.pid) for p in self.procs)

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for out in self.logs:
            out.close()


def _until(dsn: str, sql: str, params: tuple, n: int, timeout: float = 900) -> float:
    """Poll ``sql`` (a count) until it reaches n; returns when it did."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.perf_counter() + timeout
        while True:
            if conn.execute(sql, params).fetchone()[0] >= n:
                return time.perf_counter()
            if time.perf_counter() > deadline:
                raise RuntimeError(f"timed out waiting for {n}: {sql}")
            time.sleep(0.1)


# -- the ceiling -------------------------------------------------------------------------------


async def raw_outbox_inserts(dsn: str, clients: int, seconds: float) -> float:
    """Single-row INSERT transactions into outbound_messages/s: the local channel's write alone."""
    async def client(k: int) -> int:
        n = 0
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                await conn.execute("INSERT INTO outbound_messages (id, channel, recipient, body, status) "
                                   "VALUES (%s, 'sms', %s, %s, 'local')",
                                   (uuid.uuid4(), f"+00raw{k}{n:09d}", CONTENT["short"]))
                n += 1
        return n

    started = time.perf_counter()
    counts = await asyncio.gather(*(client(k) for k in range(clients)))
    return sum(counts) / (time.perf_counter() - started)


# -- through the workers -----------------------------------------------------------------------


async def _queue_deliveries(settings, urls, kind: str, prefix: str, n: int, analyze: bool) -> float:
    """n deliveries in one transaction; returns the seconds the deliver() calls took."""
    from sqlalchemy import text

    from carebase.platform import delivery
    from carebase.platform.db import Database

    content = delivery.Content(**CONTENT)
    db = Database(settings, urls)
    try:
        async with db.transaction(owner=True) as session:
            started = time.perf_counter()
            for i in range(n):
                to = f"{prefix}{i:06d}"
                await delivery.deliver(session, kind=kind, chain=["sms", "email"], content=content,
                                       addresses={"sms": to, "email": f"{to[1:]}@example.org"})
            took = time.perf_counter() - started
            if analyze:  # counts this transaction's own rows; the statistics land with the commit
                await session.execute(text("ANALYZE procrastinate_jobs"))
    finally:
        await db.dispose()
    return took


def _through_workers(settings, urls, env, tmp: Path, analyze: bool) -> dict:
    dsn = urls_owner_dsn(urls)
    kind = f"bench.{secrets.token_hex(4)}"
    prefix = f"+00{secrets.randbelow(10**6):06d}"
    with Workers(env, dsn, tmp) as workers:
        queue_seconds = asyncio.run(_queue_deliveries(settings, urls, kind, prefix, DELIVERIES, analyze))
        started, w0, pg0 = time.perf_counter(), workers.cpu(), _postgres_cpu()  # the commit just returned
        done = _until(dsn, "SELECT count(*) FROM deliveries WHERE kind = %s AND status = 'delivered'", (kind,),
                      DELIVERIES)
        worker_cpu, pg_cpu = workers.cpu() - w0, _postgres_cpu() - pg0
    with psycopg.connect(dsn) as conn:
        messages, recipients = conn.execute("SELECT count(*), count(DISTINCT recipient) FROM outbound_messages "
                                            "WHERE recipient LIKE %s", (prefix + "%",)).fetchone()
    elapsed = done - started
    return {"rate": DELIVERIES / elapsed, "seconds": elapsed, "queue_seconds": queue_seconds,
            "worker_ms": 1000 * worker_cpu / DELIVERIES, "pg_ms": 1000 * pg_cpu / DELIVERIES,
            "cores": (worker_cpu + pg_cpu) / elapsed, "bad": abs(messages - DELIVERIES) + (messages - recipients)}


def _noop_jobs(urls, env, tmp: Path) -> dict:
    dsn = urls_owner_dsn(urls)
    run = secrets.token_hex(4)
    with Workers(env, dsn, tmp) as workers:
        with psycopg.connect(dsn) as conn:
            conn.execute(
                "SELECT procrastinate_defer_jobs_v1(array_agg(ROW('default', 'bench.noop', 0, NULL, NULL, "
                "jsonb_build_object('run', %s::text, 'n', g), NULL)::procrastinate_job_to_defer_v1)) "
                "FROM generate_series(1, %s) g", (run, NOOP_JOBS))
            conn.execute("ANALYZE procrastinate_jobs")
        started, w0, pg0 = time.perf_counter(), workers.cpu(), _postgres_cpu()
        done = _until(dsn, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'bench.noop' "
                      "AND args->>'run' = %s AND status = 'succeeded'", (run,), NOOP_JOBS)
        worker_cpu, pg_cpu = workers.cpu() - w0, _postgres_cpu() - pg0
    elapsed = done - started
    return {"rate": NOOP_JOBS / elapsed, "worker_ms": 1000 * worker_cpu / NOOP_JOBS,
            "pg_ms": 1000 * pg_cpu / NOOP_JOBS, "cores": (worker_cpu + pg_cpu) / elapsed}


# -- where the time goes, one at a time in this process ------------------------------------------


async def _split(settings, urls, n: int = 1000) -> dict:
    import procrastinate

    from carebase.platform import delivery
    from carebase.platform.db import Database

    db = Database(settings, urls)
    content = delivery.Content(**CONTENT)
    prefix = f"+00{secrets.randbelow(10**6):06d}"
    try:
        async with db.transaction(owner=True) as session:
            cpu = time.process_time()
            ids = [await delivery.deliver(session, kind="bench.split", chain=["sms", "email"], content=content,
                                          addresses={"sms": f"{prefix}{i:06d}"}) for i in range(n)]
            deliver_ms = 1000 * (time.process_time() - cpu) / n
        for delivery_id in ids[:20]:  # warm: compiled statements, prepared statements, adapters loaded
            await delivery.run(db, delivery_id)
        cpu, wall = time.process_time(), time.perf_counter()
        for delivery_id in ids[20:]:
            await delivery.run(db, delivery_id)
        run_ms = 1000 * (time.process_time() - cpu) / (n - 20)
        run_wall_ms = 1000 * (time.perf_counter() - wall) / (n - 20)
        # The same jobs' bookkeeping, through procrastinate as a worker does it (its own pool).
        app = jobs.procrastinate_app(db)
        async with app.open_async():
            worker_id = await app.job_manager.register_worker()
            fetched = 0
            cpu = time.process_time()
            while (job := await app.job_manager.fetch_job(queues=None, worker_id=worker_id)) is not None:
                await app.job_manager.finish_job(job, status=procrastinate.jobs.Status.SUCCEEDED, delete_job=False)
                fetched += 1
            jobs_ms = 1000 * (time.process_time() - cpu) / max(fetched, 1)
            await app.job_manager.unregister_worker(worker_id)
    finally:
        await db.dispose()
    return {"deliver_ms": deliver_ms, "run_ms": run_ms, "run_wall_ms": run_wall_ms, "jobs_ms": jobs_ms}


# -- the run -----------------------------------------------------------------------------------


def run(settings, urls, seconds: float, tmp: Path) -> list[Row]:
    log("Notifications (issue 5): local channels, 2 `carebase worker` processes")
    import carebase.domains  # noqa: F401 - every table and job, as in a worker

    env = server_env(settings, urls)
    dsn = urls_owner_dsn(urls)
    raw = asyncio.run(raw_outbox_inserts(dsn, WORKERS, seconds))
    log(f"  raw single-row INSERT into outbound_messages, {WORKERS} clients: {raw:.0f} tx/s")

    cold = _through_workers(settings, urls, env, tmp, analyze=False)
    log(f"  {DELIVERIES:,} deliveries, job table never analyzed: {cold['rate']:.1f}/s ({cold['seconds']:.1f} s); "
        f"worker CPU {cold['worker_ms']:.1f} ms, PostgreSQL CPU {cold['pg_ms']:.1f} ms per delivery, "
        f"{cold['cores']:.2f} cores busy")
    noop = _noop_jobs(urls, env, tmp)
    log(f"  {NOOP_JOBS:,} no-op jobs: {noop['rate']:.1f}/s; worker CPU {noop['worker_ms']:.2f} ms, PostgreSQL CPU "
        f"{noop['pg_ms']:.2f} ms per job, {noop['cores']:.2f} cores busy")
    warm = _through_workers(settings, urls, env, tmp, analyze=True)
    log(f"  {DELIVERIES:,} deliveries, job table analyzed: {warm['rate']:.1f}/s ({warm['seconds']:.1f} s; queued in "
        f"{warm['queue_seconds']:.1f} s); worker CPU {warm['worker_ms']:.1f} ms, PostgreSQL CPU {warm['pg_ms']:.1f} ms "
        f"per delivery, {warm['cores']:.2f} cores busy")
    split = asyncio.run(_split(settings, urls))
    log(f"  one at a time in this process: deliver() {split['deliver_ms']:.2f} ms CPU; delivery.run "
        f"{split['run_ms']:.2f} ms CPU ({split['run_wall_ms']:.2f} ms wall); procrastinate fetch + finish "
        f"{split['jobs_ms']:.2f} ms CPU")

    bad = cold["bad"] + warm["bad"]
    vs_noop = warm["rate"] / noop["rate"]
    return [
        Row(f"deliveries/s vs no-op jobs/s, same {WORKERS} workers", warm["rate"], noop["rate"], vs_noop,
            f">= {TARGET_VS_NOOP}", vs_noop >= TARGET_VS_NOOP),
        Row("  outbox messages missing or twice", bad, None, None, "= 0", bad == 0),
        Row(f"  (reference) deliveries/s vs raw outbox INSERT tx/s, {WORKERS} workers", warm["rate"], raw,
            warm["rate"] / raw, "-", None),
        Row("  (reference) the same, a burst on a never-analyzed job table", cold["rate"], raw, cold["rate"] / raw,
            "-", None),
        Row(f"  (reference) no-op jobs/s vs raw outbox INSERT tx/s, {WORKERS} workers", noop["rate"], raw,
            noop["rate"] / raw, "-", None),
        Row("  (reference) worker CPU ms per delivery (2 processes)", warm["worker_ms"], None, None, "-", None),
        Row("  (reference) worker CPU ms per no-op job", noop["worker_ms"], None, None, "-", None),
        Row("  (reference) PostgreSQL CPU ms per delivery", warm["pg_ms"], None, None, "-", None),
        Row("  (reference) delivery.run CPU ms, in process", split["run_ms"], None, None, "-", None),
        Row("  (reference) procrastinate fetch + finish CPU ms, in process", split["jobs_ms"], None, None, "-", None),
        Row("  (reference) deliver() CPU ms, in process", split["deliver_ms"], None, None, "-", None),
    ]
