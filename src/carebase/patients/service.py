"""The patient register: create, read (always audited), correct, erase.

Reads go through ``get_patient``/``search_patients`` only, and each records who read whom and
why in the read audit before returning anything.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.audit import service as audit
from carebase.patients import events as ev
from carebase.patients.models import patients
from carebase.platform import eventstore, realtime
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.errors import Conflict, NotFound, ValidationFailed
from carebase.platform.eventstore import NewEvent
from carebase.platform.ids import new_id


# Live register updates for front desks and clinicians (ids only; details via the audited API).
realtime.topic("patients", "read:patients")


async def _announce(session: AsyncSession, tenant_id: uuid.UUID, kind: str, patient_id: uuid.UUID) -> None:
    await realtime.publish(session, f"tenant:{tenant_id}:patients", {"type": kind, "patient_id": str(patient_id)})


@dataclass
class Patient:
    id: uuid.UUID
    tenant_id: uuid.UUID
    mrn: str
    given_name: str | None
    family_name: str | None
    birth_date: date | None
    sex: str | None
    phone: str | None
    email: str | None
    account_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None
    version: int


def _patient(r) -> Patient:
    return Patient(r.id, r.tenant_id, r.mrn, r.given_name, r.family_name, r.birth_date, r.sex, r.phone, r.email,
                   r.account_id, r.created_at, r.updated_at, r.erased_at, r.version)


def _check_birth_date(d: date | None) -> None:
    if d is not None and (d > datetime.now(UTC).date() or d.year < 1880):
        raise ValidationFailed("The birth date must be in the past (and after 1880).", code="bad-birth-date")


async def _load(session: AsyncSession, tenant_id: uuid.UUID, patient_id: uuid.UUID) -> Patient:
    r = (await session.execute(select(patients).where(patients.c.id == patient_id,
                                                      patients.c.tenant_id == tenant_id))).first()
    if r is None:
        raise NotFound("No such patient in your organization.", code="patient-not-found")
    return _patient(r)


async def register_patient(session: AsyncSession, principal: Principal, *, given_name: str, family_name: str,
                           birth_date: date, sex: str, phone: str | None, email: str | None, mrn: str | None,
                           account_id: uuid.UUID | None) -> Patient:
    require(principal, "write:patients")
    tenant_id = require_tenant(principal)
    _check_birth_date(birth_date)
    patient_id = new_id()
    mrn = mrn or "P" + patient_id.hex[-8:].upper()
    taken = (await session.execute(select(patients.c.id).where(patients.c.tenant_id == tenant_id,
                                                               patients.c.mrn == mrn))).first()
    if taken:
        raise Conflict(f"Medical record number {mrn} is already in use here.", code="mrn-taken")
    await eventstore.append(
        session, stream_type="patient", stream_id=patient_id, tenant_id=tenant_id, expected_version=0,
        new_events=[NewEvent(ev.REGISTERED, {"mrn": mrn, "sex": sex,
                                             "account_id": str(account_id) if account_id else None},
                             phi={"given_name": given_name, "family_name": family_name,
                                  "birth_date": birth_date.isoformat(), "phone": phone, "email": email})])
    await _announce(session, tenant_id, "patient.registered", patient_id)
    return await _load(session, tenant_id, patient_id)


async def get_patient(session: AsyncSession, principal: Principal, patient_id: uuid.UUID,
                      purpose: str | None = None) -> Patient:
    tenant_id = require_tenant(principal)
    patient = await _load(session, tenant_id, patient_id)
    if not principal.can("read:patients"):
        # A patient may read their own record and nobody else's (404, not 403: no probing).
        if not (principal.can("read:own_record") and patient.account_id == principal.account_id):
            raise NotFound("No such patient in your organization.", code="patient-not-found")
    await audit.record_reads(session, principal, patient_ids=[patient.id], record_type="Patient",
                             record_id=patient.id, purpose=audit.purpose_of(principal, purpose))
    return patient


async def search_patients(session: AsyncSession, principal: Principal, *, q: str | None, limit: int,
                          purpose: str | None = None) -> list[Patient]:
    require(principal, "read:patients")
    tenant_id = require_tenant(principal)
    query = select(patients).where(patients.c.tenant_id == tenant_id, patients.c.erased_at.is_(None))
    if q:
        like = f"%{q.replace('%', '').replace('_', '')}%"
        query = query.where(or_(patients.c.family_name.ilike(like), patients.c.given_name.ilike(like),
                                patients.c.mrn.ilike(like)))
    rows = (await session.execute(query.order_by(patients.c.family_name, patients.c.id).limit(limit))).all()
    found = [_patient(r) for r in rows]
    await audit.record_reads(session, principal, patient_ids=[p.id for p in found], record_type="Patient",
                             purpose=audit.purpose_of(principal, purpose))
    return found


async def update_patient(session: AsyncSession, principal: Principal, patient_id: uuid.UUID, *,
                         expected_version: int | None, changes: dict) -> Patient:
    require(principal, "write:patients")
    tenant_id = require_tenant(principal)
    patient = await _load(session, tenant_id, patient_id)
    if patient.erased_at:
        raise Conflict("This patient's data was erased.", code="patient-erased")
    _check_birth_date(changes.get("birth_date"))
    phi = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in changes.items() if k in ev.PHI_FIELDS}
    data = {k: v for k, v in changes.items() if k == "sex"}
    if not phi and not data:
        return patient
    await eventstore.append(session, stream_type="patient", stream_id=patient_id, tenant_id=tenant_id,
                            expected_version=expected_version if expected_version is not None else patient.version,
                            new_events=[NewEvent(ev.UPDATED, data, phi=phi or None)])
    await _announce(session, tenant_id, "patient.updated", patient_id)
    return await _load(session, tenant_id, patient_id)


async def erase_patient(session: AsyncSession, principal: Principal, patient_id: uuid.UUID) -> None:
    """GDPR erasure: crypto-shred the patient's key and scrub the register; the log keeps its shape."""
    require(principal, "erase:patients")
    tenant_id = require_tenant(principal)
    patient = await _load(session, tenant_id, patient_id)
    if patient.erased_at:
        return
    await eventstore.append(session, stream_type="patient", stream_id=patient_id, tenant_id=tenant_id,
                            expected_version=patient.version, new_events=[NewEvent(ev.ERASED, {})])
    await eventstore.shred_subject(session, patient_id)
    await _announce(session, tenant_id, "patient.erased", patient_id)
