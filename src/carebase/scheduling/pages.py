"""The live calendar (a day of visits that updates as anyone books or moves one) and the visit
queue's "Now serving" board, in the portal (htmx; Server-Sent Events with polling fallback)."""

from __future__ import annotations

import uuid
from html import escape
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse

from carebase.patients import service as patients
from carebase.platform.authz import Principal
from carebase.platform.errors import DomainError
from carebase.platform.web import DbSession, PagePrincipal, refusable
from carebase.portal.pages import refusal, render_page, templates
from carebase.providers import service as providers
from carebase.scheduling import service
from carebase.settings import get_settings
from carebase.tenants import service as tenants

router = APIRouter(include_in_schema=False)


async def _day(session, principal: Principal, day: date | None, provider_id: uuid.UUID | None) -> dict:
    tenant = await tenants.current_tenant(session, principal)
    tz = ZoneInfo(tenant.timezone)
    day = day or datetime.now(tz).date()
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    visits = await service.list_appointments(session, principal, provider_id=provider_id, start=start,
                                             end=start + timedelta(days=1))
    names = await patients.names_of(session, principal, list({a.patient_id for a in visits}), "operations")
    docs = {p.id: f"Dr {p.given_name} {p.family_name}"
            for p in (await providers.search_providers(session, principal, limit=200)).items}
    rows = [{"a": a, "local": a.starts_at.astimezone(tz), "patient": names.get(a.patient_id, "—"),
             "provider": docs.get(a.provider_id, "—"), "ticket": service.ticket(a)} for a in visits]
    return {"day": day, "rows": rows, "provider_id": provider_id, "providers": docs,
            "can_read_charts": principal.can("read:charts"),
            "locations": await tenants.list_locations(session, principal),
            "poll_seconds": get_settings().portal_poll_seconds}


@router.get("/portal/calendar", response_class=HTMLResponse)
async def calendar_page(request: Request, session: DbSession, principal: PagePrincipal,
                        day: Annotated[date | None, Query(alias="date")] = None, provider_id: uuid.UUID | None = None):
    async def context(p: Principal) -> dict:
        if not p.can("manage:appointments"):
            return {"forbidden": True, "rows": [], "day": day, "providers": {}, "locations": [], "provider_id": None,
                    "poll_seconds": 30}
        return await _day(session, p, day, provider_id)

    return await render_page(request, session, principal, "scheduling/calendar.html", context)


@router.get("/portal/fragments/calendar", response_class=HTMLResponse)
async def calendar_fragment(request: Request, session: DbSession, principal: PagePrincipal,
                            day: Annotated[date | None, Query(alias="date")] = None,
                            provider_id: uuid.UUID | None = None):
    if principal is None:
        return HTMLResponse("", status_code=401)
    return templates.TemplateResponse(request, "scheduling/_day.html", await _day(session, principal, day, provider_id))


Status = Annotated[str, Form(max_length=16)]


@router.post("/portal/appointments/{appointment_id}/status", response_class=HTMLResponse)
async def status_from_page(request: Request, appointment_id: uuid.UUID, session: DbSession, principal: PagePrincipal,
                           status: Status, reason: Annotated[str, Form(max_length=500)] = ""):
    if principal is None:
        return HTMLResponse("", status_code=401)
    done = await refusable(session, lambda: service.change_status(session, principal, appointment_id, status=status,
                                                                  reason=reason or None))
    if isinstance(done, DomainError):
        return refusal(done)
    return HTMLResponse("<small>Saved</small>")


