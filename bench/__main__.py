"""./dev bench — Carebase against this machine's ceilings, measured side by side in one run.

1. Event appends/s (hash chain + projection, through the event store) vs raw single-row INSERT
   transactions/s on the same PostgreSQL: 1 client (target ratio >= 0.5) and 8 clients writing
   different streams (target >= 0.3). Beside each, what the same statements reach hand-written on
   plain psycopg, one transaction in one round trip per append: the most a Python append could do.
2. Authenticated GET /api/v1/me requests/s vs a bare ASGI hello-world, both served by uvicorn with
   the same settings, load from a separate process (wrk, 32 connections): target ratio >= 0.2 and
   p99 < 50 ms. For reading it: FastAPI's own hello-world, and Carebase's GET /health (no token, no
   database) against the same ceiling.
3. Clinical core (issue 4, bench/clinical.py): patient search and chart load latency over 100,000
   patients and 1,000,000 encounters, concurrent booking throughput, calendar push latency.
4. Notifications (issue 5, bench/notifications.py): deliveries/s through the local channels with 2
   `carebase worker` processes vs raw INSERT transactions/s into the outbox, and where the time goes.
5. Chat fan-out (issue 5, bench/chat.py): a message sent through one `carebase serve` process, to
   the event on a WebSocket held by another process (p99 < 100 ms).
6. PHI stripping (issue 6, bench/phi.py): recall on a corpus of messages with planted identifiers
   (the patient's own >= 0.99, all >= 0.95).
7. Consultations (issue 6, bench/consult.py): 100 concurrent consultations with the offline engine,
   turn latency p95 (< 2 s) next to GET /api/v1/me at the same concurrency.
8. Pharmacy marketplace (issue 7, bench/pharmacy.py): medicine search over 200,000 medicines in 500
   pharmacies (p95 < 30 ms), checkout throughput of 50 concurrent buyers next to GET /api/v1/me.
9. Payments (issue 8, bench/payments.py): ledger postings/s with 16 concurrent writers next to raw
   INSERT tx/s from 16 clients; signed webhooks processed/s next to GET /api/v1/me.

Options: --seconds N (per measurement, default 8), --database-url URL (default: a fresh embedded
server), --only appends|http|clinical|notifications|chat|phi|consult|pharmacy|payments|fhir.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Column, Integer, Table
from sqlalchemy.dialects.postgresql import UUID, insert

from bench import chat, clinical, consult, fhir, notifications, payments, pharmacy, phi
from bench.harness import Row, carebase_server, create_bench_tables, log, login, prepare_database, print_rows, \
    raw_inserts, seed_demo, server_env, urls_owner_dsn, uvicorn, wrk


# -- 1. appends vs raw inserts ---------------------------------------------------------------


async def event_appends(settings, urls, clients: int, seconds: float) -> float:
    from carebase.platform import eventstore
    from carebase.platform.db import Database
    from carebase.platform.eventstore import NewEvent

    projection = Table("bench_projection", eventstore.metadata, Column("stream_id", UUID(as_uuid=True),
                       primary_key=True), Column("version", Integer), extend_existing=True)

    @eventstore.projector("bench.happened")
    async def project(session, ev):
        await session.execute(insert(projection).values(stream_id=ev.stream_id, version=ev.version)
                              .on_conflict_do_update(index_elements=["stream_id"], set_={"version": ev.version}))

    db = Database(settings, urls)
    tenant = uuid.uuid4()

    async def client() -> int:
        n, stream = 0, uuid.uuid4()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            async with db.transaction(tenant, None) as session:
                await eventstore.append(session, stream_type="bench", stream_id=stream, tenant_id=tenant,
                                        expected_version=n, new_events=[NewEvent("bench.happened", {"n": n})])
            n += 1
        return n

    # The app role may write the bench table too (it stands in for a domain's projection).
    with psycopg.connect(urls_owner_dsn(urls), autocommit=True) as conn:
        conn.execute(f"GRANT SELECT, INSERT, UPDATE ON bench_projection TO {settings.app_db_role}")
    started = time.perf_counter()
    counts = await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    await db.dispose()
    return sum(counts) / elapsed


async def hand_written_appends(settings, urls, clients: int, seconds: float) -> float:
    """The ceiling over ``event_appends``: the same statements on the same role, written by hand on
    plain psycopg with nothing between them (no session, no projector registry, no checks). Each
    append is one transaction sent as one string (BEGIN; context; event; projection; COMMIT),
    parameters bound client-side by psycopg: one round trip, the least Python can do per append.
    Printed beside the target so a miss reads against what a Python append could reach here."""
    from datetime import UTC, datetime

    from carebase.platform import crypto
    from carebase.platform.db import _CONTEXT_SQL, libpq_url
    from carebase.platform.eventstore import _INSERT_SQL, GENESIS, _hash_body  # the very statement and hash

    ring = crypto.keyring()
    tenant = uuid.uuid4()

    async def client() -> int:
        n, stream, prev = 0, uuid.uuid4(), GENESIS
        async with await psycopg.AsyncConnection.connect(libpq_url(urls.app), autocommit=True) as conn:
            cur = psycopg.AsyncClientCursor(conn)
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                n += 1
                now, data = datetime.now(UTC), {"n": n}
                row = {"tenant_id": tenant, "stream_type": "bench", "stream_id": stream, "version": n,
                       "type": "bench.happened", "data": data, "metadata": {}, "recorded_at": now}
                prev = ring.chain_hash(prev, _hash_body(row))
                await cur.execute("; ".join((
                    "BEGIN",
                    cur.mogrify(_CONTEXT_SQL, (str(tenant), "")),
                    cur.mogrify(_INSERT_SQL, (tenant, "bench", stream, n, "bench.happened", Jsonb(data), Jsonb({}),
                                              now, prev)),
                    cur.mogrify(PROJECTION_UPSERT, (stream, n)),
                    "COMMIT")))
        return n

    started = time.perf_counter()
    counts = await asyncio.gather(*(client() for _ in range(clients)))
    return sum(counts) / (time.perf_counter() - started)


PROJECTION_UPSERT = ("INSERT INTO bench_projection (stream_id, version) VALUES (%s, %s) "
                     "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version")


# -- 2. HTTP ---------------------------------------------------------------------------------


HELLO = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"hello":"world"}'})
'''

# The framework's own floor: what FastAPI (Carebase's web framework) costs before any of our code.
FASTAPI_HELLO = '''
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def hello():
    return {"hello": "world"}
'''


def http_bench(settings, urls, seconds: float, tmp: Path) -> dict:
    env = server_env(settings, urls)
    seed_demo(env)
    (tmp / "hello_asgi.py").write_text(HELLO)
    (tmp / "hello_fastapi.py").write_text(FASTAPI_HELLO)
    with carebase_server(env) as cb, uvicorn("hello_asgi:app", env, cwd=tmp) as hello, \
            uvicorn("hello_fastapi:app", env, cwd=tmp) as fastapi_hello:
        auth = login(cb, "doctor@demo.carebase.local")
        wrk(f"{cb}/api/v1/me", 2, 32, auth)  # warm up pools and caches
        hello_r = wrk(f"{hello}/", seconds, 32, {})
        me = wrk(f"{cb}/api/v1/me", seconds, 32, auth)
        fastapi_r = wrk(f"{fastapi_hello}/", seconds, 32, {})
        health = wrk(f"{cb}/health", seconds, 32, {})
    return {"hello_rps": hello_r.rps, "hello_p99": hello_r.p99_ms, "me_rps": me.rps, "me_p99": me.p99_ms,
            "fastapi_rps": fastapi_r.rps, "health_rps": health.rps}


def main() -> None:
    ap = argparse.ArgumentParser(prog="./dev bench")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--database-url", default=os.environ.get("CAREBASE_BENCH_DATABASE_URL"))
    ap.add_argument("--only", choices=("appends", "http", "clinical", "notifications", "chat", "phi", "consult",
                                       "pharmacy", "payments", "fhir"))
    opts = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="carebase-bench-"))
    settings, urls, keep = prepare_database(opts.database_url, tmp)
    where = "embedded PostgreSQL" if opts.database_url is None else "PostgreSQL at --database-url"
    # Other work on the machine shows up in every number below: say how busy it was.
    log(f"Carebase benchmarks on {where}, {os.cpu_count()} CPUs, {opts.seconds:g} s per measurement, "
        f"load average {os.getloadavg()[0]:.1f}\n")
    rows: list[Row] = []
    try:
        if opts.only in (None, "appends"):
            create_bench_tables(urls)
            dsn = urls_owner_dsn(urls)
            for clients, target in ((1, 0.5), (8, 0.3)):
                raw = asyncio.run(raw_inserts(dsn, clients, opts.seconds))
                app = asyncio.run(event_appends(settings, urls, clients, opts.seconds))
                floor = asyncio.run(hand_written_appends(settings, urls, clients, opts.seconds))
                rows.append(Row(f"event appends/s vs raw INSERT tx/s, {clients} client(s)", app, raw, app / raw,
                                f">= {target}", app / raw >= target))
                rows.append(Row(f"(reference) hand-written psycopg, same statements, {clients} client(s)",
                                floor, raw, floor / raw, "-", None))
        if opts.only in (None, "http"):
            h = http_bench(settings, urls, opts.seconds, tmp)
            ratio = h["me_rps"] / h["hello_rps"]
            rows.append(Row("GET /api/v1/me req/s vs ASGI hello-world, 32 conns", h["me_rps"], h["hello_rps"], ratio,
                            ">= 0.2", ratio >= 0.2))
            rows.append(Row("GET /api/v1/me p99 latency (ms), 32 conns", h["me_p99"], h["hello_p99"], None,
                            "< 50 ms", h["me_p99"] < 50))
            # For reading the line above: the share of the ceiling the framework alone leaves us.
            rows.append(Row("(reference) FastAPI hello-world req/s vs ASGI hello-world", h["fastapi_rps"],
                            h["hello_rps"], h["fastapi_rps"] / h["hello_rps"], "-", None))
            # Carebase's own floor: a route that does nothing (no token, no database), through the
            # same middleware and routing /me goes through.
            rows.append(Row("(reference) Carebase GET /health req/s vs ASGI hello-world", h["health_rps"],
                            h["hello_rps"], h["health_rps"] / h["hello_rps"], "-", None))
        # Before clinical: its bookings park thousands of future reminder jobs in the job queue,
        # which every job fetch then walks past (see docs/benchmarks.md, Notifications).
        if opts.only in (None, "notifications"):
            rows += notifications.run(settings, urls, opts.seconds, tmp)
        if opts.only in (None, "chat"):
            rows += chat.run(settings, urls, opts.seconds, tmp)
        if opts.only in (None, "phi"):
            rows += phi.run(settings, urls, opts.seconds, tmp)
        if opts.only in (None, "consult"):
            rows += consult.run(settings, urls, opts.seconds, tmp)
        if opts.only in (None, "pharmacy"):
            rows += pharmacy.run(settings, urls, opts.seconds, tmp)
        if opts.only in (None, "payments"):
            rows += payments.run(settings, urls, opts.seconds, tmp)
        if opts.only in (None, "clinical"):
            rows += clinical.run(settings, urls, opts.seconds, tmp)
        if opts.only in (None, "fhir"):  # after clinical: it reuses its 100,000 patients
            rows += fhir.run(settings, urls, opts.seconds, tmp)
        log("")
        print_rows(rows)
        log("\nload average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    finally:
        if keep is not None:
            keep.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if all(r.ok is not False for r in rows) else 1)


if __name__ == "__main__":
    main()
