"""HL7 v2 over HTTP (an integration's API key) and the inbox administrators inspect and replay."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from carebase.hl7v2 import schemas, service
from carebase.identity import service as identity
from carebase.platform.errors import NotAuthenticated
from carebase.platform.web import (
    CurrentPrincipal,
    DbSession,
    OptionalPrincipal,
    accept_scoped_tokens,
    adopt_principal,
    takes_raw_body,
)

router = APIRouter(prefix="/api/v1", tags=["hl7v2"])
accept_scoped_tokens("/api/v1/hl7/v2")
ER7 = "x-application/hl7-v2+er7"


@router.post("/hl7/v2", response_class=Response,
             summary="Send one HL7 v2 ADT message (A01, A03, A04, A08, A40); the answer is its ACK",
             description="Authenticate with `X-API-Key: <an API key with scope hl7:ingest>` (or its client-credentials "
                         "token). The body is the message itself (ER7, segments ended by carriage returns). The "
                         "response is always the HL7 acknowledgement: MSA AA (applied), AE (not applied; the reason "
                         "in ERR) or AR (rejected). Every message is kept in the inbox.",
             openapi_extra={"requestBody": {"required": True, "content": {ER7: {"schema": {"type": "string"}},
                                                                          "text/plain": {"schema": {"type": "string"}}}}},
             responses={200: {"description": "The ACK", "content": {ER7: {"schema": {"type": "string"}}}}})
@takes_raw_body
async def receive(request: Request, session: DbSession, bearer: OptionalPrincipal) -> Response:
    principal = bearer
    key = request.headers.get("x-api-key")
    if principal is None:
        if not key:
            raise NotAuthenticated("Send the integration's API key: X-API-Key: cbk_...", code="not-authenticated")
        principal = await identity.authenticate_api_key(session, key)
        await adopt_principal(request, principal)
    raw = (await request.body()).decode("utf-8", errors="replace")
    outcome = await service.ingest(session, principal, raw, via="http")
    return Response(outcome.ack, media_type=ER7)


@router.get("/hl7/messages", response_model=schemas.InboxOut,
            summary="The HL7 inbox: the latest messages with their acknowledgement (admins)")
async def inbox(principal: CurrentPrincipal, session: DbSession,
                status: Annotated[Literal["processed", "duplicate", "error", "rejected"] | None, Query()] = None,
                limit: Annotated[int, Query(ge=1, le=500)] = 100) -> schemas.InboxOut:
    items, counts = await service.inbox(session, principal, status=status, limit=limit)
    return schemas.InboxOut(counts=counts, items=[schemas.InboxEntryOut(**asdict(i)) for i in items])


@router.get("/hl7/messages/{hl7_message_id}", response_model=schemas.InboxEntryOut,
            summary="One HL7 message with its text (admins)")
async def message(hl7_message_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.InboxEntryOut:
    return schemas.InboxEntryOut(**asdict(await service.message(session, principal, hl7_message_id)))


@router.post("/hl7/messages/{hl7_message_id}/replay", response_model=schemas.ReplayOut,
             summary="Run a failed or rejected message again, as the key that sent it (admins)")
async def replay(hl7_message_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.ReplayOut:
    outcome = await service.replay(session, principal, hl7_message_id)
    return schemas.ReplayOut(message_id=outcome.message_id, ack_code=outcome.code, status=outcome.status,
                             error=outcome.error, ack=outcome.ack)