@router.post("/portal/locations/{location_id}/call-next", response_class=HTMLResponse)
async def call_next_from_page(request: Request, location_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    if principal is None:
        return HTMLResponse("", status_code=401)
    called = await refusable(session, lambda: service.call_next(session, principal, location_id))
    if isinstance(called, DomainError):
        return refusal(called)
    text = f"Called {service.ticket(called)}" if called else "Nobody is waiting."
    return HTMLResponse(f'<small id="call-result">{text}</small>')


async def _queue(session, principal: Principal, location_id: uuid.UUID) -> dict:
    location = await tenants.get_location(session, principal, location_id)
    q = await service.queue(session, principal, location_id)
    return {"location": location, "serving": [service.ticket(a) for a in q["serving"]],
            "waiting": [service.ticket(a) for a in q["waiting"]], "poll_seconds": get_settings().portal_poll_seconds}


@router.get("/portal/queue/{location_id}", response_class=HTMLResponse)
async def queue_board(request: Request, location_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        return await _queue(session, p, location_id)

    return await render_page(request, session, principal, "scheduling/queue.html", context)


@router.get("/portal/fragments/queue/{location_id}", response_class=HTMLResponse)
async def queue_fragment(request: Request, location_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    if principal is None:
        return HTMLResponse("", status_code=401)
    return templates.TemplateResponse(request, "scheduling/_queue.html", await _queue(session, principal, location_id))


# -- booking a visit: the front desk for a patient, or a patient for themselves ------------------

async def _booking(session, principal: Principal, *, patient_id: uuid.UUID | None, provider_id: uuid.UUID | None,
                   location_id: uuid.UUID | None, day: date | None, type: str) -> dict:
    """Who the visit is for, the providers and locations to choose from, and the current choice."""
    if principal.can("manage:appointments"):
        patient = await patients.get_patient(session, principal, patient_id, "operations") if patient_id else None
    else:
        patient = await patients.own_patient(session, principal)
    telemedicine = True if type == "telemedicine" else None
    found = (await providers.search_providers(session, principal, telemedicine_enabled=telemedicine, limit=200)).items
    locations = await tenants.list_locations(session, principal)
    tenant = await tenants.current_tenant(session, principal)
    return {"patient": patient, "providers": found, "locations": locations, "type": type,
            "types": list(service.APPOINTMENT_TYPES) if principal.can("manage:appointments")
            else [t for t in service.APPOINTMENT_TYPES if t != "emergency"],
            "provider_id": provider_id or (found[0].id if found else None),
            "location_id": location_id or (locations[0].id if locations else None),
            "day": day or datetime.now(ZoneInfo(tenant.timezone)).date()}


BookingType = Annotated[str, Query(max_length=20)]


@router.get("/portal/book", response_class=HTMLResponse)
async def booking_page(request: Request, session: DbSession, principal: PagePrincipal,
                       patient_id: uuid.UUID | None = None, provider_id: uuid.UUID | None = None,
                       location_id: uuid.UUID | None = None, day: Annotated[date | None, Query(alias="date")] = None,
                       type: BookingType = "office_visit"):
    async def context(p: Principal) -> dict:
        if not (p.can("manage:appointments") or p.can("book:own_appointments")):
            return {"forbidden": True}
        return await _booking(session, p, patient_id=patient_id, provider_id=provider_id, location_id=location_id,
                              day=day, type=type)

    return await render_page(request, session, principal, "scheduling/book.html", context)


@router.get("/portal/fragments/slots", response_class=HTMLResponse)
async def slots_fragment(request: Request, session: DbSession, principal: PagePrincipal, provider_id: uuid.UUID,
                         location_id: uuid.UUID, day: Annotated[date, Query(alias="date")],
                         type: BookingType = "office_visit"):
    """The next seven days of free slots where a visit of this type fits, grouped by local day."""
    if principal is None:
        return HTMLResponse("", status_code=401)
    found = await refusable(session, lambda: service.free_slots(session, principal, provider_id,
                                                                location_id=location_id, start=day, days=7,
                                                                type=type))
    if isinstance(found, DomainError):
        return refusal(found)
    tz = ZoneInfo((await tenants.get_location(session, principal, location_id)).timezone)
    days: dict[date, list] = {}
    for s in found:
        local = s.starts_at.astimezone(tz)
        days.setdefault(local.date(), []).append({"starts_at": s.starts_at.isoformat(), "label": local.strftime("%H:%M")})
    return templates.TemplateResponse(request, "scheduling/_slots.html", {"days": days})


@router.post("/portal/appointments", response_class=HTMLResponse)
async def book_from_page(request: Request, session: DbSession, principal: PagePrincipal,
                         provider_id: Annotated[uuid.UUID, Form()], location_id: Annotated[uuid.UUID, Form()],
                         type: Annotated[str, Form(max_length=20)], starts_at: Annotated[datetime, Form()],
                         patient_id: Annotated[uuid.UUID | None, Form()] = None,
                         reason_for_visit: Annotated[str, Form(max_length=500)] = ""):
    if principal is None:
        return HTMLResponse("", status_code=401)
    if type not in service.APPOINTMENT_TYPES:
        return refusal("Pick a visit type from the list.")

    async def command():
        who = patient_id
        if who is None or not principal.can("manage:appointments"):
            who = (await patients.own_patient(session, principal)).id
        return await service.book(session, principal, patient_id=who, provider_id=provider_id,
                                  location_id=location_id, type=type, starts_at=starts_at,
                                  reason_for_visit=reason_for_visit.strip() or None)

    booked = await refusable(session, command)
    if isinstance(booked, DomainError):
        return refusal(booked)
    tz = ZoneInfo((await tenants.get_location(session, principal, location_id)).timezone)
    when = booked.starts_at.astimezone(tz).strftime("%a %d %b %Y, %H:%M")
    return HTMLResponse(f'<p id="booked" class="ok">Booked: <strong>{escape(when)}</strong>, '
                        f'{escape(type.replace("_", " "))} · ticket <code>{service.ticket(booked)}</code></p>')
