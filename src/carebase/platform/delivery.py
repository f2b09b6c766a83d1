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
from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Index, Integer, String, Table, Text, func, select, text
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform import channels, jobs
from carebase.platform.channels import Message, PermanentFailure, TransientFailure
from carebase.platform.db import Database, current_tenant, metadata
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
        await _walk_local(session, settings, delivery_id)
        return delivery_id
    await jobs.defer(session, "delivery.run", run_at=not_before if waiting else None,
                     delivery_id=str(delivery_id), tenant_id=str(tenant_id) if tenant_id else None)
    return delivery_id


# -- the walk along the chain ------------------------------------------------------------------


def _message(d, channel: str) -> Message:
    c = d.content
    return Message(channel=channel, to=d.addresses.get(channel), title=c.get("title", ""), body=c.get("body", ""),
                   short=c.get("short", ""), link=c.get("link"), reference=f"{d.id}:{channel}", tenant_id=d.tenant_id)


async def _attempt(session: AsyncSession, d, channel: str, provider: str, outcome: str, **values: Any) -> uuid.UUID:
    attempt_id = new_id()
    await session.execute(delivery_attempts.insert().values(
        id=attempt_id, delivery_id=d.id, tenant_id=d.tenant_id, channel=channel, provider=provider, outcome=outcome,
        finished_at=None if outcome == "sending" else func.now(), **values))
    if outcome != "sending":
        ATTEMPTS.labels(channel, provider, outcome).inc()
    return attempt_id


async def _finish(session: AsyncSession, d, status: str, channel: str | None = None) -> None:
    """Delivered or dead: keep the outcome, drop what may be secret (codes, links, addresses)."""
    await session.execute(deliveries.update().where(deliveries.c.id == d.id).values(
        status=status, delivered_channel=channel, finished_at=func.now(), updated_at=func.now(), not_before=None,
        addresses={}, content={"title": d.content.get("title", ""), "link": None}))
    if status == "dead":
        log.warning("delivery_dead", delivery_id=str(d.id), kind=d.kind)


async def _next_step(session: AsyncSession, d) -> None:
    await session.execute(deliveries.update().where(deliveries.c.id == d.id).values(
        step=d.step + 1, status="queued", not_before=None, updated_at=func.now()))


async def _tries_on(session: AsyncSession, d, channel: str) -> int:
    return await session.scalar(select(func.count()).select_from(delivery_attempts).where(
        delivery_attempts.c.delivery_id == d.id, delivery_attempts.c.channel == channel,
        delivery_attempts.c.outcome == "transient"))


async def _after_failure(session: AsyncSession, settings: Settings, d, channel: str,
                         exc: TransientFailure | PermanentFailure) -> timedelta | None:
    """Record the decision after a failed try: a backoff to wait (same channel), or the next step."""
    if isinstance(exc, TransientFailure):
        tries = await _tries_on(session, d, channel)
        if tries <= settings.delivery_retries_per_channel:
            wait = timedelta(seconds=settings.delivery_retry_base_seconds * 2 ** (tries - 1))
            await session.execute(deliveries.update().where(deliveries.c.id == d.id).values(
                status="waiting", not_before=datetime.now(UTC) + wait, updated_at=func.now()))
            return wait
    await _next_step(session, d)
    return None


async def _lock(session: AsyncSession, delivery_id: uuid.UUID):
    return (await session.execute(select(deliveries).where(deliveries.c.id == delivery_id)
                                  .with_for_update(skip_locked=True))).first()


async def _prepare(session: AsyncSession, d) -> str | None:
    """Settle what needs no provider: the chain's end, a missing address, a try that crashed.
    Returns the channel to try now, or None when this step was settled here."""
    if d.step >= len(d.chain):
        await _finish(session, d, "dead")
        return None
    if not d.addresses and d.account_id is not None and _recipients is not None:
        found = await _recipients.addresses(session, d.account_id)
        await session.execute(deliveries.update().where(deliveries.c.id == d.id).values(
            addresses=found or {"none": True}))  # resolved once, even to nothing
        return None
    channel = d.chain[d.step]
    if not d.addresses.get(channel):
        await _attempt(session, d, channel, "-", "skipped", error="no address for this channel")
        await _next_step(session, d)
        return None
    crashed = await session.execute(delivery_attempts.update().where(
        delivery_attempts.c.delivery_id == d.id, delivery_attempts.c.channel == channel,
        delivery_attempts.c.outcome == "sending").values(
        outcome="unknown", finished_at=func.now(),
        error="the worker stopped during the provider call; not sent again on this channel"))
    if crashed.rowcount:
        await _next_step(session, d)
        return None
    return channel


