"""Realtime fan-out: PostgreSQL LISTEN/NOTIFY between processes, Server-Sent Events to clients.

``publish(session, channel, data)`` issues ``pg_notify`` in the caller's transaction, so a message
goes out exactly when the change it describes commits, to every Carebase process (any replica,
any machine). Each process keeps ONE listening connection (``Hub``) and hands messages to the
in-process subscribers of each channel. Messages carry ids and types, never PHI: clients fetch
details through the (audited) API.

Channels: ``account:<account id>`` (a person's own feed) and ``tenant:<tenant id>:<topic>``
(topics registered by domains with the permissions that may read them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from prometheus_client import Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform.authz import Principal
from carebase.platform.errors import Forbidden, ServiceUnavailable, ValidationFailed
from carebase.platform.logging import get_logger

log = get_logger("carebase.realtime")

PG_CHANNEL = "carebase_realtime"
MAX_PAYLOAD = 7900  # NOTIFY payloads must stay under 8000 bytes
SUBSCRIBERS = Gauge("carebase_realtime_subscribers", "Open realtime subscriptions in this process")

# topic -> permissions, any of which may read tenant:<id>:<topic>
_topics: dict[str, tuple[str, ...]] = {}


def topic(name: str, *permissions: str) -> None:
    """Declare a tenant topic and who may listen to it (domains call this at import)."""
    _topics[name] = permissions


def authorize(principal: Principal, channel: str) -> str:
    """Refuse a channel the principal may not read (403), or one that is not a channel (422)."""
    parts = channel.split(":")
    try:
        if parts[0] == "account" and len(parts) == 2:
            if uuid.UUID(parts[1]) != principal.account_id:
                raise Forbidden("You may only listen to your own account feed.", code="channel-forbidden")
            return channel
        if parts[0] == "tenant" and len(parts) == 3:
            if uuid.UUID(parts[1]) != principal.tenant_id:
                raise Forbidden("You may only listen to your own organization's feeds.", code="channel-forbidden")
            needed = _topics.get(parts[2])
            if needed is None:
                raise ValidationFailed(f"Unknown topic '{parts[2]}'.", code="unknown-channel")
            if not any(principal.can(p) for p in needed):
                raise Forbidden(f"Your role may not listen to '{parts[2]}'.", code="channel-forbidden")
            return channel
    except ValueError:
        pass
    raise ValidationFailed(f"'{channel[:80]}' is not a channel: use account:<id> or tenant:<id>:<topic>.",
                           code="unknown-channel")


async def publish(session: AsyncSession, channel: str, data: dict[str, Any]) -> None:
    payload = json.dumps({"channel": channel, "data": data}, default=str, separators=(",", ":"))
    if len(payload.encode()) > MAX_PAYLOAD:
        raise ValueError("realtime messages carry ids, not documents")
    await session.execute(text("SELECT pg_notify(:ch, :payload)"), {"ch": PG_CHANNEL, "payload": payload})


class Hub:
    """One LISTEN connection per process, fanning messages out to in-process subscribers."""

    def __init__(self, conninfo: str, queue_size: int = 256):
        self.conninfo = conninfo
        self.queue_size = queue_size
        self._subs: dict[str, set[asyncio.Queue]] = defaultdict(set)
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen())
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=10)
        except TimeoutError:
            raise ServiceUnavailable("Live updates are unavailable right now; poll instead.",
                                     code="realtime-unavailable") from None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {PG_CHANNEL}")
                    self._ready.set()
                    backoff = 0.5
                    async for note in conn.notifies():
                        self._dispatch(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: keep trying, clients keep their streams
                self._ready.clear()
                log.warning("realtime_listener_lost", error_type=type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)

    def _dispatch(self, payload: str) -> None:
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        for q in list(self._subs.get(msg.get("channel"), ())):
            try:
                q.put_nowait(msg)
            except asyncio.QueueFull:
                pass  # a client that stopped reading loses messages, not the server's memory

    @contextlib.asynccontextmanager
    async def subscribe(self, channels: list[str]) -> AsyncIterator[asyncio.Queue]:
        await self.start()
        q: asyncio.Queue = asyncio.Queue(self.queue_size)
        for ch in channels:
            self._subs[ch].add(q)
        SUBSCRIBERS.inc()
        try:
            yield q
        finally:
            for ch in channels:
                subs = self._subs.get(ch)
                if subs is not None:
                    subs.discard(q)
                    if not subs:
                        del self._subs[ch]
            SUBSCRIBERS.dec()
