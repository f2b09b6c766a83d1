"""The read audit: every read of a patient's data leaves a row here, in the same transaction as
the read, so a read that happened is a read that was logged."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.audit.models import audit_reads
from carebase.platform import context
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.errors import NotFound, ValidationFailed

# HL7 v3 PurposeOfUse, the short names: treatment, payment, operations, patient request, emergency.
PURPOSES = ("treatment", "payment", "operations", "patient-request", "emergency", "legal")


@dataclass
class ReadRecord:
    id: int
    actor_account_id: uuid.UUID
    actor_roles: str
    patient_id: uuid.UUID
    record_type: str
    record_id: uuid.UUID | None
    purpose: str
    request_id: str | None
    at: datetime


def _record(r) -> ReadRecord:
    return ReadRecord(**{k: getattr(r, k) for k in ReadRecord.__dataclass_fields__})


def purpose_of(principal: Principal, requested: str | None) -> str:
    if requested is None:
        return "patient-request" if "patient" in principal.roles and not principal.is_staff else "treatment"
    if requested not in PURPOSES:
        raise ValidationFailed(f"Purpose of use must be one of: {', '.join(PURPOSES)}.", code="bad-purpose")
    return requested


async def record_reads(session: AsyncSession, principal: Principal, *, patient_ids: list[uuid.UUID],
                       record_type: str, record_id: uuid.UUID | None = None, purpose: str) -> None:
    if not patient_ids:
        return
    tenant_id = require_tenant(principal)
    now = datetime.now(UTC)
    rid = context.get().request_id or None
    await session.execute(insert(audit_reads), [
        {"tenant_id": tenant_id, "actor_account_id": principal.account_id, "actor_roles": ",".join(principal.roles),
         "patient_id": pid, "record_type": record_type, "record_id": record_id, "purpose": purpose,
         "request_id": rid, "at": now}
        for pid in patient_ids
    ])


async def get_read(session: AsyncSession, principal: Principal, read_id: int) -> ReadRecord:
    require(principal, "read:audit")
    tenant_id = require_tenant(principal)
    r = (await session.execute(select(audit_reads).where(audit_reads.c.tenant_id == tenant_id,
                                                         audit_reads.c.id == read_id))).first()
    if r is None:
        raise NotFound("No such audit record in your organization.", code="audit-record-not-found")
    return _record(r)


async def list_reads(session: AsyncSession, principal: Principal, *, patient_id: uuid.UUID | None,
                     actor_account_id: uuid.UUID | None, before: int | None, limit: int) -> list[ReadRecord]:
    require(principal, "read:audit")
    tenant_id = require_tenant(principal)
    q = select(audit_reads).where(audit_reads.c.tenant_id == tenant_id)
    if patient_id:
        q = q.where(audit_reads.c.patient_id == patient_id)
    if actor_account_id:
        q = q.where(audit_reads.c.actor_account_id == actor_account_id)
    if before:
        q = q.where(audit_reads.c.id < before)
    rows = (await session.execute(q.order_by(audit_reads.c.id.desc()).limit(limit))).all()
    return [_record(r) for r in rows]
