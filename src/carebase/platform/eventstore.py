"""The event store: the system of record and the audit trail of every write.

- ``append`` writes events with an expected stream version (optimistic concurrency: a concurrent
  writer of the same stream gets ``Conflict`` / 409) and applies the projectors in the same
  transaction, so read models never lag the log.
- Each event's ``hash`` is an HMAC (key derived from the master secret) over the previous event's
  hash of the *same stream* and the event's content. Streams chain independently, so appends to
  different streams never wait on each other; without the key nobody can forge, alter, insert or
  re-number an event unnoticed. ``checkpoint`` signs the heads of every stream of a tenant
  (Ed25519), which catches events cut from the tail of a stream.
- PHI goes in ``NewEvent.phi`` and is sealed (AES-GCM) with the data subject's own key.
  ``shred_subject`` destroys that key: the log keeps its shape and its hash chain, the person
  becomes unreadable (crypto-shredding).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import (
    event,
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from carebase.platform import context, crypto, failpoints
from carebase.platform.db import first_row, metadata, raw_connection, send_pending_context
from carebase.platform.errors import Conflict

events = Table(
    "events",
    metadata,
    Column("position", BigInteger, Identity(always=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=True),
    Column("stream_type", String(64), nullable=False),
    Column("stream_id", UUID(as_uuid=True), nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(128), nullable=False),
    Column("data", JSONB, nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("hash", LargeBinary, nullable=False),
    UniqueConstraint("stream_id", "version"),
    Index("ix_events_tenant_id_position", "tenant_id", "position"),
)

subject_keys = Table(
    "subject_keys",
    metadata,
    Column("subject_id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=True),
    Column("wrapped_key", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("shredded_at", DateTime(timezone=True), nullable=True),
)

event_checkpoints = Table(
    "event_checkpoints",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=True),
    Column("position", BigInteger, nullable=False),
    Column("heads", JSONB, nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

GENESIS = b"\x00" * 32

_HEAD_SQL = "SELECT version, hash FROM events WHERE stream_id = %s ORDER BY version DESC LIMIT 1"
_INSERT_SQL = ("INSERT INTO events (tenant_id, stream_type, stream_id, version, type, data, metadata, recorded_at, "
               "hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING position")


@dataclass
class NewEvent:
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    # Personal data, sealed with the key of ``subject_id`` before it is stored.
    phi: dict[str, Any] | None = None
    subject_id: uuid.UUID | None = None


@dataclass
class StoredEvent:
    position: int
    tenant_id: uuid.UUID | None
    stream_type: str
    stream_id: uuid.UUID
    version: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime
    # Opened PHI; None if the event had none or its subject was crypto-shredded.
    phi: dict[str, Any] | None = None
    shredded: bool = False


Projector = Callable[[AsyncSession, StoredEvent], Awaitable[None]]
_projectors: dict[str, list[Projector]] = defaultdict(list)
_projection_tables: list[Table] = []


def projector(*event_types: str) -> Callable[[Projector], Projector]:
    """Register a function that applies events of these types to a read model."""

    def register(fn: Projector) -> Projector:
        for t in event_types:
            _projectors[t].append(fn)
        return fn

    return register


def projection_table(table: Table) -> Table:
    """Mark a table as a pure projection: rebuild-projections truncates and refills it."""
    if table not in _projection_tables:
        _projection_tables.append(table)
    return table


def projection_tables() -> list[Table]:
    return list(_projection_tables)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def _hash_body(row: dict[str, Any]) -> bytes:
    return _canonical(
        {
            "tenant_id": str(row["tenant_id"]) if row["tenant_id"] else None,
            "stream_type": row["stream_type"],
            "stream_id": str(row["stream_id"]),
            "version": row["version"],
            "type": row["type"],
            "data": row["data"],
            "metadata": row["metadata"],
            "recorded_at": row["recorded_at"].astimezone(UTC).isoformat(),
        }
    )


# -- subject keys ----------------------------------------------------------------------------


async def _data_key(session: AsyncSession, subject_id: uuid.UUID, tenant_id: uuid.UUID | None,
                    create: bool) -> bytes | None:
    cache: dict[uuid.UUID, bytes | None] = session.info.setdefault("subject_keys", {})
    if subject_id in cache:
        return cache[subject_id]
    row = (await session.execute(
        select(subject_keys.c.wrapped_key, subject_keys.c.shredded_at).where(subject_keys.c.subject_id == subject_id)
    )).first()
    ring = crypto.keyring()
    if row is None:
        if not create:
            cache[subject_id] = None
            return None
        wrapped = ring.new_wrapped_data_key()
        await session.execute(insert(subject_keys).values(subject_id=subject_id, tenant_id=tenant_id, wrapped_key=wrapped))
        key = ring.unwrap(wrapped)
    elif row.wrapped_key is None:
        key = None
    else:
        key = ring.unwrap(row.wrapped_key)
    cache[subject_id] = key
    return key


async def shred_subject(session: AsyncSession, subject_id: uuid.UUID) -> None:
    """Destroy a data subject's key: every event sealed with it becomes unreadable for good."""
    await session.execute(
        subject_keys.update()
        .where(subject_keys.c.subject_id == subject_id)
        .values(wrapped_key=None, shredded_at=func.now())
    )
    session.info.setdefault("subject_keys", {})[subject_id] = None


