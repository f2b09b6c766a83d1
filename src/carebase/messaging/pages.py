"""Messages in the portal: the conversation list with unread badges, and a live conversation
(WebSocket: new messages, typing indicator, read receipts), with attachments."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from carebase.messaging import service
from carebase.patients import service as patients
from carebase.platform.authz import Principal
from carebase.platform.errors import DomainError
from carebase.platform.web import DbSession, PagePrincipal, refusable
from carebase.portal.pages import refusal, render_page, templates

router = APIRouter(include_in_schema=False)


async def _list(session, principal: Principal, patient_id: uuid.UUID | None) -> dict:
    ctx = {"conversations": await service.my_conversations(session, principal), "patient": None, "contacts": []}
    if principal.can("read:patients") and patient_id:
        ctx["patient"] = await patients.get_patient(session, principal, patient_id, "treatment")
    elif principal.can("read:own_record"):
        ctx["contacts"] = await service.contacts(session, principal)
    return ctx


@router.get("/portal/messages", response_class=HTMLResponse)
async def messages_page(request: Request, session: DbSession, principal: PagePrincipal,
                        patient_id: uuid.UUID | None = None):
    async def context(p: Principal) -> dict:
        return await _list(session, p, patient_id)

    return await render_page(request, session, principal, "messaging/list.html", context)


async def _thread(session, principal: Principal, conversation_id: uuid.UUID) -> dict:
    people, found = await service.conversation(session, principal, conversation_id, limit=100)
    others = [p for p in people if p.account_id != principal.account_id]
    names = {p.account_id: p.display_name for p in people}
    # "Seen" goes under my latest message the others have all read.
    seen_upto = min((p.last_read_at for p in others if p.last_read_at), default=None) \
        if all(p.last_read_at for p in others) else None
    mine = [m for m in found if m.sender_id == principal.account_id]
    seen_id = next((m.id for m in reversed(mine) if seen_upto and m.created_at <= seen_upto), None)
    return {"conversation_id": conversation_id, "messages": found, "names": names, "me": principal.account_id,
            "others": others, "seen_id": seen_id, "last_id": found[-1].id if found else None}


@router.get("/portal/messages/{conversation_id}", response_class=HTMLResponse)
async def conversation_page(request: Request, conversation_id: uuid.UUID, session: DbSession,
                            principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        return await _thread(session, p, conversation_id)

    return await render_page(request, session, principal, "messaging/conversation.html", context)


@router.get("/portal/fragments/messages/{conversation_id}", response_class=HTMLResponse)
async def thread_fragment(request: Request, conversation_id: uuid.UUID, session: DbSession,
                          principal: PagePrincipal):
    if principal is None:
        return HTMLResponse("", status_code=401)
    return templates.TemplateResponse(request, "messaging/_thread.html",
                                      await _thread(session, principal, conversation_id))


Body = Annotated[str, Form(max_length=5000)]


@router.post("/portal/messages", response_class=HTMLResponse)
async def start_from_page(request: Request, session: DbSession, principal: PagePrincipal, body: Body = "",
                          patient_id: Annotated[uuid.UUID | None, Form()] = None,
                          to_account_id: Annotated[uuid.UUID | None, Form()] = None):
    if principal is None:
        return HTMLResponse("", status_code=401)
    sent = await refusable(session, lambda: service.send(session, principal, body=body, patient_id=patient_id,
                                                         to_account_id=to_account_id))
    if isinstance(sent, DomainError):
        return refusal(sent, "message-error")
    return Response(status_code=200, headers={"HX-Redirect": f"/portal/messages/{sent.conversation_id}"})


@router.post("/portal/messages/{conversation_id}", response_class=HTMLResponse)
async def send_from_page(request: Request, conversation_id: uuid.UUID, session: DbSession, principal: PagePrincipal,
                         body: Body = "", attachment_id: Annotated[uuid.UUID | None, Form()] = None):
    if principal is None:
        return HTMLResponse("", status_code=401)
    sent = await refusable(session, lambda: service.send(
        session, principal, body=body, conversation_id=conversation_id,
        attachment_ids=[attachment_id] if attachment_id else None))
    if isinstance(sent, DomainError):
        return refusal(sent, "message-error")
    return templates.TemplateResponse(request, "messaging/_thread.html",
                                      await _thread(session, principal, conversation_id))
