"""Tenant, location and membership events and their projectors."""

from __future__ import annotations

import uuid

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform.eventstore import StoredEvent, projector
from carebase.tenants.models import locations, memberships, tenants

TENANT_CREATED = "tenants.tenant_created"
LOCATION_ADDED = "tenants.location_added"
MEMBER_ADDED = "tenants.member_added"
MEMBER_REMOVED = "tenants.member_removed"


@projector(TENANT_CREATED)
async def _tenant_created(session: AsyncSession, ev: StoredEvent) -> None:
    d = ev.data
    await session.execute(insert(tenants).values(
        id=ev.stream_id, slug=d["slug"], name=d["name"], kind=d["kind"],
        parent_id=uuid.UUID(d["parent_id"]) if d.get("parent_id") else None, timezone=d["timezone"],
        created_at=ev.recorded_at, version=ev.version))


@projector(LOCATION_ADDED)
async def _location_added(session: AsyncSession, ev: StoredEvent) -> None:
    d = ev.data
    await session.execute(insert(locations).values(
        id=ev.stream_id, tenant_id=ev.tenant_id, name=d["name"], address=d.get("address"), timezone=d["timezone"],
        created_at=ev.recorded_at, version=ev.version))


@projector(MEMBER_ADDED)
async def _member_added(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(insert(memberships).values(
        id=ev.stream_id, tenant_id=ev.tenant_id, account_id=uuid.UUID(ev.data["account_id"]), role=ev.data["role"],
        created_at=ev.recorded_at))


@projector(MEMBER_REMOVED)
async def _member_removed(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(memberships.update().where(memberships.c.id == ev.stream_id)
                          .values(revoked_at=ev.recorded_at))