def _aad(stream_id: uuid.UUID, subject_id: uuid.UUID) -> bytes:
    return f"{stream_id}:{subject_id}".encode()


async def _open_phi(session: AsyncSession, row: Any) -> tuple[dict[str, Any] | None, bool]:
    sealed = row.data.get("_phi") if isinstance(row.data, dict) else None
    if not sealed:
        return None, False
    subject = uuid.UUID(sealed["subject"])
    key = await _data_key(session, subject, row.tenant_id, create=False)
    if key is None:
        return None, True
    plain = crypto.open_sealed(key, sealed["sealed"], _aad(row.stream_id, subject))
    return json.loads(plain), False


async def _to_stored(session: AsyncSession, row: Any) -> StoredEvent:
    phi, shredded = await _open_phi(session, row)
    data = {k: v for k, v in row.data.items() if k != "_phi"}
    return StoredEvent(
        position=row.position, tenant_id=row.tenant_id, stream_type=row.stream_type, stream_id=row.stream_id,
        version=row.version, type=row.type, data=data, metadata=row.metadata, recorded_at=row.recorded_at,
        phi=phi, shredded=shredded,
    )


# -- append ----------------------------------------------------------------------------------


def _metadata(extra: dict[str, Any] | None) -> dict[str, Any]:
    ctx = context.get()
    meta: dict[str, Any] = {}
    if ctx.request_id:
        meta["request_id"] = ctx.request_id
    if ctx.actor_id:
        meta["actor"] = str(ctx.actor_id)
    if ctx.on_behalf_of:
        meta["on_behalf_of"] = str(ctx.on_behalf_of)
    if ctx.ip:
        meta["ip"] = ctx.ip
    if extra:
        meta.update(extra)
    return meta


# Committed stream heads (version, hash) this process has written, so the next append to a stream
# it just wrote needs no read first. Only committed heads get here (``_promote_heads``), and an
# event, once committed, never changes: if another process has appended meanwhile, the insert of
# the same version collides on (stream_id, version) and the caller gets its 409, exactly as with
# a fresh read. Bounded; the oldest entries go first.
_HEAD_CACHE: dict[uuid.UUID, tuple[int, bytes]] = {}
_HEAD_CACHE_MAX = 100_000
_PENDING_HEADS = "eventstore.pending_heads"


def _known_head(session: AsyncSession, stream_id: uuid.UUID, expected_version: int | None) -> tuple[int, bytes] | None:
    """The head to chain onto without reading it, when ``expected_version`` pins it down."""
    if expected_version is None:
        return None
    if expected_version == 0:
        return 0, GENESIS  # a new stream; an existing one collides on version 1
    head = session.info.get(_PENDING_HEADS, {}).get(stream_id) or _HEAD_CACHE.get(stream_id)
    return head if head is not None and head[0] == expected_version else None


@event.listens_for(Session, "after_commit")
def _promote_heads(sync_session: Session) -> None:
    if sync_session.get_nested_transaction() is not None:
        return  # a savepoint committed (``refusable``): the heads are durable only with the outer commit
    heads = sync_session.info.pop(_PENDING_HEADS, None)
    if heads:
        _HEAD_CACHE.update(heads)
        while len(_HEAD_CACHE) > _HEAD_CACHE_MAX:
            del _HEAD_CACHE[next(iter(_HEAD_CACHE))]


@event.listens_for(Session, "after_rollback")
def _drop_pending_heads(sync_session: Session) -> None:
    # Also after rolling back to a savepoint: which heads came after it is not tracked, so all are
    # forgotten (the next append to those streams reads its head).
    sync_session.info.pop(_PENDING_HEADS, None)


