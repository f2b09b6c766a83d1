"""Booking in FHIR: Appointment (read, search, and create, which books through the same rules as
the portal), Schedule (a provider's bookable calendar) and Slot (the free times, computed)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from carebase.fhir.base import (
    SID,
    Ctx,
    Page,
    Query,
    Resource,
    as_uuid,
    date_matches,
    date_range,
    instant,
    invalid,
    meta,
    ref,
    ref_id,
    resource,
    strip_empty,
    validate,
)
from carebase.fhir.search import page_in_memory
from carebase.platform.errors import Malformed, NotFound
from carebase.scheduling import service as scheduling

_STATUS = {"scheduled": "booked", "confirmed": "booked", "checked_in": "checked-in", "in_progress": "arrived",
           "completed": "fulfilled", "no_show": "noshow", "cancelled": "cancelled"}
APPOINTMENT_TYPE = SID + "appointment-type"
MAX_SLOT_DAYS = 31


def appointment(a: scheduling.Appointment) -> dict[str, Any]:
    return strip_empty({
        "resourceType": "Appointment", "id": str(a.id), "meta": meta(a.version, a.updated_at),
        "status": _STATUS.get(a.status, "booked"),
        "cancelationReason": {"text": a.cancel_reason} if a.cancel_reason else None,
        "appointmentType": {"coding": [{"system": APPOINTMENT_TYPE, "code": a.type}],
                            "text": a.type.replace("_", " ")},
        "description": a.reason_for_visit,
        "start": instant(a.starts_at), "end": instant(a.ends_at),
        "minutesDuration": int((a.ends_at - a.starts_at).total_seconds() // 60),
        "created": instant(a.created_at),
        "participant": [{"actor": ref("Patient", a.patient_id), "required": "required", "status": "accepted"},
                        {"actor": ref("Practitioner", a.provider_id), "required": "required", "status": "accepted"},
                        {"actor": ref("Location", a.location_id), "required": "required", "status": "accepted"}],
    })


def _actor(body: dict[str, Any], kind: str) -> uuid.UUID:
    for p in body.get("participant") or []:
        rid = ref_id((p.get("actor") or {}), kind)
        if rid:
            try:
                return uuid.UUID(rid)
            except ValueError:
                break
    raise invalid(f"Appointment.participant needs a {kind} (actor: {kind}/<id>).", "Appointment.participant")


@resource
class AppointmentResource(Resource):
    type = "Appointment"
    search_params = {"_id": "token", "patient": "reference", "practitioner": "reference", "location": "reference",
                     "date": "date", "status": "token"}
    sort_params = ("date", "_lastUpdated")
    includes = {"patient": ("Patient", "participant"), "practitioner": ("Practitioner", "participant"),
                "location": ("Location", "participant")}

    async def read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        ctx.allow(self.type, "r")
        return appointment(await scheduling.get_appointment(ctx.session, ctx.principal, as_uuid(rid, self.type)))

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ctx.allow(self.type, "s")

        dates = [date_range(v[0], "date") for v in q.each("date")]
        start = max((b[1] for b in dates if b[0] in ("ge", "gt", "eq")), default=None)
        end = min((b[2] for b in dates if b[0] in ("le", "lt", "eq")), default=None)
        found = await scheduling.list_appointments(ctx.session, ctx.principal, patient_id=q.reference("Patient", "patient"),
                                                   provider_id=q.reference("Practitioner", "practitioner"),
                                                   start=start, end=end, limit=10_000)
        location = q.reference("Location", "location")
        out = [appointment(a) for a in found if location is None or a.location_id == location]
        for b in dates:
            out = [r for r in out if date_matches(b, datetime.fromisoformat(r["start"].replace("Z", "+00:00")))]
        for values in q.each("status"):
            out = [r for r in out if r["status"] in values]
        for values in q.each("_id"):
            out = [r for r in out if r["id"] in values]
        return page_in_memory(out, q, {"date": lambda r: r["start"], "_lastUpdated": lambda r: r["meta"]["lastUpdated"]})

    async def create(self, ctx: Ctx, body: dict[str, Any]) -> dict[str, Any]:
        ctx.allow(self.type, "c")
        validate(body)
        if not body.get("start"):
            raise invalid("Appointment.start is required to book.", "Appointment.start")
        starts_at = datetime.fromisoformat(body["start"].replace("Z", "+00:00")).astimezone(UTC)
        kind = next((c.get("code") for c in (body.get("appointmentType") or {}).get("coding") or []
                     if c.get("system") == APPOINTMENT_TYPE), "office_visit")
        if kind not in scheduling.APPOINTMENT_TYPES:
            raise invalid(f"Appointment.appointmentType: one of {', '.join(scheduling.APPOINTMENT_TYPES)} "
                          f"({APPOINTMENT_TYPE}).", "Appointment.appointmentType")
        minutes = body.get("minutesDuration")
        if body.get("end") and not minutes:
            ends_at = datetime.fromisoformat(body["end"].replace("Z", "+00:00"))
            minutes = int((ends_at - starts_at).total_seconds() // 60)
        booked = await scheduling.book(ctx.session, ctx.principal, patient_id=_actor(body, "Patient"),
                                       provider_id=_actor(body, "Practitioner"), location_id=_actor(body, "Location"),
                                       type=kind, starts_at=starts_at, duration_minutes=minutes or None,
                                       reason_for_visit=body.get("description"))
        return appointment(booked)


def _schedule_id(provider_id: uuid.UUID) -> str:
    return str(provider_id)


@resource
class ScheduleResource(Resource):
    """One per provider: their bookable calendar across the locations where they keep hours."""
    type = "Schedule"
    search_params = {"_id": "token", "actor": "reference"}
    versioned = False

    async def _build(self, ctx: Ctx, provider_id: uuid.UUID | None) -> list[dict[str, Any]]:
        pairs = await scheduling.schedules(ctx.session, ctx.principal, provider_id)
        by_provider: dict[uuid.UUID, list[uuid.UUID]] = {}
        for p, loc in pairs:
            by_provider.setdefault(p, []).append(loc)
        now = datetime.now(UTC)
        return [{"resourceType": "Schedule", "id": _schedule_id(p), "active": True,
                 "actor": [ref("Practitioner", p), *[ref("Location", loc) for loc in locs]],
                 "planningHorizon": {"start": instant(now), "end": instant(now + timedelta(days=90))}}
                for p, locs in by_provider.items()]

    async def read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        ctx.allow(self.type, "r")
        found = await self._build(ctx, as_uuid(rid, self.type))
        if not found:
            raise NotFound(f"No Schedule {rid}: that provider keeps no bookable hours.", code="resource-not-found")
        return found[0]

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ctx.allow(self.type, "s")
        actors = [ref_id(v, "Practitioner") for vs in q.each("actor") for v in vs]
        ids = [v for vs in q.each("_id") for v in vs]
        wanted = (actors or ids)
        found = await self._build(ctx, as_uuid(wanted[0], self.type) if len(wanted) == 1 and wanted[0] else None)
        if wanted:
            found = [s for s in found if s["id"] in wanted]
        return page_in_memory(found, q, {})


@resource
class SlotResource(Resource):
    """Free times, computed from the provider's hours minus bookings and exceptions. Slots are not
    stored, so they are found by search only (schedule and a start range), never read by id."""
    type = "Slot"
    search_params = {"schedule": "reference", "start": "date", "status": "token", "location": "reference"}
    versioned = False

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ctx.allow(self.type, "s")
        schedules = [ref_id(v, "Schedule") for vs in q.each("schedule") for v in vs]
        if len(schedules) != 1 or schedules[0] is None:
            raise Malformed("Search Slot by one schedule (schedule=Schedule/<id>) and a start range.",
                            code="schedule-required")
        for values in q.each("status"):
            if "free" not in values:
                return Page([], 0)  # only free slots are computed; booked time is an Appointment
        provider_id = as_uuid(schedules[0], "Schedule")
        bounds = [date_range(v[0], "start") for v in q.each("start")]
        now = datetime.now(UTC)
        first = max([now, *(b[1] for b in bounds if b[0] in ("ge", "gt", "eq"))])
        last = min([first + timedelta(days=7), *(b[2] for b in bounds if b[0] in ("le", "lt", "eq"))])
        days = min(MAX_SLOT_DAYS, (last.date() - first.date()).days + 1)
        locations = [ref_id(v, "Location") for vs in q.each("location") for v in vs]
        pairs = [(p, loc) for p, loc in await scheduling.schedules(ctx.session, ctx.principal, provider_id)
                 if not locations or str(loc) in locations]
        out = []
        for _, loc in pairs:
            for s in await scheduling.free_slots(ctx.session, ctx.principal, provider_id, location_id=loc,
                                                 start=first.date(), days=days):
                if all(date_matches(b, s.starts_at) for b in bounds):
                    out.append({"resourceType": "Slot",
                                "id": str(uuid.uuid5(provider_id, f"{loc}/{s.starts_at.isoformat()}")),
                                "schedule": ref("Schedule", _schedule_id(provider_id)), "status": "free",
                                "start": instant(s.starts_at), "end": instant(s.ends_at),
                                "extension": [{"url": SID + "slot-location", "valueReference": ref("Location", loc)}]})
        out.sort(key=lambda r: r["start"])
        return page_in_memory(out, q, {})
