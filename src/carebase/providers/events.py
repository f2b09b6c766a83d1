"""Provider events. A directory entry is professional information a clinic publishes to its
members, not a patient's health data, so nothing here is sealed."""

from __future__ import annotations

import uuid

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform.eventstore import StoredEvent, projector
from carebase.providers.models import providers

REGISTERED = "providers.registered"
UPDATED = "providers.updated"
VERIFIED = "providers.verified"
# Credentials (NPI, licence) changed after verification: the entry must be verified again.
UNVERIFIED = "providers.unverified"

# Fields an administrator may set and change; ``verified`` is deliberately not one of them.
FIELDS = ("npi", "license_number", "given_name", "family_name", "specialty", "sub_specialty", "practice_name",
          "country", "state_province", "city", "email", "phone", "languages", "education", "certifications",
          "accepts_new_patients", "telemedicine_enabled", "account_id")


def _values(data: dict) -> dict:
    out = {k: data[k] for k in FIELDS if k in data}
    if out.get("account_id"):
        out["account_id"] = uuid.UUID(out["account_id"])
    return out


@projector(REGISTERED)
async def _registered(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(insert(providers).values(
        id=ev.stream_id, tenant_id=ev.tenant_id, verified=False, verified_by=None, verified_at=None,
        created_at=ev.recorded_at, updated_at=ev.recorded_at, version=ev.version, **_values(ev.data)))


@projector(UPDATED)
async def _updated(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(providers.update().where(providers.c.id == ev.stream_id).values(
        updated_at=ev.recorded_at, version=ev.version, **_values(ev.data)))


@projector(VERIFIED)
async def _verified(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(providers.update().where(providers.c.id == ev.stream_id).values(
        verified=True, verified_by=uuid.UUID(ev.data["verified_by"]), verified_at=ev.recorded_at,
        updated_at=ev.recorded_at, version=ev.version))


@projector(UNVERIFIED)
async def _unverified(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(providers.update().where(providers.c.id == ev.stream_id).values(
        verified=False, verified_by=None, verified_at=None, updated_at=ev.recorded_at, version=ev.version))
