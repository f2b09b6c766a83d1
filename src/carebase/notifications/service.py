"""In-app notifications: what the portal's bell shows. Not event-sourced: a notice is a message
about something the log already holds (like an outbound e-mail), not a fact of its own."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.notifications.models import notifications
from carebase.platform import realtime
from carebase.platform.authz import Principal, require_tenant
from carebase.platform.errors import NotFound
from carebase.platform.ids import new_id


@dataclass
class Notification:
    id: uuid.UUID
    kind: str
    title: str
    body: str
    link: str | None
    created_at: datetime
    read_at: datetime | None


async def notify(session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID, kind: str, title: str,
                 body: str, link: str | None = None, dedupe_key: str | None = None) -> bool:
    """Leave a notice for an account; False if one with this ``dedupe_key`` was already left."""
    notice_id = new_id()
    done = await session.execute(insert(notifications).values(
        id=notice_id, tenant_id=tenant_id, account_id=account_id, kind=kind, title=title, body=body, link=link,
        dedupe_key=dedupe_key).on_conflict_do_nothing().returning(notifications.c.id))
    if done.first() is None:
        return False
    await realtime.publish(session, f"account:{account_id}", {"type": "notification", "id": str(notice_id),
                                                              "kind": kind})
    return True


async def mine(session: AsyncSession, principal: Principal, *, unread_only: bool = False,
               limit: int = 50) -> list[Notification]:
    tenant_id = require_tenant(principal)
    query = select(notifications).where(notifications.c.tenant_id == tenant_id,
                                        notifications.c.account_id == principal.account_id)
    if unread_only:
        query = query.where(notifications.c.read_at.is_(None))
    rows = (await session.execute(query.order_by(notifications.c.created_at.desc()).limit(limit))).all()
    return [Notification(r.id, r.kind, r.title, r.body, r.link, r.created_at, r.read_at) for r in rows]


async def mark_read(session: AsyncSession, principal: Principal, notification_id: uuid.UUID) -> None:
    tenant_id = require_tenant(principal)
    done = await session.execute(notifications.update().where(
        notifications.c.id == notification_id, notifications.c.tenant_id == tenant_id,
        notifications.c.account_id == principal.account_id).values(read_at=datetime.now(UTC))
        .returning(notifications.c.id))
    if done.first() is None:
        raise NotFound("No such notification.", code="notification-not-found")
