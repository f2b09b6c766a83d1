"""Row-level security, checked in PostgreSQL itself with the app role's own connection.

The app role (``backend.app_dsn``) is what every request uses. These tests look at the database
from that seat, without the API in front: whatever a bug in a route or a service might ask, the
database must only ever hand out and accept rows of the tenant named in ``app.tenant_id``.

Tenant-owned tables are discovered from ``information_schema`` (every base table of the public
schema with a ``tenant_id`` column), so a table added by a later migration is covered without
touching this file.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

from tests.conftest import bearer, login

# Platform-wide rows (tenant_id IS NULL, e.g. account streams) are visible to every session by
# design in these tables; only their tenant-owned rows are isolated.
GLOBAL_ROW_TABLES = {"events", "subject_keys", "event_checkpoints", "job_failures", "outbound_messages",
                     # platform messages (sign-in codes, resets): only to transactions without a tenant
                     "deliveries", "delivery_attempts"}
# The marketplace's shop windows: every session reads them by design (patients of any clinic
# browse every pharmacy); only the owning tenant writes them (the write tests below cover them).
MARKETPLACE_TABLES = {"pharmacies", "pharmacy_medicines"}
# Append-only for the app role: history is never rewritten (granted SELECT, INSERT only).
APPEND_ONLY_TABLES = ("events", "event_checkpoints", "audit_reads")
# The seed plus the ``tenant_rows`` fixture give both demo tenants rows in at least these, so the
# visibility checks below can never pass on empty tables.
POPULATED_TABLES = {"events", "subject_keys", "locations", "memberships", "patients", "audit_reads"}


# -- helpers -----------------------------------------------------------------------------------


@contextmanager
def app_session(backend, tenant_id: uuid.UUID | None = None, account_id: uuid.UUID | None = None,
                raw_tenant: str | None = None) -> Iterator[psycopg.Connection]:
    """A connection as the app role; ``app.tenant_id`` / ``app.account_id`` set for the whole session."""
    with psycopg.connect(backend.app_dsn, autocommit=True) as conn:
        tenant = raw_tenant if raw_tenant is not None else (str(tenant_id) if tenant_id else None)
        if tenant is not None:
            conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant,))
        if account_id is not None:
            conn.execute("SELECT set_config('app.account_id', %s, false)", (str(account_id),))
        yield conn


def tenant_tables(owner: psycopg.Connection) -> list[str]:
    rows = owner.execute("""
        SELECT c.table_name FROM information_schema.columns c
        JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
        WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE'
        ORDER BY c.table_name""").fetchall()
    return [r[0] for r in rows]


def columns_of(owner: psycopg.Connection, table: str) -> set[str]:
    rows = owner.execute("SELECT column_name FROM information_schema.columns "
                         "WHERE table_schema = 'public' AND table_name = %s", (table,)).fetchall()
    return {r[0] for r in rows}


def tenant_id_of(owner: psycopg.Connection, slug: str) -> uuid.UUID:
    row = owner.execute("SELECT id FROM tenants WHERE slug = %s", (slug,)).fetchone()
    assert row is not None, f"demo tenant {slug!r} is not seeded"
    return row[0]


def account_id_of(owner: psycopg.Connection, email: str) -> uuid.UUID:
    row = owner.execute("SELECT id FROM accounts WHERE email = %s", (email,)).fetchone()
    assert row is not None, f"demo account {email!r} is not seeded"
    return row[0]


def count(conn: psycopg.Connection, table: str, where: str = "TRUE", params: tuple = ()) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE ").format(sql.Identifier(table)) + sql.SQL(where)
    return conn.execute(query, params).fetchone()[0]


def has_privilege(conn: psycopg.Connection, table: str, privilege: str) -> bool:
    return conn.execute("SELECT has_table_privilege(current_user, %s, %s)",
                        (f"public.{table}", privilege)).fetchone()[0]


def attempt(conn: psycopg.Connection, query: sql.Composable, params: tuple = ()) -> tuple[psycopg.Error | None, int]:
    """Run one statement in a transaction that is always rolled back: (error or None, rowcount)."""
    try:
        with conn.transaction(force_rollback=True):
            cur = conn.execute(query, params)
            return None, cur.rowcount
    except psycopg.Error as exc:
        return exc, 0


def is_rls_refusal(exc: psycopg.Error | None) -> bool:
    return exc is not None and exc.sqlstate == "42501" and "row-level security" in str(exc)


def is_permission_denied(exc: psycopg.Error | None) -> bool:
    return exc is not None and exc.sqlstate == "42501" and "permission denied" in str(exc)


def report(problems: list[str]) -> str:
    return "\n  " + "\n  ".join(problems)


@pytest.fixture
def tenants(owner) -> dict[str, uuid.UUID]:
    return {"demo": tenant_id_of(owner, "demo"), "demo2": tenant_id_of(owner, "demo2")}


@pytest.fixture
def tenant_rows(client, owner, tenants) -> list[str]:
    """Both demo tenants own rows in the tenant tables: the seed, plus one audited patient read each
    (the seed leaves ``audit_reads`` empty). Returns the tenant-owned tables."""
    for slug, mrn in (("demo", "DEMO-0001"), ("demo2", "DEMO2-0001")):
        patient = owner.execute("SELECT id FROM patients WHERE tenant_id = %s AND mrn = %s",
                                (tenants[slug], mrn)).fetchone()
        assert patient is not None, f"the seeded patient of {slug} is missing"
        tokens = login(client, f"doctor@{slug}.carebase.local")
        r = client.get(f"/api/v1/patients/{patient[0]}", headers=bearer(tokens))
        assert r.status_code == 200, r.text
    tables = tenant_tables(owner)
    missing = {t for t in POPULATED_TABLES
               if not all(count(owner, t, "tenant_id = %s", (tenants[s],)) for s in ("demo", "demo2"))}
    assert not missing, f"test data missing: no rows of both demo tenants in {sorted(missing)}"
    return tables


# -- the app role ------------------------------------------------------------------------------


def test_tenant_tables_are_discovered(owner):
    tables = set(tenant_tables(owner))
    # The discovery query itself works: the tables the foundation migration isolates are found.
    assert POPULATED_TABLES | GLOBAL_ROW_TABLES <= tables, tables


def test_app_role_owns_nothing_and_has_no_bypass(backend, owner):
    with app_session(backend) as app:
        me = app.execute("SELECT current_user").fetchone()[0]
        assert me == backend.settings.app_db_role == "carebase_app"
        owned = app.execute("SELECT schemaname || '.' || tablename FROM pg_tables WHERE tableowner = current_user"
                            ).fetchall()
        assert owned == [], f"the app role owns tables, so RLS does not apply to it there: {owned}"
        superuser, bypass, createrole = app.execute(
            "SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
        assert (superuser, bypass, createrole) == (False, False, False)
        # Nor can it become a role that owns the tables (SET ROLE would sidestep RLS).
        owners = {r[0] for r in owner.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall()}
        assert owners and me not in owners
        for table_owner in owners:
            assert app.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (table_owner,)).fetchone()[0] \
                is False, f"the app role is a member of the table owner {table_owner}"


def test_row_level_security_is_enabled_on_every_tenant_table(owner):
    tables = tenant_tables(owner)
    rows = dict(owner.execute("SELECT c.relname, c.relrowsecurity FROM pg_class c "
                              "JOIN pg_namespace n ON n.oid = c.relnamespace "
                              "WHERE n.nspname = 'public' AND c.relname = ANY(%s)", (tables,)).fetchall())
    without = [t for t in tables if not rows[t]]
    assert not without, f"tables with a tenant_id but no row-level security: {without}"
    policies = {r[0] for r in owner.execute(
        "SELECT DISTINCT tablename FROM pg_policies WHERE schemaname = 'public' AND tablename = ANY(%s)",
        (tables,)).fetchall()}
    assert set(tables) <= policies, f"RLS enabled without a policy on {sorted(set(tables) - policies)}"


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
def test_app_role_cannot_rewrite_append_only_tables(backend, owner, tenants, table):
    demo = tenants["demo"]
    ident = sql.Identifier(table)
    before = owner.execute(sql.SQL("SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {} t")
                           .format(ident)).fetchone()
    with app_session(backend, demo) as app:
        assert has_privilege(app, table, "SELECT") and has_privilege(app, table, "INSERT")
        statements = {
            "UPDATE": sql.SQL("UPDATE {} SET tenant_id = tenant_id WHERE tenant_id = %s").format(ident),
            "DELETE": sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(ident),
            "TRUNCATE": sql.SQL("TRUNCATE {}").format(ident),
        }
        for verb, statement in statements.items():
            exc, _ = attempt(app, statement, () if verb == "TRUNCATE" else (demo,))
            assert is_permission_denied(exc), f"{verb} {table} as the app role was not refused: {exc!r}"
    after = owner.execute(sql.SQL("SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {} t")
                          .format(ident)).fetchone()
    assert after == before


# -- reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["unset", "empty"])
def test_without_a_tenant_no_tenant_row_is_visible(backend, owner, tenant_rows, setting):
    problems = []
    with app_session(backend, raw_tenant="" if setting == "empty" else None) as app:
        for table in tenant_rows:
            if table in MARKETPLACE_TABLES:
                assert count(app, table, "true") == count(owner, table, "true") > 0, table
                continue
            if not has_privilege(app, table, "SELECT"):
                continue  # no access at all: nothing can leak
            seen = count(app, table, "tenant_id IS NOT NULL")
            if seen:
                problems.append(f"{table}: {seen} tenant-owned rows visible "
                                f"(of {count(owner, table, 'tenant_id IS NOT NULL')})")
            platform_wide = count(app, table, "tenant_id IS NULL")
            if table not in GLOBAL_ROW_TABLES and platform_wide:
                problems.append(f"{table}: {platform_wide} rows with tenant_id NULL visible (only "
                                f"{', '.join(sorted(GLOBAL_ROW_TABLES))} may share platform-wide rows)")
    assert not problems, "without app.tenant_id:" + report(problems)


@pytest.mark.parametrize("slug,other", [("demo", "demo2"), ("demo2", "demo")])
def test_a_tenant_session_sees_exactly_its_own_rows(backend, owner, tenants, tenant_rows, slug, other):
    mine, theirs = tenants[slug], tenants[other]
    problems = []
    with app_session(backend, mine) as app:
        assert app.execute("SELECT current_setting('app.tenant_id')").fetchone()[0] == str(mine)
        for table in tenant_rows:
            if not has_privilege(app, table, "SELECT") or table in MARKETPLACE_TABLES:
                continue
            foreign = count(app, table, "tenant_id IS DISTINCT FROM %s AND tenant_id IS NOT NULL", (mine,))
            if foreign:
                problems.append(f"{table}: {foreign} rows of other tenants visible "
                                f"({count(app, table, 'tenant_id = %s', (theirs,))} of {other})")
            own, expected = count(app, table, "tenant_id = %s", (mine,)), count(owner, table, "tenant_id = %s", (mine,))
            if own != expected:
                problems.append(f"{table}: sees {own} of its own {expected} rows")
    assert not problems, f"as {slug}:" + report(problems)


# -- writing -----------------------------------------------------------------------------------


CONTEXTS = ["tenant", "tenant+account"]


def _context(owner, tenants, ctx: str) -> tuple[uuid.UUID, uuid.UUID | None]:
    """The settings of a request transaction: its tenant (demo) and, like every signed-in
    request, the caller's account (demo's admin)."""
    return tenants["demo"], account_id_of(owner, "admin@demo.carebase.local") if ctx == "tenant+account" else None


@pytest.mark.parametrize("ctx", CONTEXTS)
def test_a_tenant_session_cannot_insert_rows_for_another_tenant(backend, owner, tenants, ctx):
    """WITH CHECK refuses a row for demo2 while the session is demo's. The row is minimal (just the
    tenant, plus the caller's own account wherever a table has an account_id): PostgreSQL checks
    the policy before NOT NULL and CHECK constraints, so the refusal must be the policy's. The same
    row for demo itself must get past the policy (fail later, or succeed and be rolled back), which
    shows the refusal is about the tenant and not about the row's shape."""
    demo, account = _context(owner, tenants, ctx)
    problems, checked = [], []
    with app_session(backend, demo, account) as app:
        for table in tenant_tables(owner):
            if not has_privilege(app, table, "INSERT"):
                continue  # the app cannot insert here at all
            cols = ["tenant_id"] + (["account_id"] if account and "account_id" in columns_of(owner, table) else [])
            insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.SQL(", ").join(sql.Placeholder() * len(cols)))
            extra = (account,) if len(cols) == 2 else ()
            foreign, _ = attempt(app, insert, (tenants["demo2"], *extra))
            own, _ = attempt(app, insert, (demo, *extra))
            if not is_rls_refusal(foreign):
                got = "it was inserted" if foreign is None else \
                    f"it got past the policy and failed only on {foreign.sqlstate}: {str(foreign).splitlines()[0]}"
                problems.append(f"{table}: a row for demo2 was not refused by RLS ({got})")
            elif is_rls_refusal(own):
                problems.append(f"{table}: even a row for the session's own tenant is refused by RLS")
            checked.append(table)
    assert "patients" in checked and "events" in checked
    assert not problems, f"session of demo ({ctx}):" + report(problems)


