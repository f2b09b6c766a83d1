"""The README's first command, for real: a fresh clone with no .venv and no node_modules runs
`./dev serve`, which installs everything, starts the embedded PostgreSQL, migrates, seeds the demo
tenants, prints the demo logins and serves on CAREBASE_PORT."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_dev_serve_from_a_fresh_clone(tmp_path):
    clone = tmp_path / "carebase"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    assert not (clone / ".venv").exists() and not (clone / "node_modules").exists()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAREBASE_", "VIRTUAL_ENV"))}
    env.update(CAREBASE_HOME=str(tmp_path / "home"), CAREBASE_PORT=str(port), CAREBASE_DEMO_PASSWORD="fresh-clone-pw",
               PATH=":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p))
    out = tmp_path / "serve.log"
    with open(out, "w") as fh:
        proc = subprocess.Popen(["./dev", "serve"], cwd=clone, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.time() + 600
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, out.read_text()
            assert time.time() < deadline, out.read_text()
            time.sleep(0.5)
        printed = out.read_text()
        for role in ("admin", "doctor", "nurse", "receptionist", "pharmacist", "lab", "patient"):
            assert f"{role}@demo.carebase.local" in printed
            assert f"{role}@demo2.carebase.local" in printed
        assert f"http://127.0.0.1:{port}" in printed
        assert "fresh-clone-pw" in printed  # the demo password comes from CAREBASE_DEMO_PASSWORD
        r = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/token",
                       data={"username": "admin@demo2.carebase.local", "password": "fresh-clone-pw"})
        assert r.status_code == 200, r.text
        home = httpx.get(f"http://127.0.0.1:{port}/")
        assert home.status_code == 200 and "/static/vendor/pico.min.css" in home.text
        assert httpx.get(f"http://127.0.0.1:{port}/static/vendor/pico.min.css").status_code == 200
        assert (clone / ".venv").is_dir() and (clone / "node_modules").is_dir()
        assert (tmp_path / "home" / "pgdata").is_dir()  # the embedded server lives under CAREBASE_HOME
        # A job worker runs alongside: the demo visit's "booked" notice reaches the local outbox.
        admin = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/token",
                           data={"username": "admin@demo.carebase.local", "password": "fresh-clone-pw"}).json()
        while True:
            log = httpx.get(f"http://127.0.0.1:{port}/api/v1/notifications/deliveries",
                            headers={"Authorization": f"Bearer {admin['access_token']}"}).json()
            if any(d["kind"] == "appointment.booked" and d["status"] == "delivered" for d in log):
                break
            assert time.time() < deadline, log
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        _stop_embedded_server(tmp_path / "home" / "pgdata")


def _stop_embedded_server(pgdata: Path) -> None:
    """The embedded PostgreSQL outlives `./dev serve` on purpose (the next one attaches to it), so
    a test that is done with it stops it: otherwise every run of the suite leaves one behind."""
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().split()[0])
    try:
        os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
    except ProcessLookupError:
        return
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