async def _walk_local(session: AsyncSession, settings: Settings, delivery_id: uuid.UUID) -> None:
    """Inline: the whole chain is local, so every step happens in this transaction."""
    while True:
        d = await _lock(session, delivery_id)
        if d is None or d.status in FINAL:
            return
        channel = await _prepare(session, d)
        if channel is None:
            continue
        adapter = channels.adapter_for(settings, channel)
        try:
            sent = await adapter.send(_message(d, channel), session)
        except PermanentFailure as exc:  # a local channel never fails for a while: no backoff
            await _attempt(session, d, channel, exc.provider, "failed", error_code=exc.code, error=exc.reason)
            await _next_step(session, d)
            continue
        await _attempt(session, d, channel, sent.provider, "sent", provider_message_id=sent.provider_message_id)
        await _finish(session, d, "delivered", channel)
        return


async def run(db: Database, delivery_id: uuid.UUID) -> None:
    """One worker's turn at a delivery: try channels until one takes it, a backoff is due, or the
    chain runs out. Safe to run twice and concurrently (row lock, SKIP LOCKED)."""
    settings = get_settings()
    while True:
        async with db.transaction(owner=True) as session:
            d = await _lock(session, delivery_id)
            if d is None or d.status in FINAL:
                return  # finished, or another worker holds it
            if d.not_before and d.not_before > datetime.now(UTC):
                return  # early: the job for that time is queued already
            channel = await _prepare(session, d)
            if channel is None:
                continue
            adapter = channels.adapter_for(settings, channel)
            message = _message(d, channel)
            if adapter.transactional:
                try:
                    sent = await adapter.send(message, session)
                except (TransientFailure, PermanentFailure) as exc:
                    await _attempt(session, d, channel, exc.provider,
                                   "transient" if isinstance(exc, TransientFailure) else "failed",
                                   error_code=exc.code, error=exc.reason)
                    wait = await _after_failure(session, settings, d, channel, exc)
                    if wait is not None:
                        await _retry_later(session, d, wait)
                        return
                    continue
                await _attempt(session, d, channel, sent.provider, "sent",
                               provider_message_id=sent.provider_message_id)
                await _finish(session, d, "delivered", channel)
                return
            attempt_id = await _attempt(session, d, channel, adapter.provider, "sending")
        # The provider call, outside any transaction: the "sending" row above is already durable.
        started = time.monotonic()
        outcome: Any
        try:
            outcome = await adapter.send(message, None)
        except (TransientFailure, PermanentFailure) as exc:
            outcome = exc
        elapsed = time.monotonic() - started
        LATENCY.labels(channel, adapter.provider).observe(elapsed)
        async with db.transaction(owner=True) as session:
            d = (await session.execute(select(deliveries).where(deliveries.c.id == delivery_id)
                                       .with_for_update())).first()
            gone = list(getattr(outcome, "gone", ()))  # push devices the provider says no longer exist
            if gone and d.account_id is not None and _recipients is not None:
                await _recipients.forget_devices(session, d.account_id, gone)
            if isinstance(outcome, TransientFailure) and outcome.code == "timeout":
                # No answer in time: the provider may well have taken it, and none of them takes an
                # idempotency key, so a retry here could send it twice. On to the next channel.
                await _settle(session, attempt_id, "unknown", elapsed, provider=outcome.provider,
                              error_code=outcome.code, error=outcome.reason)
                ATTEMPTS.labels(channel, outcome.provider, "unknown").inc()
                await _next_step(session, d)
                continue
            if isinstance(outcome, (TransientFailure, PermanentFailure)):
                kind = "transient" if isinstance(outcome, TransientFailure) else "failed"
                await _settle(session, attempt_id, kind, elapsed, provider=outcome.provider, error_code=outcome.code,
                              error=outcome.reason)
                ATTEMPTS.labels(channel, outcome.provider, kind).inc()
                wait = await _after_failure(session, settings, d, channel, outcome)
                if wait is not None:
                    await _retry_later(session, d, wait)
                    return
                continue
            await _settle(session, attempt_id, "sent", elapsed, provider=outcome.provider,
                          provider_message_id=outcome.provider_message_id)
            ATTEMPTS.labels(channel, outcome.provider, "sent").inc()
            await _finish(session, d, "delivered", channel)
            return


async def _settle(session: AsyncSession, attempt_id: uuid.UUID, outcome: str, elapsed: float, **values: Any) -> None:
    await session.execute(delivery_attempts.update().where(delivery_attempts.c.id == attempt_id).values(
        outcome=outcome, latency_ms=round(elapsed * 1000), finished_at=func.now(), **values))


async def _retry_later(session: AsyncSession, d, wait: timedelta) -> None:
    await jobs.defer(session, "delivery.run", run_at=datetime.now(UTC) + wait, delivery_id=str(d.id),
                     tenant_id=str(d.tenant_id) if d.tenant_id else None)


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
