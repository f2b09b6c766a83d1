"""Scheduling: weekly availability per provider and location (in the location's time zone, across
daylight-saving changes), exceptions, free slots, booking without double booking, and the
appointment status workflow.

Double booking is impossible by construction: each active appointment claims the 5-minute units
it covers (``slot_claims``, primary key provider + unit), so of two overlapping bookings racing,
the database lets exactly one commit; the other gets 409.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.notifications import service as notifications
from carebase.patients import service as patients
from carebase.platform import eventstore, jobs, realtime
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.db import Database
from carebase.platform.errors import Conflict, Forbidden, NotFound, ValidationFailed
from carebase.platform.eventstore import NewEvent
from carebase.platform.ids import new_id
from carebase.providers import service as providers
from carebase.scheduling import events as ev
from carebase.scheduling.models import appointments, availability, availability_exceptions
from carebase.tenants import service as tenants

# The seed's appointment types and their usual length in minutes.
APPOINTMENT_TYPES = {"office_visit": 30, "telemedicine": 20, "follow_up": 15, "consultation": 45, "emergency": 30}
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "scheduled": ("confirmed", "checked_in", "cancelled", "no_show"),
    "confirmed": ("checked_in", "cancelled", "no_show"),
    "checked_in": ("in_progress", "cancelled"),
    "in_progress": ("completed",),
    "completed": (),
    "cancelled": (),
    "no_show": (),
}
_SCHEDULE_NS = uuid.UUID("8f9d7c3e-2b51-4c1a-9e8f-5a6b7c8d9e0f")
# Reminders go out this long before a visit (the seed's 24 h and 2 h).
REMINDER_LEADS = (timedelta(hours=24), timedelta(hours=2))
# Who the reminder job acts as when it reads the clinic's own records.
_SCHEDULER = uuid.UUID(int=0)

# Live calendars and queues (ids and times only; details through the API).
realtime.topic("appointments", "manage:appointments")


@dataclass
class Window:
    weekday: int
    starts: time
    ends: time
    slot_minutes: int


@dataclass
class Appointment:
    id: uuid.UUID
    tenant_id: uuid.UUID
    patient_id: uuid.UUID
    provider_id: uuid.UUID
    location_id: uuid.UUID
    type: str
    starts_at: datetime
    ends_at: datetime
    status: str
    reason_for_visit: str | None
    cancel_reason: str | None
    created_at: datetime
    updated_at: datetime
    version: int

    @property
    def allowed_next(self) -> tuple[str, ...]:
        return TRANSITIONS[self.status]


def _appointment(r) -> Appointment:
    m = r._mapping
    return Appointment(**{k: m[k] for k in Appointment.__dataclass_fields__})


def _stream(*parts: Any) -> uuid.UUID:
    return uuid.uuid5(_SCHEDULE_NS, "/".join(str(p) for p in parts))


def _aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValidationFailed(f"{name} needs a time zone offset, e.g. 2026-12-01T09:00:00+05:30.",
                               code="naive-datetime")
    return value.astimezone(UTC)


async def _announce(session: AsyncSession, tenant_id: uuid.UUID, kind: str, a: Appointment | None = None,
                    **extra: Any) -> None:
    msg: dict[str, Any] = {"type": kind, **extra}
    if a is not None:
        msg.update(appointment_id=str(a.id), provider_id=str(a.provider_id), location_id=str(a.location_id),
                   starts_at=a.starts_at.isoformat(), status=a.status)
    await realtime.publish(session, f"tenant:{tenant_id}:appointments", msg)


# -- availability --------------------------------------------------------------------------------


def _check_windows(windows: list[dict]) -> list[Window]:
    out = [Window(w["weekday"], w["starts"], w["ends"], w["slot_minutes"]) for w in windows]
    for w in out:
        if w.starts >= w.ends:
            raise ValidationFailed(f"A window must end after it starts ({w.starts}–{w.ends}).", code="bad-window")
        if w.starts.minute % 5 or w.ends.minute % 5 or w.starts.second or w.ends.second:
            raise ValidationFailed("Windows start and end on a 5-minute mark.", code="bad-window")
    for day in range(7):
        same = sorted((w for w in out if w.weekday == day), key=lambda w: w.starts)
        for a, b in zip(same, same[1:], strict=False):
            if b.starts < a.ends:
                raise ValidationFailed(f"Two windows overlap on weekday {day} ({a.starts}–{a.ends} and "
                                       f"{b.starts}–{b.ends}).", code="overlapping-windows")
    return out


async def set_availability(session: AsyncSession, principal: Principal, provider_id: uuid.UUID, *,
                           location_id: uuid.UUID, windows: list[dict], valid_from: date | None = None,
                           valid_until: date | None = None) -> list[Window]:
    """Replace a provider's weekly template at one location (wall-clock times at the location)."""
    require(principal, "manage:schedules")
    tenant_id = require_tenant(principal)
    await providers.get_provider(session, principal, provider_id)
    await tenants.get_location(session, principal, location_id)
    if valid_from and valid_until and valid_until < valid_from:
        raise ValidationFailed("valid_until is before valid_from.", code="bad-validity")
    checked = _check_windows(windows)
    await eventstore.append(
        session, stream_type="schedule", stream_id=_stream(provider_id, location_id), tenant_id=tenant_id,
        expected_version=None,
        new_events=[NewEvent(ev.AVAILABILITY_SET, {
            "provider_id": str(provider_id), "location_id": str(location_id),
            "valid_from": valid_from.isoformat() if valid_from else None,
            "valid_until": valid_until.isoformat() if valid_until else None,
            "windows": [{"id": str(new_id()), "weekday": w.weekday, "starts": w.starts.isoformat(),
                         "ends": w.ends.isoformat(), "slot_minutes": w.slot_minutes} for w in checked]})])
    await _announce(session, tenant_id, "availability.changed", provider_id=str(provider_id))
    return checked


