"""The live calendar (a day of visits that updates as anyone books or moves one) and the visit
queue's "Now serving" board, in the portal (htmx; Server-Sent Events with polling fallback)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse

from carebase.patients import service as patients
from carebase.platform.authz import Principal
from carebase.platform.errors import DomainError
from carebase.platform.web import DbSession, PagePrincipal, request_scope
from carebase.portal.pages import render_page, templates
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
    error = None
    try:
        await service.change_status(session, principal, appointment_id, status=status, reason=reason or None)
    except DomainError as err:
        await request_scope(request).finish(commit=False)
        error = err.detail
    return HTMLResponse(f'<small class="error">{error}</small>' if error else "<small>Saved</small>")


@router.post("/portal/locations/{location_id}/call-next", response_class=HTMLResponse)
async def call_next_from_page(request: Request, location_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    if principal is None:
        return HTMLResponse("", status_code=401)
    try:
        called = await service.call_next(session, principal, location_id)
    except DomainError as err:
        await request_scope(request).finish(commit=False)
        return HTMLResponse(f'<small class="error">{err.detail}</small>')
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
