"""Messaging between a patient and their care team (``POST /messages/send`` and friends).

A conversation belongs to one tenant and one patient; its participants are the patient's login
and the staff who joined it. Only participants read or post (everyone else gets 404, as if it did
not exist). A message is stored before the sender's request is answered and is then announced on
each participant's ``account:<id>`` channel (``message:new``), which the chat WebSocket of any
server process forwards. Somebody who has not read it after ``message_nudge_seconds`` gets a
notification (push, then e-mail), so an offline participant still hears of it.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.identity import service as identity
from carebase.messaging.models import attachments, conversation_participants, conversations, messages
from carebase.notifications import service as notifications
from carebase.patients import service as patients
from carebase.platform import jobs, realtime
from carebase.platform.authz import Principal, require_tenant
from carebase.platform.db import Database
from carebase.platform.errors import Conflict, Forbidden, NotFound, ValidationFailed
from carebase.platform.ids import new_id
from carebase.platform.storage import storage
from carebase.settings import get_settings
from carebase.tenants import service as tenants

P = conversation_participants


@dataclass
class Participant:
    account_id: uuid.UUID
    role: str
    display_name: str
    last_read_at: datetime | None


@dataclass
class Message:
    id: uuid.UUID
    conversation_id: uuid.UUID
    sender_id: uuid.UUID
    body: str
    attachments: list[dict[str, Any]]
    created_at: datetime


@dataclass
class Conversation:
    id: uuid.UUID
    patient_id: uuid.UUID
    participants: list[Participant]
    last_message: Message | None
    last_message_at: datetime | None
    unread: int


def _message(r) -> Message:
    return Message(r.id, r.conversation_id, r.sender_id, r.body, r.attachments, r.created_at)


def _not_found() -> NotFound:
    return NotFound("No such conversation, or you are not in it.", code="conversation-not-found")


async def _participants(session: AsyncSession, conversation_id: uuid.UUID) -> list[Participant]:
    rows = (await session.execute(select(P).where(P.c.conversation_id == conversation_id)
                                  .order_by(P.c.joined_at))).all()
    return [Participant(r.account_id, r.role, r.display_name, r.last_read_at) for r in rows]


async def _member_of(session: AsyncSession, principal: Principal, conversation_id: uuid.UUID) -> list[Participant]:
    """The conversation's participants, or 404 unless the caller is one of them."""
    tenant_id = require_tenant(principal)
    found = (await session.execute(select(conversations.c.id).where(
        conversations.c.id == conversation_id, conversations.c.tenant_id == tenant_id))).first()
    people = await _participants(session, conversation_id) if found else []
    if not any(p.account_id == principal.account_id for p in people):
        raise _not_found()
    return people


async def _name(session: AsyncSession, account_id: uuid.UUID) -> str:
    account = await identity.get_account(session, account_id)
    return (account.display_name if account and account.display_name else "Carebase user")[:200]


async def _open(session: AsyncSession, principal: Principal, *, patient_id: uuid.UUID,
                patient_account: uuid.UUID, staff_account: uuid.UUID) -> uuid.UUID:
    """The conversation between this patient and this staff member, started if there is none."""
    tenant_id = require_tenant(principal)
    existing = (await session.execute(
        select(conversations.c.id).join(P, P.c.conversation_id == conversations.c.id).where(
            conversations.c.tenant_id == tenant_id, conversations.c.patient_id == patient_id,
            P.c.account_id == staff_account).limit(1))).scalar()
    if existing:
        return existing
    # Two people starting the same conversation at once would make two; a transaction-scoped
    # advisory lock on the pair makes the second find the first.
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                          {"k": f"conversation:{patient_id}:{staff_account}"})
    existing = (await session.execute(
        select(conversations.c.id).join(P, P.c.conversation_id == conversations.c.id).where(
            conversations.c.tenant_id == tenant_id, conversations.c.patient_id == patient_id,
            P.c.account_id == staff_account).limit(1))).scalar()
    if existing:
        return existing
    conversation_id = new_id()
    await session.execute(conversations.insert().values(id=conversation_id, tenant_id=tenant_id,
                                                        patient_id=patient_id, created_by=principal.account_id))
    for account_id, role in ((patient_account, "patient"), (staff_account, "staff")):
        await session.execute(P.insert().values(conversation_id=conversation_id, account_id=account_id,
                                                tenant_id=tenant_id, role=role,
                                                display_name=await _name(session, account_id)))
    return conversation_id


