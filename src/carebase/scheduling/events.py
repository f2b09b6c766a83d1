"""Scheduling events and their projectors (write-only: every value comes from the event)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform.eventstore import StoredEvent, projector
from carebase.scheduling.models import appointments, availability, availability_exceptions, slot_claims

AVAILABILITY_SET = "scheduling.availability_set"
EXCEPTION_ADDED = "scheduling.exception_added"
EXCEPTION_REMOVED = "scheduling.exception_removed"
BOOKED = "scheduling.appointment_booked"
STATUS_CHANGED = "scheduling.appointment_status_changed"
RESCHEDULED = "scheduling.appointment_rescheduled"

UNIT = timedelta(minutes=5)
# Statuses that hold their time; a cancellation frees it for someone else (a no-show keeps it:
# the time has passed, and the record of who held it stays).
HOLDS_TIME = ("scheduled", "confirmed", "checked_in", "in_progress", "completed", "no_show")


def units(starts_at: datetime, ends_at: datetime) -> list[datetime]:
    out, t = [], starts_at
    while t < ends_at:
        out.append(t)
        t += UNIT
    return out


def _claims(session_tenant: uuid.UUID, provider_id: uuid.UUID, appointment_id: uuid.UUID, starts_at: datetime,
            ends_at: datetime) -> list[dict]:
    return [{"provider_id": provider_id, "unit_start": u, "tenant_id": session_tenant,
             "appointment_id": appointment_id} for u in units(starts_at, ends_at)]


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


@projector(AVAILABILITY_SET)
async def _availability_set(session: AsyncSession, ev: StoredEvent) -> None:
    d = ev.data
    provider_id, location_id = uuid.UUID(d["provider_id"]), uuid.UUID(d["location_id"])
    await session.execute(delete(availability).where(availability.c.provider_id == provider_id,
                                                     availability.c.location_id == location_id))
    rows = [{"id": uuid.UUID(w["id"]), "tenant_id": ev.tenant_id, "provider_id": provider_id,
             "location_id": location_id, "weekday": w["weekday"], "starts": time.fromisoformat(w["starts"]),
             "ends": time.fromisoformat(w["ends"]), "slot_minutes": w["slot_minutes"],
             "valid_from": _day(d.get("valid_from")), "valid_until": _day(d.get("valid_until"))}
            for w in d["windows"]]
    if rows:
        await session.execute(insert(availability), rows)


@projector(EXCEPTION_ADDED)
async def _exception_added(session: AsyncSession, ev: StoredEvent) -> None:
    d = ev.data
    await session.execute(insert(availability_exceptions).values(
        id=uuid.UUID(d["id"]), tenant_id=ev.tenant_id, provider_id=uuid.UUID(d["provider_id"]),
        starts_at=datetime.fromisoformat(d["starts_at"]), ends_at=datetime.fromisoformat(d["ends_at"]),
        reason=d["reason"]))


@projector(EXCEPTION_REMOVED)
async def _exception_removed(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(delete(availability_exceptions).where(
        availability_exceptions.c.id == uuid.UUID(ev.data["id"])))


@projector(BOOKED)
async def _booked(session: AsyncSession, ev: StoredEvent) -> None:
    d = ev.data
    starts_at, ends_at = datetime.fromisoformat(d["starts_at"]), datetime.fromisoformat(d["ends_at"])
    provider_id = uuid.UUID(d["provider_id"])
    await session.execute(insert(appointments).values(
        id=ev.stream_id, tenant_id=ev.tenant_id, patient_id=uuid.UUID(d["patient_id"]), provider_id=provider_id,
        location_id=uuid.UUID(d["location_id"]), type=d["type"], starts_at=starts_at, ends_at=ends_at,
        status="scheduled", reason_for_visit=d.get("reason_for_visit"), created_at=ev.recorded_at, updated_at=ev.recorded_at,
        version=ev.version))
    await session.execute(insert(slot_claims), _claims(ev.tenant_id, provider_id, ev.stream_id, starts_at, ends_at))


@projector(STATUS_CHANGED)
async def _status_changed(session: AsyncSession, ev: StoredEvent) -> None:
    status = ev.data["status"]
    values = {"status": status, "updated_at": ev.recorded_at, "version": ev.version}
    if status == "cancelled":
        values["cancel_reason"] = ev.data.get("reason")
    await session.execute(appointments.update().where(appointments.c.id == ev.stream_id).values(**values))
    if status not in HOLDS_TIME:
        await session.execute(delete(slot_claims).where(slot_claims.c.appointment_id == ev.stream_id))


@projector(RESCHEDULED)
async def _rescheduled(session: AsyncSession, ev: StoredEvent) -> None:
    d = ev.data
    starts_at, ends_at = datetime.fromisoformat(d["starts_at"]), datetime.fromisoformat(d["ends_at"])
    await session.execute(appointments.update().where(appointments.c.id == ev.stream_id).values(
        starts_at=starts_at, ends_at=ends_at, status="scheduled", updated_at=ev.recorded_at, version=ev.version))
    await session.execute(delete(slot_claims).where(slot_claims.c.appointment_id == ev.stream_id))
    await session.execute(insert(slot_claims), _claims(ev.tenant_id, uuid.UUID(d["provider_id"]), ev.stream_id,
                                                       starts_at, ends_at))