async def append(
    session: AsyncSession,
    *,
    stream_type: str,
    stream_id: uuid.UUID,
    expected_version: int | None,
    new_events: list[NewEvent],
    tenant_id: uuid.UUID | None,
    metadata: dict[str, Any] | None = None,
) -> list[StoredEvent]:
    """Append to one stream and project, in the caller's transaction.

    ``expected_version`` is the version the caller based its decision on (0 for a new stream);
    ``None`` appends after whatever is there (for commutative writes).

    Projectors run inside a psycopg pipeline together with the inserts, so the whole append is
    one round trip (two when the stream head has to be read first). They therefore only write,
    and ``StoredEvent.position`` is filled in after they have run.
    """
    # The hot path talks to psycopg directly (prepared statements, pipelined, no ORM layer):
    # appends are every write's cost. Same connection, same transaction as the session.
    head = _known_head(session, stream_id, expected_version)
    if head is None:
        row = await first_row(session, _HEAD_SQL, (stream_id,))
        head = (row[0], bytes(row[1])) if row else (0, GENESIS)
    current, prev = head
    if expected_version is not None and current != expected_version:
        raise Conflict(
            f"This record was changed by someone else (version {current}, you had {expected_version}). "
            "Reload it and try again.", code="version-conflict", current_version=current,
        )
    meta = _metadata(metadata)
    now = datetime.now(UTC)
    ring = crypto.keyring()
    stored: list[StoredEvent] = []
    logged: list[dict[str, Any]] = []  # each event's data as the log keeps it (PHI sealed)
    hashes: list[bytes] = []
    for i, ev in enumerate(new_events, start=1):
        data = dict(ev.data)
        if ev.phi is not None:
            subject = ev.subject_id or stream_id
            key = await _data_key(session, subject, tenant_id, create=True)
            if key is None:
                raise Conflict("This person's data has been erased; nothing more can be recorded for them.",
                               code="subject-erased")
            data["_phi"] = {"subject": str(subject),
                            "sealed": crypto.seal(key, _canonical(ev.phi), _aad(stream_id, subject))}
        row = {
            "tenant_id": tenant_id, "stream_type": stream_type, "stream_id": stream_id,
            "version": current + i, "type": ev.type, "data": data, "metadata": meta, "recorded_at": now,
        }
        prev = ring.chain_hash(prev, _hash_body(row))
        hashes.append(prev)
        logged.append(data)
        stored.append(StoredEvent(position=0, tenant_id=tenant_id, stream_type=stream_type, stream_id=stream_id,
                                  version=current + i, type=ev.type, data=dict(ev.data), metadata=meta,
                                  recorded_at=now, phi=ev.phi))
    pg, info = await raw_connection(session)
    cursors = []
    try:
        async with pg.pipeline():
            await send_pending_context(pg, info)
            for ev, data, digest in zip(stored, logged, hashes, strict=True):
                cur = pg.cursor()
                await cur.execute(_INSERT_SQL, (tenant_id, stream_type, stream_id, ev.version, ev.type,
                                                Jsonb(data), Jsonb(meta), now, digest))
                cursors.append(cur)
            for ev in stored:
                await apply(session, ev)
        for ev, cur in zip(stored, cursors, strict=True):
            ev.position = (await cur.fetchone())[0]
    except (psycopg.errors.UniqueViolation, IntegrityError) as exc:
        # Raw from the pipeline's sync, or wrapped by SQLAlchemy when a projector's statement
        # (an executemany) synced on its own: callers see the driver's error either way.
        raw = exc.orig if isinstance(exc, IntegrityError) else exc
        if not isinstance(raw, psycopg.errors.UniqueViolation):
            raise
        if raw.diag.constraint_name != "uq_events_stream_id_version":
            raise raw from exc  # a projection's own constraint (the HTTP edge answers 409)
        # A concurrent writer of the same stream took this version; the transaction is rolled
        # back as a whole.
        raise Conflict("Another change to this record was saved at the same moment. Reload it and try again.",
                       code="version-conflict") from exc
    session.info.setdefault(_PENDING_HEADS, {})[stream_id] = (stored[-1].version, hashes[-1])
    await failpoints.hit("eventstore.before_commit")
    return stored


async def apply(session: AsyncSession, event: StoredEvent) -> None:
    for fn in _projectors.get(event.type, ()):
        await fn(session, event)


async def load(session: AsyncSession, stream_id: uuid.UUID) -> list[StoredEvent]:
    rows = (await session.execute(
        select(events).where(events.c.stream_id == stream_id).order_by(events.c.version)
    )).all()
    return [await _to_stored(session, r) for r in rows]


