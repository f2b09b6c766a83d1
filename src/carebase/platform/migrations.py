"""Running Alembic from the CLI and tests, plus the helpers every migration uses for tenant
isolation and for the app role's grants.

Migrations run as the owner. The app role gets only what it needs, table by table: the event
log is INSERT + SELECT (append-only by privilege, not by convention).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from alembic import command, op
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import URL

from carebase.settings import get_settings

# Tenant of the current transaction; empty or unset means "no tenant".
CURRENT_TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"
CURRENT_ACCOUNT = "NULLIF(current_setting('app.account_id', true), '')::uuid"


def migrations_dir() -> Path:
    env = os.environ.get("CAREBASE_MIGRATIONS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("path_separator", "os")
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _run(owner_url: URL, action, revision: str) -> None:
    engine = create_engine(owner_url)
    try:
        with engine.begin() as conn:  # all of a run in one transaction: DDL is transactional here
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            action(cfg, revision)
    finally:
        engine.dispose()


def upgrade(owner_url: URL, revision: str = "head") -> None:
    _run(owner_url, command.upgrade, revision)


def downgrade(owner_url: URL, revision: str) -> None:
    _run(owner_url, command.downgrade, revision)


# Reference data shipped with the code (the knowledge base …): each loader runs after every
# migration run, in its transaction, and reloads its rows when the shipped files changed.
_after_upgrade: list[Callable[[Connection], None]] = []


def after_upgrade(fn: Callable[[Connection], None]) -> Callable[[Connection], None]:
    """Register ``fn(connection)`` to run after migrations (migrations/env.py calls them). It must
    check that its tables exist: a downgrade run calls it too."""
    _after_upgrade.append(fn)
    return fn


def run_after_upgrade(conn: Connection) -> None:
    for fn in _after_upgrade:
        fn(conn)


# -- helpers for migration scripts -------------------------------------------------------------


def app_role() -> str:
    role = get_settings().app_db_role
    if not role.replace("_", "").isalnum():
        raise ValueError(f"unsafe role name {role!r}")
    return role


def create_app_role() -> None:
    role = app_role()
    op.execute(f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
            CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
          END IF;
        END $$;
    """)
    op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")


def grant(table: str, privileges: str = "SELECT, INSERT, UPDATE, DELETE") -> None:
    role = app_role()
    op.execute(f"GRANT {privileges} ON {table} TO {role}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")


def tenant_rls(table: str, *, global_rows: bool = False, own_account_column: str | None = None) -> None:
    """Rows are visible only inside their tenant's transactions.

    ``global_rows``: rows with tenant_id NULL (platform-wide, e.g. account streams) are visible to
    every session. ``own_account_column``: a signed-in account also sees its own rows in every
    tenant (a person's memberships, needed to pick a tenant at sign-in).
    """
    cond = f"tenant_id = {CURRENT_TENANT}"
    if global_rows:
        cond = f"(tenant_id IS NULL OR {cond})"
    using = cond
    if own_account_column:
        using = f"({cond} OR {own_account_column} = {CURRENT_ACCOUNT})"
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    # Writes are checked against the tenant alone: seeing your own rows elsewhere never lets you
    # create or move rows into another tenant.
    op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({using}) WITH CHECK ({cond})")


def account_rls(table: str, column: str = "account_id") -> None:
    """Rows belong to a person, not a tenant: visible and writable only as that account."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    cond = f"{column} = {CURRENT_ACCOUNT}"
    op.execute(f"CREATE POLICY account_isolation ON {table} USING ({cond}) WITH CHECK ({cond})")
