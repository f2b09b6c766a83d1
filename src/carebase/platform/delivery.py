"""Outgoing e-mail and SMS, through the ``outbound_messages`` table.

Every message is written in the caller's transaction. With ``CAREBASE_MAIL_BACKEND=local`` (the
demo, tests) it stays there with status ``local``: a built-in inbox, nothing leaves the machine.
With ``smtp`` a ``delivery.send_email`` job is queued in the same transaction and sends it over
SMTP, retried with backoff; once sent, the body (which may hold a sign-in code or reset link) is
scrubbed. Full multi-channel notifications are the notifications domain's job; this is what
identity needs today.
"""

from __future__ import annotations

import uuid
from email.message import EmailMessage

import aiosmtplib
from sqlalchemy import Column, DateTime, String, Table, Text, func, select
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform import jobs
from carebase.platform.db import Database, current_tenant, metadata
from carebase.platform.ids import new_id
from carebase.platform.logging import get_logger
from carebase.settings import get_settings

log = get_logger("carebase.delivery")

outbound_messages = Table(
    "outbound_messages",
    metadata,
    # Generated here, so the request path needs INSERT only: it can never read anyone's codes back.
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=True),
    Column("channel", String(16), nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("subject", String(300), nullable=True),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),  # local | queued | sent
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True), nullable=True),
)


async def _keep(session: AsyncSession, channel: str, to: str, subject: str | None, body: str,
                status: str) -> uuid.UUID:
    message_id = new_id()
    await session.execute(outbound_messages.insert().values(
        id=message_id, tenant_id=current_tenant(session), channel=channel, recipient=to, subject=subject, body=body,
        status=status))
    return message_id


async def send_email(session: AsyncSession, to: str, subject: str, body: str) -> None:
    if get_settings().mail_backend == "smtp":
        message_id = await _keep(session, "email", to, subject, body, "queued")
        tenant = current_tenant(session)
        await jobs.defer(session, "delivery.send_email", message_id=str(message_id),
                         tenant_id=str(tenant) if tenant else None)
    else:
        await _keep(session, "email", to, subject, body, "local")


async def send_sms(session: AsyncSession, to: str, body: str) -> None:
    await _keep(session, "sms", to, None, body, "local")


@jobs.job("delivery.send_email")
async def _send_email_job(db: Database, message_id: str, tenant_id: str | None = None) -> None:
    settings = get_settings()
    async with db.transaction(owner=True) as session:
        row = (await session.execute(select(outbound_messages).where(outbound_messages.c.id == message_id)
                                     .with_for_update())).first()
        if row is None or row.status == "sent":
            return  # ran twice: the first run already sent it
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = settings.mail_from, row.recipient, row.subject or ""
        msg.set_content(row.body)
        await aiosmtplib.send(
            msg, hostname=settings.smtp_host, port=settings.smtp_port, start_tls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None, timeout=10)
        await session.execute(outbound_messages.update().where(outbound_messages.c.id == message_id)
                              .values(status="sent", sent_at=func.now(), body=""))
    log.info("email_sent", message_id=message_id)
