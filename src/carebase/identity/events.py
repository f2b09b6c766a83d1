"""Account events and the projector that keeps ``accounts`` in step with them."""

from __future__ import annotations

import uuid

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.identity.models import accounts
from carebase.platform.eventstore import StoredEvent, projector

STREAM = "account"
REGISTERED = "identity.account_registered"
PROFILE_CHANGED = "identity.account_profile_changed"
PASSWORD_CHANGED = "identity.password_changed"
ERASED = "identity.account_erased"


@projector(REGISTERED)
async def _registered(session: AsyncSession, ev: StoredEvent) -> None:
    phi = ev.phi or {}
    await session.execute(insert(accounts).values(
        id=ev.stream_id, email=phi.get("email"), phone=phi.get("phone"), display_name=phi.get("display_name"),
        is_superadmin=bool(ev.data.get("is_superadmin")), created_at=ev.recorded_at, version=ev.version,
    ))


@projector(PROFILE_CHANGED)
async def _profile_changed(session: AsyncSession, ev: StoredEvent) -> None:
    values: dict = {"version": ev.version}
    if ev.phi:
        values.update({k: ev.phi[k] for k in ("email", "phone", "display_name") if k in ev.phi})
    await session.execute(accounts.update().where(accounts.c.id == ev.stream_id).values(**values))


@projector(PASSWORD_CHANGED)
async def _password_changed(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(accounts.update().where(accounts.c.id == ev.stream_id).values(version=ev.version))


@projector(ERASED)
async def _erased(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(accounts.update().where(accounts.c.id == ev.stream_id).values(
        email=None, phone=None, display_name=None, erased_at=ev.recorded_at, version=ev.version))


def account_stream(account_id: uuid.UUID) -> dict:
    return {"stream_type": STREAM, "stream_id": account_id, "tenant_id": None}
