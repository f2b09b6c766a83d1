"""Consultations in the portal: a patient converses with the intake assistant (typed, or spoken
where the browser can listen); the transcript and summary for them and for the clinicians."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from carebase.consult import service
from carebase.platform.authz import Principal
from carebase.platform.errors import DomainError
from carebase.platform.web import DbSession, PagePrincipal, refusable
from carebase.portal.pages import refusal, render_page, templates

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Form(max_length=service.MAX_MESSAGE_CHARS)]


@router.get("/portal/consult", response_class=HTMLResponse)
async def consult_page(request: Request, session: DbSession, principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        return {"consultations": await service.mine(session, p, limit=20)}

    return await render_page(request, session, principal, "consult/start.html", context)


@router.post("/portal/consult", response_class=HTMLResponse)
async def start_from_page(request: Request, session: DbSession, principal: PagePrincipal, text: Text = ""):
    if principal is None:
        return HTMLResponse("", status_code=401)
    started = await refusable(session, lambda: service.start(session, principal, text))
    if isinstance(started, DomainError):
        return refusal(started, "consult-error")
    return Response(status_code=200, headers={"HX-Redirect": f"/portal/consult/{started.id}"})


@router.get("/portal/consult/{consultation_id}", response_class=HTMLResponse)
async def consultation_page(request: Request, consultation_id: uuid.UUID, session: DbSession,
                            principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        return {"c": await service.get(session, p, consultation_id), "mine": "patient" in p.roles}

    return await render_page(request, session, principal, "consult/conversation.html", context)


@router.post("/portal/consult/{consultation_id}", response_class=HTMLResponse)
async def say_from_page(request: Request, consultation_id: uuid.UUID, session: DbSession, principal: PagePrincipal,
                        text: Text = ""):
    if principal is None:
        return HTMLResponse("", status_code=401)
    said = await refusable(session, lambda: service.say(session, principal, consultation_id, text))
    if isinstance(said, DomainError):
        return refusal(said, "consult-error")
    return templates.TemplateResponse(request, "consult/_transcript.html", {"c": said, "mine": True})


@router.post("/portal/consult/{consultation_id}/handled", response_class=HTMLResponse)
async def handled_from_page(request: Request, consultation_id: uuid.UUID, session: DbSession,
                            principal: PagePrincipal, note: Annotated[str, Form(max_length=2000)] = ""):
    if principal is None:
        return HTMLResponse("", status_code=401)
    done = await refusable(session, lambda: service.handle_emergency(session, principal, consultation_id, note=note))
    if isinstance(done, DomainError):
        return refusal(done, "consult-error")
    return Response(status_code=200, headers={"HX-Redirect": f"/portal/consult/{consultation_id}"})
