"""Integrations in the portal (admins): API keys, and the HL7 inbox with each message's
acknowledgement, its text and a replay button for the failed ones."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from carebase.hl7v2 import service
from carebase.identity import service as identity
from carebase.platform.authz import Principal
from carebase.platform.errors import DomainError
from carebase.platform.web import DbSession, PagePrincipal, refusable
from carebase.portal.pages import form_command, refusal, render_page, templates

router = APIRouter(include_in_schema=False)


@router.get("/portal/integrations", response_class=HTMLResponse)
async def integrations_page(request: Request, session: DbSession, principal: PagePrincipal,
                            status: str | None = None):
    async def context(p: Principal) -> dict:
        items, counts = await service.inbox(session, p, status=status if status in service.STATUSES else None,
                                            limit=100)
        return {"keys": await identity.list_api_keys(session, p), "messages": items, "counts": counts,
                "statuses": service.STATUSES, "status": status}

    return await render_page(request, session, principal, "hl7v2/integrations.html", context)


@router.post("/portal/integrations/keys", response_class=HTMLResponse)
async def create_key(request: Request, session: DbSession, principal: PagePrincipal,
                     name: Annotated[str, Form(min_length=1, max_length=100)],
                     scope: Annotated[str, Form(min_length=1, max_length=500)]):
    if principal is None:
        return HTMLResponse("", status_code=401)
    done = await refusable(session, lambda: identity.create_api_key(session, principal, name=name, scope=scope))
    if isinstance(done, DomainError):
        return refusal(done, "key-error")
    return templates.TemplateResponse(request, "hl7v2/_new_key.html", {"key": done})


@router.post("/portal/integrations/keys/{key_id}/revoke", response_class=HTMLResponse)
async def revoke_key(key_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    return await form_command(session, principal, lambda: identity.revoke_api_key(session, principal, key_id),
                              error_id="key-error")


@router.get("/portal/integrations/messages/{hl7_message_id}", response_class=HTMLResponse)
async def message_fragment(request: Request, hl7_message_id: uuid.UUID, session: DbSession,
                           principal: PagePrincipal):
    if principal is None:
        return HTMLResponse("", status_code=401)
    found = await refusable(session, lambda: service.message(session, principal, hl7_message_id))
    if isinstance(found, DomainError):
        return refusal(found)
    return templates.TemplateResponse(request, "hl7v2/_message.html", {"m": found})


@router.post("/portal/integrations/messages/{hl7_message_id}/replay", response_class=HTMLResponse)
async def replay_from_page(hl7_message_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    if principal is None:
        return HTMLResponse("", status_code=401)
    done = await refusable(session, lambda: service.replay(session, principal, hl7_message_id))
    if isinstance(done, DomainError):
        return refusal(done)
    label = {"AA": "applied", "AE": "still failing", "AR": "rejected"}[done.code]
    return HTMLResponse(f'<small class="replayed" data-ack="{done.code}">Replayed: {label}'
                        f'{" — " + done.error if done.error else ""}</small>')
