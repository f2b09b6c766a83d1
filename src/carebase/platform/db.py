"""Database connections, the tenant context and the unit of work.

Two roles: the *owner* runs migrations and operator commands; the *app* role serves requests and
owns no table, so PostgreSQL row-level security applies to everything it does. The tenant and
account of the current transaction travel as ``app.tenant_id`` / ``app.account_id`` settings, set
with ``set_config(..., is_local => true)`` so they vanish at commit and never leak to the next
user of a pooled connection.

``set_context`` leaves the context pending on the connection; it is sent just before the
transaction's first statement — by the ``before_cursor_execute`` hook for SQLAlchemy statements,
or inside the event store's own psycopg pipeline (``send_pending_context``), where it then costs
no round trip of its own. A transaction that runs nothing sends nothing, and a pending context
never outlives the checkout, so it cannot reach the next user of the connection.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from psycopg import AsyncConnection, pq
from sqlalchemy import MetaData, and_, event, or_
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import await_only

from carebase.settings import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _driver_url(url: str | URL) -> URL:
    u = make_url(url) if isinstance(url, str) else url
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+psycopg")
    return u


@dataclass
class DatabaseUrls:
    owner: URL
    app: URL

    @classmethod
    def resolve(cls, settings: Settings) -> DatabaseUrls:
        if settings.database_url:
            owner = _driver_url(settings.database_url)
        else:
            from carebase.platform import embedded

            owner = _driver_url(embedded.start(settings.home))
        if settings.app_database_url:
            app = _driver_url(settings.app_database_url)
        else:
            app = owner.set(username=settings.app_db_role, password=None)
        return cls(owner=owner, app=app)


def libpq_url(url: URL) -> str:
    """The URL in the plain ``postgresql://`` form psycopg and pg_dump understand."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


_CONTEXT_SQL = "SELECT set_config('app.tenant_id', %s, true), set_config('app.account_id', %s, true)"
_PENDING = "carebase.pending_context"


def make_engine(url: URL, pool_size: int = 10) -> AsyncEngine:
    # No pre-ping: it costs a round trip on every checkout. A connection that died with its server
    # fails once; SQLAlchemy then recognises the disconnect and refreshes the whole pool.
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False,
                                 pool_recycle=1800)
    event.listen(engine.sync_engine, "before_cursor_execute", _before_cursor_execute)
    event.listen(engine.sync_engine.pool, "checkin", _forget_pending_context)
    return engine


async def set_context(
    session: AsyncSession, tenant_id: uuid.UUID | None = None, account_id: uuid.UUID | None = None
) -> None:
    """Bind the current transaction to a tenant and an account for row-level security.

    Sent with the transaction's next statement, never later: until then nothing has run that RLS
    could judge."""
    conn = await session.connection()
    conn.info[_PENDING] = (str(tenant_id) if tenant_id else "", str(account_id) if account_id else "")
    session.info["tenant_id"] = tenant_id
    session.info["account_id"] = account_id


async def raw_connection(session: AsyncSession) -> tuple[AsyncConnection, dict]:
    """The session's psycopg connection (same transaction) and its pool record's info dict."""
    conn = await session.connection()
    return (await conn.get_raw_connection()).driver_connection, conn.info


async def send_pending_context(pg: AsyncConnection, info: dict) -> None:
    """Queue the pending tenant context on a raw connection, ahead of the caller's statements
    (inside the caller's pipeline, it costs no round trip of its own)."""
    pending = info.pop(_PENDING, None)
    if pending is not None:
        await pg.execute(_CONTEXT_SQL, pending)


async def first_row(session: AsyncSession, sql: str, params: tuple) -> tuple | None:
    """The first row of one plain SQL read in the session's transaction, in a single round trip
    with the pending tenant context (prepared once per connection by psycopg). For reads on every
    request's path, where SQLAlchemy's statement building and the context's own round trip cost
    more than the query; everything else reads through the session."""
    return await (await _plain_read(session, sql, params)).fetchone()


async def all_rows(session: AsyncSession, sql: str, params: tuple) -> list[tuple]:
    """Every row of one plain SQL read, as ``first_row`` reads (for the same hot paths)."""
    return await (await _plain_read(session, sql, params)).fetchall()


async def _plain_read(session: AsyncSession, sql: str, params: tuple):
    pg, info = await raw_connection(session)
    async with pg.pipeline():
        await send_pending_context(pg, info)
        cur = pg.cursor()
        await cur.execute(sql, params)
    return cur


def _before_cursor_execute(conn, cursor, statement, parameters, context, executemany) -> None:
    pg = conn.connection.driver_connection
    if pg.pgconn.pipeline_status != pq.PipelineStatus.OFF:
        # Inside the event store's pipeline results are not read back, so a statement that
        # returns rows would silently return nothing: projectors write, they never read.
        upper = statement.lstrip().upper()
        if upper.startswith(("SELECT", "WITH")) or " RETURNING " in upper:
            raise RuntimeError("Projectors must only write (no SELECT, no RETURNING): "
                               "they run in the event store's pipeline, where results are not read.")
        return
    pending = conn.info.pop(_PENDING, None)
    if pending is not None:
        await_only(pg.execute(_CONTEXT_SQL, pending))


def _forget_pending_context(dbapi_connection, connection_record) -> None:
    if connection_record is not None:
        connection_record.info.pop(_PENDING, None)


def current_tenant(session: AsyncSession) -> uuid.UUID | None:
    return session.info.get("tenant_id")


class Database:
    """Engines and session factories for one Carebase database."""

    def __init__(self, settings: Settings, urls: DatabaseUrls | None = None):
        self.settings = settings
        self.urls = urls or DatabaseUrls.resolve(settings)
        self.app_engine = make_engine(self.urls.app, settings.db_pool_size)
        self.owner_engine = make_engine(self.urls.owner, 2)
        self.app_sessions = async_sessionmaker(self.app_engine, expire_on_commit=False, autoflush=True)
        self.owner_sessions = async_sessionmaker(self.owner_engine, expire_on_commit=False, autoflush=True)

    @asynccontextmanager
    async def transaction(
        self,
        tenant_id: uuid.UUID | None = None,
        account_id: uuid.UUID | None = None,
        *,
        owner: bool = False,
    ) -> AsyncIterator[AsyncSession]:
        """One transaction as the app role (or the owner): commit on success, rollback on error."""
        factory = self.owner_sessions if owner else self.app_sessions
        async with factory() as session:
            async with session.begin():
                await set_context(session, tenant_id, account_id)
                yield session

    async def dispose(self) -> None:
        await self.app_engine.dispose()
        await self.owner_engine.dispose()


def within(column, prefix: str, start, end):
    """``column`` against a range [start, end) the way a FHIR date search prefix reads it (eq: in
    the range; gt: after it; le: not after it; ...). The FHIR API's searches use it."""
    return {"eq": and_(column >= start, column < end), "ne": or_(column < start, column >= end),
            "gt": column >= end, "lt": column < start, "ge": column >= start, "le": column < end}[prefix]


async def batches(session: AsyncSession, query, key, size: int = 1000):
    """The rows of ``query`` in batches ordered by the unique column ``key``, each batch read after
    the last key of the one before (keyset paging: the millionth row costs what the first did)."""
    after = None
    while True:
        page = query if after is None else query.where(key > after)
        rows = (await session.execute(page.order_by(key).limit(size))).all()
        if not rows:
            return
        yield rows
        after = getattr(rows[-1], key.name)