async def _resolve(session: AsyncSession, principal: Principal, *, conversation_id: uuid.UUID | None,
                   patient_id: uuid.UUID | None,
                   to_account_id: uuid.UUID | None) -> tuple[uuid.UUID, list[Participant]]:
    """The conversation to post in: the one named, or the caller's with that patient or staff member."""
    tenant_id = require_tenant(principal)
    if conversation_id is not None:
        return conversation_id, await _member_of(session, principal, conversation_id)
    team = await tenants.care_team(session, tenant_id)
    if principal.account_id in team:  # staff write to a patient
        if patient_id is None:
            raise ValidationFailed("Say which patient to write to (patient_id), or reply in a conversation.",
                                   code="recipient-required")
        await patients.get_patient(session, principal, patient_id, "treatment")
        account = await patients.account_of(session, tenant_id, patient_id)
        if account is None:
            raise Conflict("This patient has no Carebase login to receive messages; call them instead.",
                           code="patient-has-no-login")
        conversation_id = await _open(session, principal, patient_id=patient_id, patient_account=account,
                                      staff_account=principal.account_id)
    elif principal.can("read:own_record"):  # a patient writes to a member of their care team
        if to_account_id is None or to_account_id not in team:
            raise ValidationFailed("Write to someone of your care team (to_account_id from "
                                   "GET /api/v1/messages/contacts).", code="not-a-care-team-member")
        own = await patients.own_patient(session, principal)
        conversation_id = await _open(session, principal, patient_id=own.id, patient_account=principal.account_id,
                                      staff_account=to_account_id)
    else:
        raise Forbidden("Only patients and their care team exchange messages here.", code="forbidden")
    return conversation_id, await _participants(session, conversation_id)


async def contacts(session: AsyncSession, principal: Principal) -> list[tuple[uuid.UUID, str, str]]:
    """Whom the caller may start a conversation with: (account id, name, role) of the care team."""
    team = await tenants.care_team(session, require_tenant(principal))
    return [(account_id, await _name(session, account_id), role) for account_id, role in team.items()
            if account_id != principal.account_id]


async def send(session: AsyncSession, principal: Principal, *, body: str, conversation_id: uuid.UUID | None = None,
               patient_id: uuid.UUID | None = None, to_account_id: uuid.UUID | None = None,
               attachment_ids: list[uuid.UUID] | None = None, client_message_id: str | None = None) -> Message:
    tenant_id = require_tenant(principal)
    body = body.strip()
    if not body and not attachment_ids:
        raise ValidationFailed("A message needs some text or an attachment.", code="empty-message")
    conversation_id, people = await _resolve(session, principal, conversation_id=conversation_id,
                                             patient_id=patient_id, to_account_id=to_account_id)
    files = await _claim_attachments(session, principal, conversation_id, attachment_ids or [])
    message_id = new_id()
    stored = await session.execute(insert(messages).values(
        id=message_id, tenant_id=tenant_id, conversation_id=conversation_id, sender_id=principal.account_id,
        body=body, attachments=files, client_message_id=client_message_id)
        .on_conflict_do_nothing().returning(messages))
    row = stored.first()
    if row is None:  # the same client message again (a retry after a lost answer): the stored one
        row = (await session.execute(select(messages).where(
            messages.c.conversation_id == conversation_id, messages.c.sender_id == principal.account_id,
            messages.c.client_message_id == client_message_id))).first()
        return _message(row)
    if files:
        await session.execute(attachments.update().where(attachments.c.id.in_([f["id"] for f in files]))
                              .values(message_id=message_id))
    await session.execute(conversations.update().where(conversations.c.id == conversation_id)
                          .values(last_message_at=row.created_at))
    await session.execute(P.update().where(P.c.conversation_id == conversation_id,
                                           P.c.account_id == principal.account_id)
                          .values(last_read_at=row.created_at))
    event = {"type": "message:new", "conversation_id": str(conversation_id), "message_id": str(message_id),
             "sender_id": str(principal.account_id)}
    wait = get_settings().message_nudge_seconds
    for p in people:
        await realtime.publish(session, f"account:{p.account_id}", event)
        if p.account_id != principal.account_id:
            await jobs.defer(session, "messaging.nudge", delay_seconds=wait, message_id=str(message_id),
                             account_id=str(p.account_id), tenant_id=str(tenant_id))
    return _message(row)


