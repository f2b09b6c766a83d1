"""Prescriptions in the portal: the doctors' review queue (live), the review page (the
consultation's summary, the medicines to edit, the safety flags, approve or reject), and the
patient's page (sign on the pad, then see and download the signed prescription)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from carebase.consult import service as consult
from carebase.patients import service as patients
from carebase.platform.authz import Principal
from carebase.platform.errors import DomainError
from carebase.platform.web import DbSession, PagePrincipal, refusable
from carebase.portal.pages import form_command, refusal, render_page, templates
from carebase.prescribing import service
from carebase.settings import get_settings

router = APIRouter(include_in_schema=False)
Notes = Annotated[str, Form(max_length=2000)]
Lines = Annotated[list[str], Form(max_length=500)]


async def _queue(session, p: Principal) -> dict:
    return {"emergencies": await consult.queue(session, p, status="emergency", limit=20),
            "drafts": await service.queue(session, p), "poll_seconds": get_settings().portal_poll_seconds}


@router.get("/portal/prescriptions/queue", response_class=HTMLResponse)
async def queue_page(request: Request, session: DbSession, principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        return await _queue(session, p)

    return await render_page(request, session, principal, "prescribing/queue.html", context)


@router.get("/portal/fragments/prescriptions/queue", response_class=HTMLResponse)
async def queue_fragment(request: Request, session: DbSession, principal: PagePrincipal):
    if principal is None:
        return HTMLResponse("", status_code=401)
    return templates.TemplateResponse(request, "prescribing/_queue.html", await _queue(session, principal))


@router.get("/portal/prescriptions", response_class=HTMLResponse)
async def mine_page(request: Request, session: DbSession, principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        return {"prescriptions": await service.mine(session, p)}

    return await render_page(request, session, principal, "prescribing/mine.html", context)


async def _review(session, p: Principal, prescription_id: uuid.UUID) -> dict:
    rx = await service.get(session, p, prescription_id)
    ctx = {"rx": rx, "doctor": p.can("manage:prescriptions"), "consultation": None, "patient": None,
           "esign_enabled": get_settings().esign_provider != "none", "me": p.account_id}
    if ctx["doctor"]:
        ctx["patient"] = await patients.get_patient(session, p, rx.patient_id, "treatment")
        if rx.consultation_id:
            ctx["consultation"] = await consult.get(session, p, rx.consultation_id)
    return ctx


@router.get("/portal/prescriptions/{prescription_id}", response_class=HTMLResponse)
async def prescription_page(request: Request, prescription_id: uuid.UUID, session: DbSession,
                            principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        return await _review(session, p, prescription_id)

    return await render_page(request, session, principal, "prescribing/prescription.html", context)


def _items(medicine, dose, unit, times_per_day, duration_days, instructions) -> list[dict]:
    """The medicine rows of the form (blank rows left out); ValueError when a number is not one."""
    return [{"medicine": m.strip(), "dose": _number(d), "unit": u or None, "times_per_day": _number(t),
             "duration_days": int(n) if n.strip() else None, "instructions": i}
            for m, d, u, t, n, i in zip(medicine, dose, unit, times_per_day, duration_days, instructions, strict=True)
            if m.strip()]


NOT_NUMBERS = "Doses, times a day and days must be numbers."


@router.post("/portal/prescriptions/{prescription_id}/items", response_class=HTMLResponse)
async def edit_from_page(request: Request, prescription_id: uuid.UUID, session: DbSession, principal: PagePrincipal,
                         medicine: Lines = (), dose: Lines = (), unit: Lines = (), times_per_day: Lines = (),
                         duration_days: Lines = (), instructions: Lines = ()):
    try:
        items = _items(medicine, dose, unit, times_per_day, duration_days, instructions)
    except ValueError:
        return refusal(NOT_NUMBERS, "rx-error")
    return await _decide(session, principal, prescription_id,
                         lambda: service.edit(session, principal, prescription_id, items=items))


@router.get("/portal/patients/{patient_id}/prescriptions/new", response_class=HTMLResponse)
async def new_prescription_page(request: Request, patient_id: uuid.UUID, session: DbSession,
                                principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        return {"patient": await patients.get_patient(session, p, patient_id, "treatment")}

    return await render_page(request, session, principal, "prescribing/new.html", context)


@router.post("/portal/patients/{patient_id}/prescriptions", response_class=HTMLResponse)
async def write_from_page(request: Request, patient_id: uuid.UUID, session: DbSession, principal: PagePrincipal,
                          diagnosis: Notes = "", medicine: Lines = (), dose: Lines = (), unit: Lines = (),
                          times_per_day: Lines = (), duration_days: Lines = (), instructions: Lines = ()):
    if principal is None:
        return HTMLResponse("", status_code=401)
    try:
        items = _items(medicine, dose, unit, times_per_day, duration_days, instructions)
    except ValueError:
        return refusal(NOT_NUMBERS, "rx-error")
    written = await refusable(session, lambda: service.write(session, principal, patient_id, items=items,
                                                             diagnosis=diagnosis.strip() or None))
    if isinstance(written, DomainError):
        return refusal(written, "rx-error")
    return Response(status_code=200, headers={"HX-Redirect": f"/portal/prescriptions/{written.id}"})


def _number(value: str) -> float | None:
    value = value.strip()
    return float(value) if value else None


async def _decide(session, principal: Principal | None, prescription_id: uuid.UUID, command) -> Response:
    """A doctor's decision from the review page: refused with a message in place, or the page again."""
    return await form_command(session, principal, command, error_id="rx-error",
                              redirect=f"/portal/prescriptions/{prescription_id}")


@router.post("/portal/prescriptions/{prescription_id}/approve", response_class=HTMLResponse)
async def approve_from_page(request: Request, prescription_id: uuid.UUID, session: DbSession,
                            principal: PagePrincipal, notes: Notes = "", override_reason: Notes = ""):
    return await _decide(session, principal, prescription_id, lambda: service.approve(
        session, principal, prescription_id, notes=notes, override_reason=override_reason))


@router.post("/portal/prescriptions/{prescription_id}/reject", response_class=HTMLResponse)
async def reject_from_page(request: Request, prescription_id: uuid.UUID, session: DbSession,
                           principal: PagePrincipal, notes: Notes = ""):
    return await _decide(session, principal, prescription_id,
                         lambda: service.reject(session, principal, prescription_id, notes=notes))


@router.post("/portal/prescriptions/{prescription_id}/revoke", response_class=HTMLResponse)
async def revoke_from_page(request: Request, prescription_id: uuid.UUID, session: DbSession,
                           principal: PagePrincipal, reason: Notes = ""):
    return await _decide(session, principal, prescription_id,
                         lambda: service.revoke(session, principal, prescription_id, reason=reason))


@router.post("/portal/prescriptions/{prescription_id}/esign", response_class=HTMLResponse)
async def esign_from_page(request: Request, prescription_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    """The prescriber's browser goes to the ESP: a page that posts the signed request there."""
    if principal is None:
        return HTMLResponse("", status_code=401)
    started = await refusable(session, lambda: service.start_esign(session, principal, prescription_id))
    if isinstance(started, DomainError):
        return refusal(started, "rx-error")
    return templates.TemplateResponse(request, "prescribing/_esign_redirect.html", {"esign": started})
