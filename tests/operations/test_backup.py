"""carebase backup / restore round-trip, with real pg_dump and pg_restore and real processes."""

from __future__ import annotations

import secrets

import psycopg
import pytest

from tests.conftest import Backend, carebase_cli, login

TABLES = ("tenants", "accounts", "memberships", "patients", "events", "subject_keys", "credentials", "audit_reads")


def _contents(dsn: str) -> dict[str, list]:
    with psycopg.connect(dsn) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES}


def _new_database(backend: Backend) -> tuple[Backend, callable]:
    name = f"carebase_restore_{secrets.token_hex(4)}"
    with psycopg.connect(backend.owner_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    urls = type(backend.urls)(owner=backend.urls.owner.set(database=name), app=backend.urls.app.set(database=name))
    target = Backend(backend.name, urls, backend.settings, backend.log_file)

    def drop():
        with psycopg.connect(backend.owner_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")

    return target, drop


def test_backup_then_restore_into_an_empty_database_gives_the_same_data(backend, tmp_path, client):
    login(client, "doctor@demo.carebase.local")  # make sure there is session and audit state too
    dump = tmp_path / "carebase.dump"
    r = carebase_cli(backend, "backup", str(dump))
    assert r.returncode == 0, r.stderr
    assert dump.stat().st_size > 1000
    source = _contents(backend.owner_dsn)
    target, drop = _new_database(backend)
    try:
        r = carebase_cli(target, "restore", "--yes", str(dump))
        assert r.returncode == 0, r.stderr
        restored = _contents(target.owner_dsn)
        for t in TABLES:
            assert restored[t] == source[t], t
        assert restored["events"] and restored["patients"]
        # The restored database is a working Carebase: chain intact, RLS and grants in place.
        assert carebase_cli(target, "verify-chain").returncode == 0
        with psycopg.connect(target.app_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM patients").fetchone()[0] == 0  # RLS: no tenant set
            assert conn.execute("SELECT count(*) FROM tenants").fetchone()[0] >= 2
    finally:
        drop()


@pytest.fixture
def restored(backend, tmp_path):
    """A backup of the test database, restored into a database of its own: (target, dump file)."""
    target, drop = _new_database(backend)
    try:
        dump = tmp_path / "a.dump"
        assert carebase_cli(backend, "backup", str(dump)).returncode == 0
        assert carebase_cli(target, "restore", "--yes", str(dump)).returncode == 0
        yield target, dump
    finally:
        drop()


def test_restore_replaces_later_changes(restored):
    target, dump = restored
    before = _contents(target.owner_dsn)
    with psycopg.connect(target.owner_dsn, autocommit=True) as conn:
        conn.execute("UPDATE tenants SET name = 'Changed after backup'")
    assert carebase_cli(target, "restore", "--yes", str(dump)).returncode == 0
    assert _contents(target.owner_dsn) == before


def test_a_broken_backup_changes_nothing(restored, tmp_path):
    target, good = restored
    before = _contents(target.owner_dsn)
    broken = tmp_path / "broken.dump"
    broken.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    r = carebase_cli(target, "restore", "--yes", str(broken))
    assert r.returncode == 1 and "nothing was changed" in r.stderr
    assert _contents(target.owner_dsn) == before
    assert carebase_cli(target, "restore", "--yes", str(tmp_path / "missing.dump")).returncode == 1
