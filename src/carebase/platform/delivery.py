"""Delivering messages to people: one delivery, a chain of channels, every attempt logged.

``deliver()`` is called in the caller's transaction and writes a ``deliveries`` row: what to say
(title, body, short text, link), to whom on which channel (``addresses``), and the **chain** to try
in order (``["push", "sms", "email"]``). The ``delivery.run`` job, queued in the same transaction,
walks the chain in a worker:

* each try is a ``delivery_attempts`` row: channel, provider, provider message id, outcome, error,
  latency; providers' status webhooks later add delivered / read / failed to it;
* a **transient** failure (429, 5xx, the provider unreachable) is retried on the same channel with
  exponential backoff (``delivery_retry_base_seconds`` × 2^n, ``delivery_retries_per_channel``
  times), then the chain moves on; a **permanent** one (bad number, no device, rejected) moves on at
  once; a **timeout** moves on at once too, recorded as ``unknown`` (the provider may have taken it);
  a channel without an address for this person is skipped;
* **never twice on one channel**: a local channel writes its message in the same transaction
  that records the attempt (exactly once). A remote call is recorded as ``sending`` and committed
  before the call; if the worker dies during the call, the next run finds that ``sending`` try,
  cannot know whether the provider took it, marks it ``unknown`` and moves to the next channel
  rather than risk a second copy on the same one;
* when the chain runs out the delivery is **dead**: kept with every attempt for admins.

Nothing leaves inside a request: the provider calls happen in the job. Local channels (the
default) may run ``inline`` for sign-in codes and links, which then land in the local outbox in the
request's own transaction (no worker needed on a laptop); any remote channel still goes through
the job. Once a delivery is finished its body, short text and addresses are scrubbed (they may
hold a sign-in code); the log keeps the outcome.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from prometheus_client import Counter, Histogram
from psycopg import AsyncConnection
from psycopg.rows import namedtuple_row
from psycopg.types.json import Jsonb
from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Index, Integer, String, Table, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform import channels, jobs
from carebase.platform.channels import Message, PermanentFailure, TransientFailure
from carebase.platform.db import Database, current_tenant, metadata, raw_connection, send_pending_context
from carebase.platform.ids import new_id
from carebase.platform.logging import get_logger
from carebase.settings import Settings, get_settings

log = get_logger("carebase.delivery")

ATTEMPTS = Counter("carebase_delivery_attempts_total", "Delivery attempts", ["channel", "provider", "outcome"])
LATENCY = Histogram("carebase_delivery_seconds", "Provider call latency", ["channel", "provider"])

# The local outbox: what the local channels "sent" (demo inbox, tests' outbox).
outbound_messages = Table(
    "outbound_messages",
    metadata,
    # Generated here, so the request path needs INSERT only: it can never read anyone's codes back.
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=True),
    Column("channel", String(16), nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("subject", String(300), nullable=True),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),  # local | queued | sent
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True), nullable=True),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=True),  # None: platform messages (sign-in codes)
    Column("account_id", UUID(as_uuid=True), nullable=True),
    Column("kind", String(64), nullable=False),  # the notification type, e.g. appointment.reminder
    # One delivery per (recipient, type, event): a sender that runs twice queues nothing new.
    Column("dedupe_key", String(300), nullable=True, unique=True),
    Column("chain", JSONB, nullable=False),
    Column("addresses", JSONB, nullable=False),
    Column("content", JSONB, nullable=False),  # title, body, short, link
    Column("urgent", Boolean, nullable=False),
    Column("step", Integer, nullable=False),  # index into chain of the channel being tried
    # queued | waiting (quiet hours, backoff) | delivered | dead | suppressed (preferences, rate limit)
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=True),  # why it waits or was suppressed, for the log
    Column("not_before", DateTime(timezone=True), nullable=True),
    Column("delivered_channel", String(16), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Index("ix_deliveries_tenant_id_status_created_at", "tenant_id", "status", "created_at"),
    Index("ix_deliveries_account_id_created_at", "account_id", "created_at"),  # the hourly rate limit
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("delivery_id", UUID(as_uuid=True), ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=True),
    Column("channel", String(16), nullable=False),
    Column("provider", String(32), nullable=False),
    # sending | sent | transient | failed | skipped | unknown
    Column("outcome", String(16), nullable=False),
    Column("provider_message_id", String(200), nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("error", Text, nullable=True),
    Column("latency_ms", Integer, nullable=True),
    # What the provider reported later through its webhook: sent | delivered | read | failed.
    Column("provider_status", String(16), nullable=True),
    Column("provider_status_detail", Text, nullable=True),
    Column("provider_status_at", DateTime(timezone=True), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Index("ix_delivery_attempts_provider_message", "provider", "provider_message_id"),
)

FINAL = ("delivered", "dead", "suppressed")

class Recipients(Protocol):
    """Where accounts can be reached, kept by the notifications domain (platform code cannot
    import it). A delivery queued with no addresses asks when the worker first picks it up, so
    addresses are current and never sit in the queue; devices a provider reports gone (an
    unsubscribed browser, an uninstalled app) are forgotten."""

    async def addresses(self, session: AsyncSession, account_id: uuid.UUID) -> dict[str, Any]: ...

    async def forget_devices(self, session: AsyncSession, account_id: uuid.UUID, gone: list[str]) -> None: ...


_recipients: Recipients | None = None


def set_recipients(recipients: Recipients) -> None:
    global _recipients
    _recipients = recipients


@dataclass(frozen=True)
class Content:
    title: str
    body: str
    short: str
    link: str | None = None


async def deliver(session: AsyncSession, *, kind: str, chain: list[str], addresses: dict[str, Any],
                  content: Content, tenant_id: uuid.UUID | None = None, account_id: uuid.UUID | None = None,
                  urgent: bool = False, not_before: datetime | None = None, dedupe_key: str | None = None,
                  inline: bool = False) -> uuid.UUID | None:
    """Queue a message for delivery along ``chain``, in the caller's transaction. Returns the
    delivery id, or None when ``dedupe_key`` was already delivered or queued.

    ``inline``: when every channel of the chain is local (nothing leaves the machine), run it now,
    in this transaction, instead of waiting for a worker (sign-in codes on a laptop)."""
    unknown = [c for c in chain if c not in channels.CHANNELS]
    if unknown or not chain:
        raise ValueError(f"unknown channel(s) {unknown} in chain {chain}")
    delivery_id = new_id()
    waiting = not_before is not None and not_before > datetime.now(UTC)
    done = await session.execute(insert(deliveries).values(
        id=delivery_id, tenant_id=tenant_id, account_id=account_id, kind=kind, dedupe_key=dedupe_key, chain=chain,
        addresses=addresses, content=content.__dict__, urgent=urgent, step=0,
        status="waiting" if waiting else "queued", not_before=not_before if waiting else None)
        .on_conflict_do_nothing(index_elements=["dedupe_key"]))
    if done.rowcount == 0:
        return None
    settings = get_settings()
    if inline and not waiting and all(channels.adapter_for(settings, c).transactional for c in chain):
        remote = await _walk(session, settings, delivery_id)
        assert remote is None, "an all-local chain never needs a provider call"
        return delivery_id
    await jobs.defer(session, "delivery.run", run_at=not_before if waiting else None,
                     delivery_id=str(delivery_id), tenant_id=str(tenant_id) if tenant_id else None)
    return delivery_id


# -- the walk along the chain ------------------------------------------------------------------
#
# Every delivery passes through here, so it talks to psycopg directly on the session's own
# connection (same transaction): plain SQL, prepared after a few runs, a local step's three writes
# pipelined into one round trip. Through SQLAlchemy Core the same step cost ~3x the CPU
# (docs/benchmarks.md, Notifications). The session is still handed to the recipients' directory
# (the notifications domain), on the same connection.

_LOCK_SQL = (
    # The row, locked, and whether the current step's channel has a try left "sending" by a worker
    # that died during a provider call (a local channel never leaves one).
    "SELECT d.id, d.tenant_id, d.account_id, d.kind, d.chain, d.addresses, d.content, d.step, d.status, "
    "d.not_before, d.not_before > now() AS early, EXISTS (SELECT 1 FROM delivery_attempts a "
    "WHERE a.delivery_id = d.id AND a.channel = d.chain ->> d.step AND a.outcome = 'sending') AS crashed "
    "FROM deliveries d WHERE d.id = %s FOR UPDATE OF d SKIP LOCKED")
_ATTEMPT_SQL = (
    "INSERT INTO delivery_attempts (id, delivery_id, tenant_id, channel, provider, outcome, provider_message_id, "
    "error_code, error, finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, "
    "CASE WHEN %s THEN NULL ELSE now() END)")
_SETTLE_SQL = (
    "UPDATE delivery_attempts SET outcome = %s, provider = %s, provider_message_id = %s, error_code = %s, "
    "error = %s, latency_ms = %s, finished_at = now() WHERE id = %s")
_CRASHED_SQL = (
    "UPDATE delivery_attempts SET outcome = 'unknown', finished_at = now(), "
    "error = 'the worker stopped during the provider call; not sent again on this channel' "
    "WHERE delivery_id = %s AND channel = %s AND outcome = 'sending'")
_FINISH_SQL = (
    # Delivered or dead: keep the outcome, drop what may be secret (codes, links, addresses).
    "UPDATE deliveries SET status = %s, delivered_channel = %s, finished_at = now(), updated_at = now(), "
    "not_before = NULL, addresses = '{}', "
    "content = jsonb_build_object('title', coalesce(content ->> 'title', ''), 'link', NULL) "
    "WHERE id = %s")
_NEXT_STEP_SQL = (
    "UPDATE deliveries SET step = step + 1, status = 'queued', not_before = NULL, updated_at = now() WHERE id = %s")
_WAIT_SQL = "UPDATE deliveries SET status = 'waiting', not_before = %s, updated_at = now() WHERE id = %s"
_ADDRESSES_SQL = "UPDATE deliveries SET addresses = %s WHERE id = %s"
_TRIES_SQL = ("SELECT count(*) FROM delivery_attempts WHERE delivery_id = %s AND channel = %s "
              "AND outcome = 'transient'")


def _message(d, channel: str) -> Message:
    c = d.content
    return Message(channel=channel, to=d.addresses.get(channel), title=c.get("title", ""), body=c.get("body", ""),
                   short=c.get("short", ""), link=c.get("link"), reference=f"{d.id}:{channel}", tenant_id=d.tenant_id)


async def _attempt(pg: AsyncConnection, d, channel: str, provider: str, outcome: str, *,
                   provider_message_id: str | None = None, error_code: str | None = None,
                   error: str | None = None) -> uuid.UUID:
    attempt_id = new_id()
    await pg.execute(_ATTEMPT_SQL, (attempt_id, d.id, d.tenant_id, channel, provider, outcome, provider_message_id,
                                    error_code, error, outcome == "sending"))
    if outcome != "sending":
        ATTEMPTS.labels(channel, provider, outcome).inc()
    return attempt_id


async def _settle(pg: AsyncConnection, attempt_id: uuid.UUID, channel: str, outcome: str, elapsed: float, *,
                  provider: str, provider_message_id: str | None = None, error_code: str | None = None,
                  error: str | None = None) -> None:
    """The answer to a remote try recorded as ``sending`` before the call."""
    await pg.execute(_SETTLE_SQL, (outcome, provider, provider_message_id, error_code, error,
                                   round(elapsed * 1000), attempt_id))
    ATTEMPTS.labels(channel, provider, outcome).inc()


async def _finish(pg: AsyncConnection, d, status: str, channel: str | None = None) -> None:
    await pg.execute(_FINISH_SQL, (status, channel, d.id))
    if status == "dead":
        log.warning("delivery_dead", delivery_id=str(d.id), kind=d.kind)


async def _after_failure(pg: AsyncConnection, settings: Settings, d, channel: str,
                         exc: TransientFailure | PermanentFailure) -> bool:
    """After a failed try: wait and retry the same channel (transient, tries left: True), or move
    on to the next step (False)."""
    if isinstance(exc, TransientFailure):
        tries = (await (await pg.execute(_TRIES_SQL, (d.id, channel))).fetchone())[0]
        if tries <= settings.delivery_retries_per_channel:
            when = datetime.now(UTC) + timedelta(seconds=settings.delivery_retry_base_seconds * 2 ** (tries - 1))
            await pg.execute(_WAIT_SQL, (when, d.id))
            await _defer_run(pg, d.id, d.tenant_id, when)
            return True
    await pg.execute(_NEXT_STEP_SQL, (d.id,))
    return False


async def _defer_run(pg: AsyncConnection, delivery_id: uuid.UUID, tenant_id: uuid.UUID | None,
                     when: datetime | None) -> None:
    await jobs.defer_raw(pg, "delivery.run", run_at=when, delivery_id=str(delivery_id),
                         tenant_id=str(tenant_id) if tenant_id else None)


@dataclass(frozen=True)
class _RemoteTry:
    """A try the walk could not settle in the database: a provider call, made after the commit
    that made its ``sending`` row durable."""
    delivery_id: uuid.UUID
    channel: str
    adapter: Any
    message: Message
    attempt_id: uuid.UUID


async def _walk(session: AsyncSession, settings: Settings, delivery_id: uuid.UUID) -> _RemoteTry | None:
    """Walk the chain as far as this transaction alone can take it: the chain's end, a channel
    without an address, a try that crashed, a local channel (its message written here, exactly
    once). Returns the remote try to make next (its ``sending`` row written here), or None when
    the delivery is finished, waits for a backoff, or another worker holds it."""
    pg, info = await raw_connection(session)
    cur = pg.cursor(row_factory=namedtuple_row)
    while True:
        async with pg.pipeline():  # the tenant context (first time round) rides with the lock
            await send_pending_context(pg, info)
            await cur.execute(_LOCK_SQL, (delivery_id,))
            d = await cur.fetchone()
        if d is None or d.status in FINAL:
            return None  # finished, or another worker holds it (and will finish or requeue it)
        if d.early:
            # Early: the job for that time is queued already. Judged by the database's clock, the
            # one procrastinate schedules by (a worker's clock running behind would strand it).
            return None
        if d.step >= len(d.chain):
            await _finish(pg, d, "dead")
            return None
        if not d.addresses and d.account_id is not None and _recipients is not None:
            found = await _recipients.addresses(session, d.account_id)  # resolved once, even to nothing
            await pg.execute(_ADDRESSES_SQL, (Jsonb(found or {"none": True}), d.id))
            continue
        channel = d.chain[d.step]
        if not d.addresses.get(channel):
            await _attempt(pg, d, channel, "-", "skipped", error="no address for this channel")
            await pg.execute(_NEXT_STEP_SQL, (d.id,))
            continue
        if d.crashed:
            await pg.execute(_CRASHED_SQL, (d.id, channel))
            await pg.execute(_NEXT_STEP_SQL, (d.id,))
            continue
        adapter = channels.adapter_for(settings, channel)
        message = _message(d, channel)
        if not adapter.transactional:
            attempt_id = await _attempt(pg, d, channel, adapter.provider, "sending")
            return _RemoteTry(d.id, channel, adapter, message, attempt_id)
        try:
            async with pg.pipeline():  # the message, the attempt and the outcome: one round trip
                sent = await adapter.send(message, pg)
                await _attempt(pg, d, channel, sent.provider, "sent", provider_message_id=sent.provider_message_id)
                await _finish(pg, d, "delivered", channel)
            return None
        except (TransientFailure, PermanentFailure) as exc:
            await _attempt(pg, d, channel, exc.provider, "transient" if isinstance(exc, TransientFailure) else "failed",
                           error_code=exc.code, error=exc.reason)
            if await _after_failure(pg, settings, d, channel, exc):
                return None  # this turn ends; the retry is its own job, at the backoff time


async def run(db: Database, delivery_id: uuid.UUID) -> None:
    """One worker's turn at a delivery: try channels until one takes it, a backoff is due, or the
    chain runs out. Safe to run twice and concurrently (row lock, SKIP LOCKED)."""
    settings = get_settings()
    while True:
        async with db.transaction(owner=True) as session:
            remote = await _walk(session, settings, delivery_id)
        if remote is None:
            return
        # The provider call, outside any transaction: the "sending" row above is already durable.
        started = time.monotonic()
        outcome: Any
        try:
            outcome = await remote.adapter.send(remote.message, None)
        except (TransientFailure, PermanentFailure) as exc:
            outcome = exc
        elapsed = time.monotonic() - started
        channel = remote.channel
        LATENCY.labels(channel, remote.adapter.provider).observe(elapsed)
        async with db.transaction(owner=True) as session:
            pg, info = await raw_connection(session)
            await send_pending_context(pg, info)
            # Waits for a lock, unlike the walk: this worker owns the try it is recording.
            d = await (await pg.cursor(row_factory=namedtuple_row).execute(
                "SELECT id, tenant_id, account_id, kind, step FROM deliveries WHERE id = %s FOR UPDATE",
                (delivery_id,))).fetchone()
            gone = list(getattr(outcome, "gone", ()))  # push devices the provider says no longer exist
            if gone and d.account_id is not None and _recipients is not None:
                await _recipients.forget_devices(session, d.account_id, gone)
            if isinstance(outcome, TransientFailure) and outcome.code == "timeout":
                # No answer in time: the provider may well have taken it, and none of them takes an
                # idempotency key, so a retry here could send it twice. On to the next channel.
                await _settle(pg, remote.attempt_id, channel, "unknown", elapsed, provider=outcome.provider,
                              error_code=outcome.code, error=outcome.reason)
                await pg.execute(_NEXT_STEP_SQL, (d.id,))
            elif isinstance(outcome, (TransientFailure, PermanentFailure)):
                await _settle(pg, remote.attempt_id, channel,
                              "transient" if isinstance(outcome, TransientFailure) else "failed", elapsed,
                              provider=outcome.provider, error_code=outcome.code, error=outcome.reason)
                if await _after_failure(pg, settings, d, channel, outcome):
                    return  # this turn ends; the retry is its own job, at the backoff time
            else:
                await _settle(pg, remote.attempt_id, channel, "sent", elapsed, provider=outcome.provider,
                              provider_message_id=outcome.provider_message_id)
                await _finish(pg, d, "delivered", channel)
                return


@jobs.job("delivery.run")
async def _run_job(db: Database, delivery_id: str, tenant_id: str | None = None) -> None:
    await run(db, uuid.UUID(delivery_id))


# -- what providers tell us afterwards -----------------------------------------------------------


async def record_provider_status(session: AsyncSession, *, provider: str, provider_message_id: str, status: str,
                                 detail: str | None = None) -> bool:
    """A provider's delivery-status webhook: delivered, read or failed, on the attempt it names.
    Works without a tenant context (webhooks carry none): the update goes through a SECURITY
    DEFINER function that can change this status and nothing else. False: no such message."""
    if status not in ("sent", "delivered", "read", "failed"):
        raise ValueError(f"unknown provider status {status!r}")
    found = await session.scalar(text("SELECT delivery_provider_status(:p, :m, :s, :d)"),
                                 {"p": provider, "m": provider_message_id, "s": status, "d": detail})
    return bool(found)


# -- the transactional messages identity and patients send today -----------------------------------


async def send_email(session: AsyncSession, to: str, subject: str, body: str, *, kind: str = "security.email") -> None:
    """A sign-in code, reset link or address check: one channel, sent at once when local."""
    await deliver(session, kind=kind, chain=["email"], addresses={"email": to}, tenant_id=current_tenant(session),
                  content=Content(title=subject, body=body, short=body), urgent=True, inline=True)


async def send_sms(session: AsyncSession, to: str, body: str, *, kind: str = "security.otp") -> None:
    """A sign-in code by text: SMS, then WhatsApp (the seed's OTP chain)."""
    await deliver(session, kind=kind, chain=["sms", "whatsapp"], addresses={"sms": to, "whatsapp": to},
                  tenant_id=current_tenant(session), content=Content(title=body, body=body, short=body), urgent=True,
                  inline=True)