async def _claim_attachments(session: AsyncSession, principal: Principal, conversation_id: uuid.UUID,
                             ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    if not ids:
        return []
    rows = (await session.execute(select(attachments).where(
        attachments.c.id.in_(ids), attachments.c.conversation_id == conversation_id,
        attachments.c.uploaded_by == principal.account_id, attachments.c.message_id.is_(None)))).all()
    if len(rows) != len(set(ids)):
        raise ValidationFailed("Attach only files you uploaded to this conversation and have not sent yet.",
                               code="bad-attachment")
    return [{"id": str(r.id), "filename": r.filename, "content_type": r.content_type, "size": r.size}
            for r in rows]


async def mark_read(session: AsyncSession, principal: Principal, message_id: uuid.UUID) -> None:
    """Everything in the conversation up to this message has been seen by the caller."""
    tenant_id = require_tenant(principal)
    row = (await session.execute(select(messages).where(messages.c.id == message_id,
                                                        messages.c.tenant_id == tenant_id))).first()
    if row is None:
        raise NotFound("No such message, or you are not in its conversation.", code="message-not-found")
    try:
        people = await _member_of(session, principal, row.conversation_id)
    except NotFound:
        raise NotFound("No such message, or you are not in its conversation.", code="message-not-found") from None
    moved = await session.execute(P.update().where(
        P.c.conversation_id == row.conversation_id, P.c.account_id == principal.account_id,
        or_(P.c.last_read_at.is_(None), P.c.last_read_at < row.created_at)).values(last_read_at=row.created_at))
    if moved.rowcount:
        event = {"type": "message:read", "conversation_id": str(row.conversation_id), "message_id": str(row.id),
                 "reader_id": str(principal.account_id)}
        for p in people:
            if p.account_id != principal.account_id:
                await realtime.publish(session, f"account:{p.account_id}", event)


async def typing(session: AsyncSession, principal: Principal, conversation_id: uuid.UUID) -> None:
    """Tell the others that the caller is typing (nothing is stored)."""
    for p in await _member_of(session, principal, conversation_id):
        if p.account_id != principal.account_id:
            await realtime.publish(session, f"account:{p.account_id}", {
                "type": "typing", "conversation_id": str(conversation_id), "account_id": str(principal.account_id)})


def _unread(conversation_id, account_id, since):
    return select(func.count()).select_from(messages).where(
        messages.c.conversation_id == conversation_id, messages.c.sender_id != account_id,
        messages.c.created_at > func.coalesce(since, datetime(1970, 1, 1, tzinfo=UTC))).scalar_subquery()


async def my_conversations(session: AsyncSession, principal: Principal, *, limit: int = 50) -> list[Conversation]:
    """The caller's conversations, latest activity first, each with its unread count (the badges)."""
    tenant_id = require_tenant(principal)
    rows = (await session.execute(
        select(conversations, P.c.last_read_at, _unread(conversations.c.id, principal.account_id,
                                                        P.c.last_read_at).label("unread"))
        .join(P, and_(P.c.conversation_id == conversations.c.id, P.c.account_id == principal.account_id))
        .where(conversations.c.tenant_id == tenant_id)
        .order_by(func.coalesce(conversations.c.last_message_at, conversations.c.created_at).desc())
        .limit(limit))).all()
    ids = [r.id for r in rows]
    if not ids:
        return []
    # Two queries for the whole list (not two per conversation): everyone in them, and each one's
    # latest message.
    people: dict[uuid.UUID, list[Participant]] = {}
    for p in (await session.execute(select(P).where(P.c.conversation_id.in_(ids)).order_by(P.c.joined_at))).all():
        people.setdefault(p.conversation_id, []).append(Participant(p.account_id, p.role, p.display_name,
                                                                    p.last_read_at))
    latest = {m.conversation_id: _message(m) for m in (await session.execute(
        select(messages).where(messages.c.conversation_id.in_(ids)).ext(distinct_on(messages.c.conversation_id))
        .order_by(messages.c.conversation_id, messages.c.created_at.desc()))).all()}
    return [Conversation(r.id, r.patient_id, people.get(r.id, []), latest.get(r.id), r.last_message_at, r.unread)
            for r in rows]


async def conversation(session: AsyncSession, principal: Principal, conversation_id: uuid.UUID, *,
                       before: datetime | None = None, limit: int = 50) -> tuple[list[Participant], list[Message]]:
    """Participants (with their read receipts) and messages, oldest first, ``limit`` before ``before``."""
    people = await _member_of(session, principal, conversation_id)
    query = select(messages).where(messages.c.conversation_id == conversation_id)
    if before is not None:
        query = query.where(messages.c.created_at < before)
    rows = (await session.execute(query.order_by(messages.c.created_at.desc()).limit(limit))).all()
    return people, [_message(r) for r in reversed(rows)]


async def search(session: AsyncSession, principal: Principal, q: str, *, limit: int = 50) -> list[Message]:
    """Messages matching every word of ``q``, in the caller's conversations only, newest first."""
    words = q.split()
    if not words:
        raise ValidationFailed("Search for at least one word.", code="empty-search")
    mine = select(P.c.conversation_id).where(P.c.account_id == principal.account_id,
                                             P.c.tenant_id == require_tenant(principal))
    query = select(messages).where(messages.c.conversation_id.in_(mine))
    for w in words[:10]:
        query = query.where(messages.c.body.icontains(w, autoescape=True))
    rows = (await session.execute(query.order_by(messages.c.created_at.desc()).limit(limit))).all()
    return [_message(r) for r in rows]


async def nudge(db: Database, *, message_id: uuid.UUID, account_id: uuid.UUID, tenant_id: uuid.UUID) -> bool:
    """A participant who has not read a message by now hears of it as a notification."""
    async with db.transaction(tenant_id, owner=True) as session:
        row = (await session.execute(select(messages).where(messages.c.id == message_id))).first()
        seen = (await session.execute(select(P.c.last_read_at).where(
            P.c.conversation_id == (row.conversation_id if row else None), P.c.account_id == account_id))).first()
        if row is None or seen is None or (seen[0] is not None and seen[0] >= row.created_at):
            return False
        sender = await _name(session, row.sender_id)
        # One notice per conversation and hour: ten unread lines are one "new message", not ten.
        return await notifications.notify(
            session, tenant_id=tenant_id, account_id=account_id, type="message.new", data={"sender": sender},
            event_key=str(row.conversation_id) + ":" + row.created_at.strftime("%Y%m%d%H"),
            link=f"/portal/messages/{row.conversation_id}")


@jobs.job("messaging.nudge")
async def _nudge_job(db: Database, message_id: str, account_id: str, tenant_id: str) -> None:
    await nudge(db, message_id=uuid.UUID(message_id), account_id=uuid.UUID(account_id),
                tenant_id=uuid.UUID(tenant_id))



# -- attachments ---------------------------------------------------------------------------------

# What a file's first bytes must look like for the type it claims: a renamed executable is not a PDF.
_MAGIC = {"application/pdf": (b"%PDF-",), "image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",),
          "image/webp": (b"RIFF",)}


