"""Migrations apply on an empty database, reverse cleanly and apply again."""

from __future__ import annotations

import secrets

import psycopg

from carebase.platform.db import libpq_url
from carebase.platform.migrations import downgrade, head_revision, upgrade


def test_upgrade_downgrade_upgrade(backend):
    name = f"carebase_mig_{secrets.token_hex(4)}"
    with psycopg.connect(backend.owner_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = backend.urls.owner.set(database=name)
    try:
        upgrade(url)
        dsn = libpq_url(url)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head_revision()
            assert conn.execute("SELECT count(*) FROM pg_policies WHERE policyname = 'tenant_isolation'").fetchone()[0] >= 5
        downgrade(url, "base")
        with psycopg.connect(dsn) as conn:
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
            assert [t[0] for t in tables] == ["alembic_version"]
        upgrade(url)
    finally:
        with psycopg.connect(backend.owner_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
