"""Fixed-window rate limits kept in PostgreSQL (Redis is optional, never required).

One statement per hit: an upsert that counts the caller's requests in the current window. The
count is committed even when the request is refused (``keep_writes``), or retrying would be free.
"""

from __future__ import annotations

import random
import time

from sqlalchemy import Column, DateTime, Integer, String, Table, text
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform import context
from carebase.platform.db import metadata
from carebase.platform.errors import TooManyRequests

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("bucket", String(200), primary_key=True),
    Column("hits", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)


async def hit(session: AsyncSession, name: str, limit: int, window_seconds: int = 60) -> None:
    """Count one request of this client (by address) against ``name``; 429 past ``limit``."""
    now = int(time.time())
    window = now - now % window_seconds
    bucket = f"{name}:{context.get().ip or 'unknown'}:{window}"
    hits = await session.scalar(text(
        "INSERT INTO rate_limits (bucket, hits, expires_at) VALUES (:b, 1, to_timestamp(:exp)) "
        "ON CONFLICT (bucket) DO UPDATE SET hits = rate_limits.hits + 1 RETURNING hits"),
        {"b": bucket, "exp": window + window_seconds})
    if random.random() < 0.01:  # housekeeping now and then, instead of a scheduled job
        await session.execute(text("DELETE FROM rate_limits WHERE expires_at < now()"))
    if hits > limit:
        retry = window + window_seconds - now
        raise TooManyRequests(f"Too many attempts from your address; wait {retry} s and try again.",
                              code="rate-limited", headers={"Retry-After": str(retry)}, keep_writes=True)
