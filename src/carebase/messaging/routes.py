"""Messaging API (the CureVirtual seed's paths) and its WebSocket.

REST: ``POST /messages/send``, ``GET /messages/conversations``, ``GET /messages/conversations/{id}``,
``PATCH /messages/{id}/read``, plus contacts, search and attachments. WebSocket
``/api/v1/messages/ws``: the server pushes ``message:new``, ``message:read``, ``typing`` and
``notification:new``; the client may send ``{"type": "typing", "conversation_id": …}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, WebSocket, WebSocketDisconnect, status
from fastapi.responses import RedirectResponse

from carebase.messaging import schemas, service
from carebase.platform import realtime
from carebase.platform.errors import DomainError
from carebase.platform.web import CurrentPrincipal, DbSession, websocket_principal

router = APIRouter(prefix="/api/v1", tags=["messaging"])


def _message(m: service.Message) -> schemas.MessageOut:
    return schemas.MessageOut(id=m.id, conversation_id=m.conversation_id, sender_id=m.sender_id, body=m.body,
                              attachments=m.attachments, created_at=m.created_at)


def _people(people: list[service.Participant]) -> list[schemas.ParticipantOut]:
    return [schemas.ParticipantOut(account_id=p.account_id, role=p.role, display_name=p.display_name,
                                   last_read_at=p.last_read_at) for p in people]


@router.post("/messages/send", status_code=status.HTTP_201_CREATED, response_model=schemas.MessageOut,
             summary="Send a message: in a conversation, or starting one (staff with a patient, a patient with a "
                     "member of their care team). Answered once stored; then pushed to the participants.")
async def send(body: schemas.SendIn, principal: CurrentPrincipal, session: DbSession) -> schemas.MessageOut:
    return _message(await service.send(session, principal, body=body.body, conversation_id=body.conversation_id,
                                       patient_id=body.patient_id, to_account_id=body.to_account_id,
                                       attachment_ids=body.attachment_ids, client_message_id=body.client_message_id))


@router.get("/messages/conversations", response_model=list[schemas.ConversationOut],
            summary="Your conversations, latest activity first, with unread counts")
async def conversations(principal: CurrentPrincipal, session: DbSession,
                        limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[schemas.ConversationOut]:
    return [schemas.ConversationOut(id=c.id, patient_id=c.patient_id, participants=_people(c.participants),
                                    last_message=_message(c.last_message) if c.last_message else None,
                                    last_message_at=c.last_message_at, unread=c.unread)
            for c in await service.my_conversations(session, principal, limit=limit)]


@router.get("/messages/conversations/{conversation_id}", response_model=schemas.ConversationMessagesOut,
            summary="A conversation's messages, oldest first (page back with `before`), and its participants' "
                    "read receipts. Participants only (404 for anyone else).")
async def conversation(conversation_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession,
                       before: datetime | None = None,
                       limit: Annotated[int, Query(ge=1, le=200)] = 50) -> schemas.ConversationMessagesOut:
    people, found = await service.conversation(session, principal, conversation_id, before=before, limit=limit)
    return schemas.ConversationMessagesOut(id=conversation_id, participants=_people(people),
                                           messages=[_message(m) for m in found])


@router.patch("/messages/{message_id}/read", status_code=status.HTTP_204_NO_CONTENT,
              summary="Mark a message (and everything before it in its conversation) as read; the sender sees "
                      "the receipt")
async def mark_read(message_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.mark_read(session, principal, message_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/messages/contacts", response_model=list[schemas.ContactOut],
            summary="Whom you can write to: your organization's doctors, nurses, front desk and pharmacists")
async def contacts(principal: CurrentPrincipal, session: DbSession) -> list[schemas.ContactOut]:
    return [schemas.ContactOut(account_id=a, display_name=n, role=r)
            for a, n, r in await service.contacts(session, principal)]


@router.get("/messages/search", response_model=list[schemas.MessageOut],
            summary="Search your own conversations (every word must appear), newest first")
async def search(principal: CurrentPrincipal, session: DbSession, q: Annotated[str, Query(min_length=1, max_length=200)],
                 limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[schemas.MessageOut]:
    return [_message(m) for m in await service.search(session, principal, q, limit=limit)]


@router.post("/messages/attachments", status_code=status.HTTP_201_CREATED, response_model=schemas.AttachmentOut,
             summary="Upload a file to send with your next message in a conversation (images, PDF, text; size "
                     "limited); then list its id in `attachment_ids`")
async def upload(principal: CurrentPrincipal, session: DbSession, conversation_id: Annotated[uuid.UUID, Form()],
                 file: Annotated[UploadFile, File()]) -> schemas.AttachmentOut:
    data = await file.read()
    stored = await service.upload(session, principal, conversation_id, filename=file.filename or "file",
                                  content_type=(file.content_type or "").split(";")[0].strip(), data=data)
    return schemas.AttachmentOut(**stored)


@router.get("/messages/attachments/{attachment_id}", status_code=status.HTTP_307_TEMPORARY_REDIRECT,
            response_class=RedirectResponse,
            summary="Download an attachment: a redirect to a link that works for five minutes (participants only)")
async def download(attachment_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> RedirectResponse:
    return RedirectResponse(await service.attachment_url(session, principal, attachment_id),
                            status_code=status.HTTP_307_TEMPORARY_REDIRECT, headers={"Cache-Control": "no-store"})


# The WebSocket relays what the hub hears on the caller's own channel, under the seed's event names.
_EVENTS = {"message:new": "message:new", "message:read": "message:read", "typing": "typing",
           "notification": "notification:new"}


@router.websocket("/messages/ws")
async def chat_socket(websocket: WebSocket) -> None:
    db = websocket.app.state.db()
    try:
        principal = await websocket_principal(websocket, db)
    except DomainError as err:
        await websocket.close(code=4401 if err.status == 401 else 4403, reason=err.detail[:120])
        return
    await websocket.accept()
    hub: realtime.Hub = websocket.app.state.hub
    channel = f"account:{principal.account_id}"

    async def relay(queue: asyncio.Queue) -> None:
        while True:
            data = (await queue.get())["data"]
            name = _EVENTS.get(data.get("type", ""))
            if name:
                await websocket.send_text(json.dumps({**data, "type": name}))

    async with hub.subscribe([channel]) as queue:
        await websocket.send_text(json.dumps({"type": "ready", "account_id": str(principal.account_id)}))
        forward = asyncio.create_task(relay(queue))
        try:
            while True:
                try:
                    frame = json.loads(await websocket.receive_text())
                except ValueError:
                    continue  # not JSON: nothing a client can mean
                if frame.get("type") == "typing":
                    await _typing(db, principal, frame.get("conversation_id"))
        except WebSocketDisconnect:
            pass
        finally:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await forward


async def _typing(db, principal, conversation_id) -> None:
    try:
        conversation = uuid.UUID(str(conversation_id))
    except ValueError:
        return
    try:
        async with db.transaction(principal.tenant_id, principal.account_id) as session:
            await service.typing(session, principal, conversation)
    except DomainError:
        pass  # not a participant: nobody hears of it