async def read_all(session: AsyncSession, batch: int = 1000) -> AsyncIterator[StoredEvent]:
    after = 0
    while True:
        rows = (await session.execute(
            select(events).where(events.c.position > after).order_by(events.c.position).limit(batch)
        )).all()
        if not rows:
            return
        for r in rows:
            yield await _to_stored(session, r)
        after = rows[-1].position


# -- operator tools (run as the table owner) -------------------------------------------------


async def rebuild_projections(session: AsyncSession) -> int:
    """Truncate every projection table and replay the whole log into it. Returns events applied."""
    tables = projection_tables()
    if tables:
        names = ", ".join(f'"{t.name}"' for t in tables)
        await session.execute(text(f"TRUNCATE {names}"))
    n = 0
    async for ev in read_all(session):
        await apply(session, ev)
        n += 1
    return n


def _checkpoint_message(tenant_id: uuid.UUID | None, position: int, heads: dict[str, list]) -> bytes:
    return _canonical({"tenant_id": str(tenant_id) if tenant_id else None, "position": position, "heads": heads})


async def _heads(session: AsyncSession, tenant_id: uuid.UUID | None) -> tuple[int, dict[str, list]]:
    rows = (await session.execute(
        text(
            "SELECT DISTINCT ON (stream_id) stream_id, version, hash, position FROM events "
            "WHERE tenant_id IS NOT DISTINCT FROM :t ORDER BY stream_id, version DESC"
        ),
        {"t": tenant_id},
    )).all()
    heads = {str(r.stream_id): [r.version, r.hash.hex()] for r in rows}
    return max((r.position for r in rows), default=0), heads


async def checkpoint(session: AsyncSession, tenant_id: uuid.UUID | None) -> dict[str, Any]:
    """Sign the current head of every stream of one tenant (None: the platform's own streams)."""
    position, heads = await _heads(session, tenant_id)
    ring = crypto.keyring()
    sig = ring.sign(_checkpoint_message(tenant_id, position, heads))
    await session.execute(insert(event_checkpoints).values(
        tenant_id=tenant_id, position=position, heads=heads, key_id=ring.key_id, signature=sig))
    return {"tenant_id": tenant_id, "position": position, "streams": len(heads)}


async def checkpoint_all(session: AsyncSession) -> list[dict[str, Any]]:
    tenants = (await session.execute(text("SELECT DISTINCT tenant_id FROM events"))).scalars().all()
    return [await checkpoint(session, t) for t in tenants]


@dataclass
class ChainProblem:
    stream_id: str
    version: int | None
    problem: str

    def __str__(self) -> str:
        at = f" v{self.version}" if self.version is not None else ""
        return f"stream {self.stream_id}{at}: {self.problem}"


async def verify_chain(session: AsyncSession) -> tuple[int, list[ChainProblem]]:
    """Recompute every stream's hash chain and check it against the latest signed checkpoints."""
    ring = crypto.keyring()
    problems: list[ChainProblem] = []
    checked = 0
    actual: dict[str, dict[int, bytes]] = {}
    result = await session.stream(select(events).order_by(events.c.stream_id, events.c.version))
    stream, expected_version, prev = None, 0, GENESIS
    async for row in result:
        checked += 1
        sid = str(row.stream_id)
        if sid != stream:
            stream, expected_version, prev = sid, 1, GENESIS
        actual.setdefault(sid, {})[row.version] = row.hash
        if row.version != expected_version:
            problems.append(ChainProblem(sid, expected_version,
                                         f"versions {expected_version}..{row.version - 1} are missing (removed)"))
            expected_version = row.version
        body = _hash_body(row._asdict())
        if ring.chain_hash(prev, body) != row.hash:
            problems.append(ChainProblem(sid, row.version, "hash does not match (altered, inserted or reordered)"))
        prev = row.hash
        expected_version += 1
    cps = (await session.execute(text(
        "SELECT DISTINCT ON (tenant_id) tenant_id, position, heads, signature FROM event_checkpoints "
        "ORDER BY tenant_id, id DESC"))).all()
    for cp in cps:
        if not ring.verify(cp.signature, _checkpoint_message(cp.tenant_id, cp.position, cp.heads)):
            problems.append(ChainProblem(f"checkpoint of tenant {cp.tenant_id}", None, "signature is not valid"))
            continue
        for sid, (version, hash_hex) in cp.heads.items():
            got = actual.get(sid, {}).get(version)
            if got is None:
                problems.append(ChainProblem(sid, version, "event signed in the last checkpoint is missing (removed)"))
            elif got.hex() != hash_hex:
                problems.append(ChainProblem(sid, version, "event differs from the signed checkpoint"))
    return checked, problems