async def get_availability(session: AsyncSession, principal: Principal, provider_id: uuid.UUID,
                           location_id: uuid.UUID) -> list[Window]:
    require(principal, "read:providers")
    tenant_id = require_tenant(principal)
    await providers.get_provider(session, principal, provider_id)  # 404 for anyone else's
    await tenants.get_location(session, principal, location_id)
    rows = (await session.execute(select(availability).where(
        availability.c.tenant_id == tenant_id, availability.c.provider_id == provider_id,
        availability.c.location_id == location_id).order_by(availability.c.weekday, availability.c.starts))).all()
    return [Window(r.weekday, r.starts, r.ends, r.slot_minutes) for r in rows]


async def schedules(session: AsyncSession, principal: Principal,
                    provider_id: uuid.UUID | None = None) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Each (provider, location) that has weekly hours: the calendars patients can book from."""
    require(principal, "read:providers")
    tenant_id = require_tenant(principal)
    query = select(availability.c.provider_id, availability.c.location_id).where(
        availability.c.tenant_id == tenant_id).distinct()
    if provider_id is not None:
        query = query.where(availability.c.provider_id == provider_id)
    return [(r[0], r[1]) for r in (await session.execute(query.order_by(availability.c.provider_id,
                                                                        availability.c.location_id))).all()]


async def add_exception(session: AsyncSession, principal: Principal, provider_id: uuid.UUID, *,
                        starts_at: datetime, ends_at: datetime, reason: str) -> uuid.UUID:
    """Leave, a holiday, a training day: no slots are offered in it (booked visits stay)."""
    require(principal, "manage:schedules")
    tenant_id = require_tenant(principal)
    await providers.get_provider(session, principal, provider_id)
    starts_at, ends_at = _aware("starts_at", starts_at), _aware("ends_at", ends_at)
    if ends_at <= starts_at:
        raise ValidationFailed("The exception must end after it starts.", code="bad-exception")
    exception_id = new_id()
    await eventstore.append(session, stream_type="schedule", stream_id=_stream(provider_id, "exceptions"),
                            tenant_id=tenant_id, expected_version=None,
                            new_events=[NewEvent(ev.EXCEPTION_ADDED, {
                                "id": str(exception_id), "provider_id": str(provider_id),
                                "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(),
                                "reason": reason})])
    await _announce(session, tenant_id, "availability.changed", provider_id=str(provider_id))
    return exception_id


async def remove_exception(session: AsyncSession, principal: Principal, provider_id: uuid.UUID,
                           exception_id: uuid.UUID) -> None:
    require(principal, "manage:schedules")
    tenant_id = require_tenant(principal)
    found = (await session.execute(select(availability_exceptions.c.id).where(
        availability_exceptions.c.id == exception_id, availability_exceptions.c.provider_id == provider_id,
        availability_exceptions.c.tenant_id == tenant_id))).first()
    if found is None:
        raise NotFound("No such availability exception.", code="exception-not-found")
    await eventstore.append(session, stream_type="schedule", stream_id=_stream(provider_id, "exceptions"),
                            tenant_id=tenant_id, expected_version=None,
                            new_events=[NewEvent(ev.EXCEPTION_REMOVED, {"id": str(exception_id)})])


# -- slots ---------------------------------------------------------------------------------------


@dataclass
class Slot:
    starts_at: datetime
    ends_at: datetime


def _local(day: date, t: time, tz: ZoneInfo) -> datetime | None:
    """The instant of a wall-clock time at the location, or None if that time does not exist
    that day (it was skipped by a daylight-saving change)."""
    local = datetime.combine(day, t, tzinfo=tz)
    roundtrip = local.astimezone(UTC).astimezone(tz)
    if roundtrip.replace(tzinfo=None) != local.replace(tzinfo=None):
        return None
    return local.astimezone(UTC)


def _window_slots(day: date, w: Window, tz: ZoneInfo) -> list[Slot]:
    """Slots start on the window's wall-clock grid (a start skipped by the clock change is left
    out) and last ``slot_minutes`` of real time."""
    out = []
    step = timedelta(minutes=w.slot_minutes)
    end = _local(day, w.ends, tz) or datetime.combine(day, w.ends, tzinfo=tz).astimezone(UTC)
    t = datetime.combine(day, w.starts)
    while t.date() == day and t.time() < w.ends:
        s = _local(day, t.time(), tz)
        if s is not None and s + step <= end:
            out.append(Slot(s, s + step))
        t += step
    return out


async def _busy(session: AsyncSession, tenant_id: uuid.UUID, provider_id: uuid.UUID, start: datetime,
                end: datetime, ignore: uuid.UUID | None = None) -> list[tuple[datetime, datetime]]:
    """Booked visits and exceptions overlapping [start, end) (``ignore``: the visit being moved)."""
    query = select(appointments.c.starts_at, appointments.c.ends_at).where(
        appointments.c.tenant_id == tenant_id, appointments.c.provider_id == provider_id,
        appointments.c.status.in_(ev.HOLDS_TIME), appointments.c.starts_at < end, appointments.c.ends_at > start)
    if ignore is not None:
        query = query.where(appointments.c.id != ignore)
    booked = (await session.execute(query)).all()
    off = (await session.execute(select(availability_exceptions.c.starts_at, availability_exceptions.c.ends_at).where(
        availability_exceptions.c.tenant_id == tenant_id, availability_exceptions.c.provider_id == provider_id,
        availability_exceptions.c.starts_at < end, availability_exceptions.c.ends_at > start))).all()
    return [(r[0], r[1]) for r in (*booked, *off)]


async def free_slots(session: AsyncSession, principal: Principal, provider_id: uuid.UUID, *,
                     location_id: uuid.UUID, start: date, days: int, type: str | None = None) -> list[Slot]:
    """Bookable slots: the weekly template on each local day, minus exceptions, bookings and the past.

    With a visit ``type``, only starts where a visit of that length fits (inside the window, clear
    of bookings), and each slot lasts that long: a 30-minute office visit does not start in the
    last 15-minute slot of the day."""
    require(principal, "read:providers")
    tenant_id = require_tenant(principal)
    await providers.get_provider(session, principal, provider_id)
    location = await tenants.get_location(session, principal, location_id)
    tz = ZoneInfo(location.timezone)
    windows = await get_availability(session, principal, provider_id, location_id)
    rows = (await session.execute(select(availability.c.valid_from, availability.c.valid_until).where(
        availability.c.provider_id == provider_id, availability.c.location_id == location_id).limit(1))).first()
    valid_from, valid_until = (rows[0], rows[1]) if rows else (None, None)
    first = datetime.combine(start, time(0), tzinfo=tz).astimezone(UTC)
    last = datetime.combine(start + timedelta(days=days), time(0), tzinfo=tz).astimezone(UTC)
    busy = await _busy(session, tenant_id, provider_id, first, last)
    now = datetime.now(UTC)
    if type is not None and type not in APPOINTMENT_TYPES:
        raise ValidationFailed(f"Unknown visit type {type!r}; one of: {', '.join(APPOINTMENT_TYPES)}.",
                               code="bad-type")
    length = timedelta(minutes=APPOINTMENT_TYPES[type]) if type else None
    out = []
    for i in range(days):
        day = start + timedelta(days=i)
        if (valid_from and day < valid_from) or (valid_until and day > valid_until):
            continue
        for w in windows:
            if w.weekday != day.weekday():
                continue
            w_end = _local(day, w.ends, tz) or datetime.combine(day, w.ends, tzinfo=tz).astimezone(UTC)
            for s in _window_slots(day, w, tz):
                if length is not None:
                    s = Slot(s.starts_at, s.starts_at + length)
                    if s.ends_at > w_end:
                        continue
                if s.starts_at > now and not any(b0 < s.ends_at and b1 > s.starts_at for b0, b1 in busy):
                    out.append(s)
    return sorted(out, key=lambda s: s.starts_at)


async def _check_bookable(session: AsyncSession, principal: Principal, provider_id: uuid.UUID,
                          location_id: uuid.UUID, kind: str, starts_at: datetime, ends_at: datetime,
                          ignore: uuid.UUID | None = None) -> None:
    tenant_id = require_tenant(principal)
    if starts_at <= datetime.now(UTC):
        raise ValidationFailed("That time has passed; pick a future slot.", code="slot-in-past")
    if starts_at.second or starts_at.microsecond or starts_at.minute % 5:
        raise ValidationFailed("Appointments start on a 5-minute mark.", code="slot-not-aligned")
    location = await tenants.get_location(session, principal, location_id)
    if kind != "emergency":
        # Inside one of the provider's windows that local day, on its slot grid.
        tz = ZoneInfo(location.timezone)
        day = starts_at.astimezone(tz).date()
        windows = [w for w in await get_availability(session, principal, provider_id, location_id)
                   if w.weekday == day.weekday()]
        fits = False
        for w in windows:
            grid = [s.starts_at for s in _window_slots(day, w, tz)]
            w_end = _local(day, w.ends, tz)
            if starts_at in grid and w_end is not None and ends_at <= w_end:
                fits = True
        if not fits:
            raise Conflict("The provider does not see patients at that time here; pick one of the offered slots.",
                           code="outside-availability")
    if await _busy(session, tenant_id, provider_id, starts_at, ends_at, ignore):
        raise Conflict("That time is already taken (booked, or the provider is away); pick another slot.",
                       code="slot-taken")


async def _load(session: AsyncSession, tenant_id: uuid.UUID, appointment_id: uuid.UUID) -> Appointment:
    r = (await session.execute(select(appointments).where(appointments.c.id == appointment_id,
                                                          appointments.c.tenant_id == tenant_id))).first()
    if r is None:
        raise NotFound("No such appointment in your organization.", code="appointment-not-found")
    return _appointment(r)


async def _for_patient(session: AsyncSession, principal: Principal, patient_id: uuid.UUID) -> None:
    """Staff book for any patient of the tenant; a patient only for themselves."""
    if principal.can("manage:appointments"):
        await patients.get_patient(session, principal, patient_id, "operations")
        return
    if not principal.can("book:own_appointments"):
        raise Forbidden("You may not book appointments.", code="forbidden")
    await patients.get_patient(session, principal, patient_id, "patient-request")  # 404 unless their own


def _slot_taken(exc: psycopg.errors.UniqueViolation) -> Conflict:
    if exc.diag.constraint_name == "pk_slot_claims":
        return Conflict("That time was just booked by someone else; pick another slot.", code="slot-taken")
    raise exc


async def book(session: AsyncSession, principal: Principal, *, patient_id: uuid.UUID, provider_id: uuid.UUID,
               location_id: uuid.UUID, type: str, starts_at: datetime, duration_minutes: int | None = None,
               reason_for_visit: str | None = None) -> Appointment:
    tenant_id = require_tenant(principal)
    await _for_patient(session, principal, patient_id)
    if type == "emergency" and not principal.can("manage:appointments"):
        # An emergency slot bypasses the provider's hours: the front desk decides that, not a web form.
        raise Forbidden("Emergency visits are booked by the clinic; call them, or pick an offered slot.",
                        code="forbidden")
    await providers.get_provider(session, principal, provider_id)
    starts_at = _aware("starts_at", starts_at)
    minutes = duration_minutes or APPOINTMENT_TYPES[type]
    if minutes % 5:
        raise ValidationFailed("Durations are whole multiples of 5 minutes.", code="bad-duration")
    ends_at = starts_at + timedelta(minutes=minutes)
    await _check_bookable(session, principal, provider_id, location_id, type, starts_at, ends_at)
    appointment_id = new_id()
    try:
        await eventstore.append(session, stream_type="appointment", stream_id=appointment_id, tenant_id=tenant_id,
                                expected_version=0, new_events=[NewEvent(ev.BOOKED, {
                                    "patient_id": str(patient_id), "provider_id": str(provider_id),
                                    "location_id": str(location_id), "type": type,
                                    "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(),
                                    "reason_for_visit": reason_for_visit})])
    except psycopg.errors.UniqueViolation as exc:
        raise _slot_taken(exc) from exc
    a = await _load(session, tenant_id, appointment_id)
    await _schedule_reminders(session, a)
    await _tell_patient(session, a, "appointment.booked")
    await _announce(session, tenant_id, "appointment.booked", a)
    return a


def _may_see(principal: Principal, a: Appointment, own_patient: uuid.UUID | None) -> bool:
    return principal.can("manage:appointments") or (own_patient is not None and a.patient_id == own_patient)


async def _own_patient_id(session: AsyncSession, principal: Principal) -> uuid.UUID | None:
    if principal.can("manage:appointments") or not principal.can("read:own_record"):
        return None
    try:
        return (await patients.own_patient(session, principal)).id
    except NotFound:
        return None


async def get_appointment(session: AsyncSession, principal: Principal, appointment_id: uuid.UUID) -> Appointment:
    a = await _load(session, require_tenant(principal), appointment_id)
    if not _may_see(principal, a, await _own_patient_id(session, principal)):
        raise NotFound("No such appointment in your organization.", code="appointment-not-found")
    return a


async def list_appointments(session: AsyncSession, principal: Principal, *, provider_id: uuid.UUID | None = None,
                            patient_id: uuid.UUID | None = None, start: datetime | None = None,
                            end: datetime | None = None, status: str | None = None,
                            limit: int = 200) -> list[Appointment]:
    tenant_id = require_tenant(principal)
    query = select(appointments).where(appointments.c.tenant_id == tenant_id)
    if not principal.can("manage:appointments"):
        own = await _own_patient_id(session, principal)
        if own is None:
            raise Forbidden("Only clinic staff and patients see appointments.", code="forbidden")
        patient_id = own
    if provider_id:
        query = query.where(appointments.c.provider_id == provider_id)
    if patient_id:
        query = query.where(appointments.c.patient_id == patient_id)
    if start:
        query = query.where(appointments.c.ends_at > _aware("from", start))
    if end:
        query = query.where(appointments.c.starts_at < _aware("to", end))
    if status:
        query = query.where(appointments.c.status == status)
    rows = (await session.execute(query.order_by(appointments.c.starts_at, appointments.c.id).limit(limit))).all()
    return [_appointment(r) for r in rows]


async def change_status(session: AsyncSession, principal: Principal, appointment_id: uuid.UUID, *, status: str,
                        reason: str | None = None, expected_version: int | None = None) -> Appointment:
    a = await get_appointment(session, principal, appointment_id)
    if not principal.can("manage:appointments") and status != "cancelled":
        raise Forbidden("Patients can only cancel their appointments.", code="forbidden")
    if status not in a.allowed_next:
        allowed = ", ".join(a.allowed_next) or "none (it is final)"
        raise Conflict(f"An appointment that is {a.status} cannot become {status}; allowed next: {allowed}.",
                       code="invalid-transition", current=a.status, allowed=list(a.allowed_next))
    if status == "cancelled" and not (reason and reason.strip()):
        raise ValidationFailed("Say why the appointment is cancelled (reason).", code="reason-required")
    await eventstore.append(session, stream_type="appointment", stream_id=a.id, tenant_id=a.tenant_id,
                            expected_version=expected_version if expected_version is not None else a.version,
                            new_events=[NewEvent(ev.STATUS_CHANGED, {"status": status, "reason": reason})])
    a = await _load(session, a.tenant_id, a.id)
    await _announce(session, a.tenant_id, "appointment.status_changed", a)
    if status == "cancelled":
        await _tell_patient(session, a, "appointment.cancelled", reason=reason.strip())
    return a


async def reschedule(session: AsyncSession, principal: Principal, appointment_id: uuid.UUID, *,
                     starts_at: datetime, duration_minutes: int | None = None) -> Appointment:
    a = await get_appointment(session, principal, appointment_id)
    if a.status not in ("scheduled", "confirmed"):
        raise Conflict(f"An appointment that is {a.status} cannot be moved.", code="invalid-transition",
                       current=a.status, allowed=list(a.allowed_next))
    starts_at = _aware("starts_at", starts_at)
    minutes = duration_minutes or int((a.ends_at - a.starts_at).total_seconds() // 60)
    ends_at = starts_at + timedelta(minutes=minutes)
    await _check_bookable(session, principal, a.provider_id, a.location_id, a.type, starts_at, ends_at, ignore=a.id)
    try:
        await eventstore.append(session, stream_type="appointment", stream_id=a.id, tenant_id=a.tenant_id,
                                expected_version=a.version, new_events=[NewEvent(ev.RESCHEDULED, {
                                    "provider_id": str(a.provider_id), "starts_at": starts_at.isoformat(),
                                    "ends_at": ends_at.isoformat()})])
    except psycopg.errors.UniqueViolation as exc:
        raise _slot_taken(exc) from exc
    a = await _load(session, a.tenant_id, a.id)
    await _schedule_reminders(session, a)
    await _announce(session, a.tenant_id, "appointment.rescheduled", a)
    return a


# -- reminders -----------------------------------------------------------------------------------


async def _schedule_reminders(session: AsyncSession, a: Appointment) -> None:
    """Queue the 24 h and 2 h reminders (in the booking's transaction). A reminder that finds the
    visit moved or cancelled when it runs does nothing, so reschedules simply queue new ones."""
    now = datetime.now(UTC)
    for lead in REMINDER_LEADS:
        at = a.starts_at - lead
        if at > now:
            await jobs.defer(session, "scheduling.remind", run_at=at,
                             appointment_id=str(a.id), tenant_id=str(a.tenant_id),
                             starts_at=a.starts_at.isoformat(), lead_minutes=int(lead.total_seconds() // 60))


async def send_reminder(session: AsyncSession, *, appointment_id: uuid.UUID, tenant_id: uuid.UUID,
                        starts_at: datetime, lead_minutes: int) -> bool:
    """Leave the patient an in-app reminder, unless the visit was moved, cancelled or has no login
    to remind. Returns whether a notice was left (at most once per visit, time and lead)."""
    row = (await session.execute(select(appointments).where(appointments.c.id == appointment_id,
                                                            appointments.c.tenant_id == tenant_id))).first()
    if row is None or row.status not in ("scheduled", "confirmed") or row.starts_at != starts_at:
        return False
    described = await _describe(session, _appointment(row))
    if described is None:
        return False
    account_id, visit = described
    return await notifications.notify(
        session, tenant_id=tenant_id, account_id=account_id, type="appointment.reminder",
        data={**visit, "hours_ahead": lead_minutes // 60}, link=f"/api/v1/appointments/{appointment_id}",
        event_key=f"{appointment_id}:{row.starts_at.isoformat()}:{lead_minutes}")


async def _describe(session: AsyncSession, a: Appointment) -> tuple[uuid.UUID, dict] | None:
    """The patient's login and the visit as the notification templates show it (local time and
    place), or None if the patient has no login to tell."""
    account_id = await patients.account_of(session, a.tenant_id, a.patient_id)
    if account_id is None:
        return None
    scheduler = Principal.of(_SCHEDULER, a.tenant_id, ["admin"])
    location = await tenants.get_location(session, scheduler, a.location_id)
    local = a.starts_at.astimezone(ZoneInfo(location.timezone))
    return account_id, {"visit_type": a.type.replace("_", " "), "when": f"{local:%A %d %B at %H:%M}",
                        "timezone": location.timezone, "place": location.name}


async def _tell_patient(session: AsyncSession, a: Appointment, type: str, **data) -> None:
    """``appointment.booked`` or ``appointment.cancelled``, once per visit."""
    described = await _describe(session, a)
    if described is not None:
        await notifications.notify(session, tenant_id=a.tenant_id, account_id=described[0], type=type,
                                   data={**described[1], **data}, event_key=str(a.id),
                                   link=f"/api/v1/appointments/{a.id}")


@jobs.job("scheduling.remind")
async def _remind_job(db: Database, appointment_id: str, tenant_id: str, starts_at: str, lead_minutes: int) -> None:
    tenant = uuid.UUID(tenant_id)
    async with db.transaction(tenant, None) as session:
        await send_reminder(session, appointment_id=uuid.UUID(appointment_id), tenant_id=tenant,
                            starts_at=datetime.fromisoformat(starts_at), lead_minutes=lead_minutes)


# -- the visit queue -----------------------------------------------------------------------------


async def call_next(session: AsyncSession, principal: Principal, location_id: uuid.UUID) -> Appointment | None:
    """Reception calls the next checked-in patient at a location (earliest booked first): their
    visit moves to in_progress and the "Now serving" boards update. None if nobody is waiting."""
    require(principal, "manage:appointments")
    tenant_id = require_tenant(principal)
    await tenants.get_location(session, principal, location_id)
    row = (await session.execute(select(appointments.c.id).where(
        appointments.c.tenant_id == tenant_id, appointments.c.location_id == location_id,
        appointments.c.status == "checked_in").order_by(appointments.c.starts_at, appointments.c.id)
        .limit(1).with_for_update(skip_locked=True))).first()
    if row is None:
        return None
    a = await change_status(session, principal, row.id, status="in_progress")
    await _announce(session, tenant_id, "queue.called", a)
    return a


def ticket(a: Appointment) -> str:
    """What a waiting-room board shows instead of a name: short, and the same on the booking slip."""
    return a.id.hex[-4:].upper()


async def queue(session: AsyncSession, principal: Principal, location_id: uuid.UUID) -> dict[str, list[Appointment]]:
    """The queue at a location now: who is being seen (latest called first) and who is waiting
    (checked in, by booked time). Visits booked within 12 hours either side of now count, so a
    queue does not empty itself at midnight."""
    require(principal, "manage:appointments")
    tenant_id = require_tenant(principal)
    await tenants.get_location(session, principal, location_id)
    now = datetime.now(UTC)
    rows = (await session.execute(select(appointments).where(
        appointments.c.tenant_id == tenant_id, appointments.c.location_id == location_id,
        appointments.c.status.in_(("checked_in", "in_progress")), appointments.c.starts_at >= now - timedelta(hours=12),
        appointments.c.starts_at < now + timedelta(hours=12)).order_by(appointments.c.starts_at))).all()
    found = [_appointment(r) for r in rows]
    serving = sorted((a for a in found if a.status == "in_progress"), key=lambda a: a.updated_at, reverse=True)
    return {"serving": serving, "waiting": [a for a in found if a.status == "checked_in"]}