@pytest.mark.parametrize("ctx", CONTEXTS)
def test_a_tenant_session_cannot_move_its_rows_to_another_tenant(backend, owner, tenants, ctx):
    """WITH CHECK also guards UPDATE: demo's rows cannot be handed over to demo2."""
    demo, account = _context(owner, tenants, ctx)
    problems, moved_from = [], []
    with app_session(backend, demo, account) as app:
        for table in tenant_tables(owner):
            if not has_privilege(app, table, "UPDATE"):
                continue
            where, params = "tenant_id = %s", [demo]
            if account and "account_id" in columns_of(owner, table):
                where, params = where + " AND account_id = %s", params + [account]
            if not count(app, table, where, tuple(params)):
                continue  # nothing of demo's here to move
            update = sql.SQL("UPDATE {} SET tenant_id = %s WHERE ").format(sql.Identifier(table)) + sql.SQL(where)
            exc, rows = attempt(app, update, (tenants["demo2"], *params))
            if not is_rls_refusal(exc):
                problems.append(f"{table}: moving demo's rows to demo2 was not refused by RLS "
                                f"({exc!r}, {rows} rows would have moved)")
            moved_from.append(table)
    # demo owns rows in these (with the account: demo's admin holds a membership of demo)
    assert ({"locations", "memberships"} | ({"patients"} if account is None else set())) <= set(moved_from)
    assert not problems, f"session of demo ({ctx}):" + report(problems)
