"""Patient events: demographics are PHI and travel sealed with the patient's own key."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.patients.models import patients
from carebase.platform.eventstore import StoredEvent, projector

REGISTERED = "patients.registered"
UPDATED = "patients.updated"
ERASED = "patients.erased"

PHI_FIELDS = ("given_name", "family_name", "birth_date", "phone", "email")


def _phi_values(phi: dict | None) -> dict:
    if not phi:
        return {}
    out = {k: phi[k] for k in PHI_FIELDS if k in phi}
    if out.get("birth_date"):
        out["birth_date"] = date.fromisoformat(out["birth_date"])
    return out


@projector(REGISTERED)
async def _registered(session: AsyncSession, ev: StoredEvent) -> None:
    d = ev.data
    await session.execute(insert(patients).values(
        id=ev.stream_id, tenant_id=ev.tenant_id, mrn=d["mrn"], sex=d.get("sex"),
        account_id=uuid.UUID(d["account_id"]) if d.get("account_id") else None,
        created_at=ev.recorded_at, updated_at=ev.recorded_at, version=ev.version, **_phi_values(ev.phi)))


@projector(UPDATED)
async def _updated(session: AsyncSession, ev: StoredEvent) -> None:
    values = {k: ev.data[k] for k in ("sex",) if k in ev.data}
    values.update(_phi_values(ev.phi))
    await session.execute(patients.update().where(patients.c.id == ev.stream_id).values(
        updated_at=ev.recorded_at, version=ev.version, **values))


@projector(ERASED)
async def _erased(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(patients.update().where(patients.c.id == ev.stream_id).values(
        given_name=None, family_name=None, birth_date=None, phone=None, email=None, account_id=None,
        erased_at=ev.recorded_at, updated_at=ev.recorded_at, version=ev.version))
