"""The patient register in the portal: find patients as you type, and register a new one with the
duplicate check shown in place (candidates, then "register anyway")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from carebase.patients import schemas, service
from carebase.platform.authz import Principal
from carebase.platform.errors import DomainError
from carebase.platform.web import DbSession, PagePrincipal, refusable
from carebase.portal.pages import render_page, templates

router = APIRouter(include_in_schema=False)

Search = Annotated[str, Query(max_length=100)]


async def _find(session, principal: Principal, q: str) -> dict:
    try:
        found = await service.search_patients(session, principal, q=q or None, limit=25, purpose="treatment")
    except DomainError as err:
        return {"patients": [], "error": err.detail, "q": q}
    return {"patients": found, "error": None, "q": q, "can_read_charts": principal.can("read:charts")}


@router.get("/portal/patients", response_class=HTMLResponse)
async def patients_page(request: Request, session: DbSession, principal: PagePrincipal, q: Search = ""):
    async def context(p: Principal) -> dict:
        if not p.can("read:patients"):
            return {"patients": [], "error": "Only clinic staff can look up patients.", "q": q}
        return await _find(session, p, q.strip())

    return await render_page(request, session, principal, "patients/index.html", context)


@router.get("/portal/fragments/patient-search", response_class=HTMLResponse)
async def patient_search_fragment(request: Request, session: DbSession, principal: PagePrincipal, q: Search = ""):
    if principal is None:
        return HTMLResponse("", status_code=401)
    return templates.TemplateResponse(request, "patients/_results.html", await _find(session, principal, q.strip()))


def _form_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "form"
    return f"{where.replace('_', ' ')}: {first.get('msg', 'invalid')}"


Field = Annotated[str, Form(max_length=320)]


@router.post("/portal/patients", response_class=HTMLResponse)
async def register_from_page(request: Request, session: DbSession, principal: PagePrincipal,
                             given_name: Field = "", family_name: Field = "", birth_date: Field = "",
                             gender: Field = "", phone: Field = "", email: Field = "", country: Field = "",
                             timezone: Field = "", preferred_language: Field = "", mrn: Field = "",
                             allow_duplicate: Field = ""):
    if principal is None:
        return HTMLResponse("", status_code=401)
    submitted = {"given_name": given_name, "family_name": family_name, "birth_date": birth_date, "gender": gender,
                 "phone": phone, "email": email, "country": country, "timezone": timezone,
                 "preferred_language": preferred_language, "mrn": mrn}
    body: dict = {k: v.strip() for k, v in submitted.items() if v.strip()}
    ctx: dict = {"form": body, "patient": None, "candidates": [], "error": None,
                 "can_read_charts": principal.can("read:charts")}
    try:
        patient_in = schemas.PatientIn.model_validate({**body, "allow_duplicate": allow_duplicate == "yes"})
    except ValidationError as err:
        ctx["error"] = _form_error(err)
        return templates.TemplateResponse(request, "patients/_register_result.html", ctx)
    done = await refusable(session, lambda: service.register_patient(session, principal, **patient_in.model_dump()))
    if isinstance(done, service.PossibleDuplicates):
        ctx["candidates"] = done.candidates  # kept (keep_writes): the candidates shown stay audited
    elif isinstance(done, DomainError):
        ctx["error"] = done.detail
    else:
        ctx["patient"] = done
    return templates.TemplateResponse(request, "patients/_register_result.html", ctx)