def _check_file(filename: str, content_type: str, data: bytes) -> None:
    settings = get_settings()
    allowed = [t.strip() for t in settings.attachment_types.split(",") if t.strip()]
    if content_type not in allowed:
        raise ValidationFailed(f"{content_type or 'This kind of file'} cannot be attached; send one of: "
                               f"{', '.join(allowed)}.", code="attachment-type")
    if not data:
        raise ValidationFailed("The file is empty.", code="attachment-empty")
    if len(data) > settings.attachment_max_bytes:
        raise ValidationFailed(f"The file is {len(data) // 1024} KiB; attachments may be at most "
                               f"{settings.attachment_max_bytes // 1024} KiB.", code="attachment-too-large")
    magic = _MAGIC.get(content_type)
    if (magic and not data.startswith(magic)) or (content_type == "image/webp" and data[8:12] != b"WEBP"):
        raise ValidationFailed(f"{filename!r} is not really {content_type}.", code="attachment-type")
    if content_type == "text/plain":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationFailed(f"{filename!r} is not UTF-8 text.", code="attachment-type") from None


async def upload(session: AsyncSession, principal: Principal, conversation_id: uuid.UUID, *, filename: str,
                 content_type: str, data: bytes) -> dict[str, Any]:
    """Store a file for a message the caller is about to send in this conversation."""
    tenant_id = require_tenant(principal)
    await _member_of(session, principal, conversation_id)
    filename = (filename or "file").replace("/", "_").replace("\\\\", "_")[-255:]
    _check_file(filename, content_type, data)
    attachment_id = new_id()
    key = f"attachments/{tenant_id}/{conversation_id}/{attachment_id}"
    # Stored before the row commits: a refused request can leave an orphan file, never a row
    # pointing at no file.
    await storage(get_settings()).put(key, data, content_type)
    await session.execute(attachments.insert().values(
        id=attachment_id, tenant_id=tenant_id, conversation_id=conversation_id, uploaded_by=principal.account_id,
        storage_key=key, filename=filename, content_type=content_type, size=len(data),
        sha256=hashlib.sha256(data).hexdigest()))
    return {"id": attachment_id, "filename": filename, "content_type": content_type, "size": len(data)}


async def attachment_url(session: AsyncSession, principal: Principal, attachment_id: uuid.UUID) -> str:
    """A link valid for five minutes, for participants of the attachment's conversation only."""
    row = (await session.execute(select(attachments).where(
        attachments.c.id == attachment_id, attachments.c.tenant_id == require_tenant(principal)))).first()
    if row is None:
        raise NotFound("No such attachment, or you are not in its conversation.", code="attachment-not-found")
    try:
        await _member_of(session, principal, row.conversation_id)
    except NotFound:
        raise NotFound("No such attachment, or you are not in its conversation.",
                       code="attachment-not-found") from None
    return storage(get_settings()).signed_url(row.storage_key, expires_in=300, filename=row.filename,
                                              content_type=row.content_type)
