"""Outside records: what other systems sent about a patient (their encounters, conditions,
observations, immunizations, claims...) and the practitioners, organizations and locations those
records name, received through the FHIR API and kept exactly as they came.

They are not Carebase's chart. A diagnosis in the chart is coded by a Carebase clinician in
ICD-10-CM and signed; an outside record says what another system said, in its codes (often SNOMED
CT), under its authority. So they are kept beside the chart, searchable with it, never merged into
it: a clinician reads them as the outside records they are. Each record is its own event stream
(received, revised, retracted), sealed with its patient's key, so erasing a patient erases them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.audit import service as audit
from carebase.outside_records import events as ev
from carebase.outside_records import index
from carebase.outside_records.models import outside_records as t
from carebase.patients import service as patients
from carebase.platform import eventstore
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.db import batches, within
from carebase.platform.errors import Forbidden, Gone, NotFound, ValidationFailed
from carebase.platform.eventstore import NewEvent
from carebase.platform.ids import new_id

# The patients this transaction has already checked a record against (an import of one
# patient's history sends hundreds of records about them: one check, one audit entry).
_CHECKED = "outside_records.patients"


@dataclass
class OutsideRecord:
    id: uuid.UUID
    tenant_id: uuid.UUID
    resource_type: str
    patient_id: uuid.UUID | None
    resource: dict[str, Any]  # as received, without its id and the server's meta
    occurred_at: datetime | None  # its clinical date (see index.DATE_ELEMENTS)
    version: int
    received_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


@dataclass
class RecordVersion:
    version: int
    at: datetime
    change: str  # received | revised | retracted
    resource: dict[str, Any] | None  # None: retracted, or its patient was erased


@dataclass
class Criteria:
    """What a search asks; each list is ANDed, each inner list ORed."""
    resource_type: str
    patient_id: uuid.UUID | None = None
    ids: list[uuid.UUID] | None = None
    tokens: list[list[str]] = field(default_factory=list)  # index terms, see index.tokens: 'code=system|x'
    refs: list[list[str]] = field(default_factory=list)  # 'Encounter/<id>'
    occurred: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    updated: list[tuple[str, datetime, datetime]] = field(default_factory=list)


def _record(r) -> OutsideRecord:
    m = r._mapping
    return OutsideRecord(**{k: m[k] for k in OutsideRecord.__dataclass_fields__})


def _stored(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as kept: its id and the server's meta are the record's, not the sender's."""
    out = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    kept = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if kept:
        out["meta"] = kept
    return out


async def _patient_of(session: AsyncSession, principal: Principal, resource: dict[str, Any]) -> uuid.UUID | None:
    named = index.patient_reference(resource)
    if named is None:
        if resource["resourceType"] in index.STANDALONE:
            return None
        # A record about nobody in particular would be nobody's to read, or to erase.
        raise ValidationFailed(f"A {resource['resourceType']} must name the patient it is about "
                               "(subject or patient: Patient/<id>).", code="patient-required")
    patient_id = index.as_uuid(named)
    checked = session.info.setdefault(_CHECKED, set())
    if patient_id in checked:
        return patient_id
    try:
        patient = await patients.get_patient(session, principal, patient_id, "treatment") if patient_id else None
    except NotFound:
        patient = None
    if patient is None:
        raise ValidationFailed(f"The {resource['resourceType']} is about Patient/{named}, who is not a patient of "
                               "this organization. Send the Patient first.", code="unknown-patient")
    if patient.erased_at or patient.merged_into:
        raise ValidationFailed("That patient record is erased or merged; send records about the kept record.",
                               code="patient-inactive")
    checked.add(patient_id)
    return patient_id


def _check_text(resource: dict[str, Any]) -> None:
    # PostgreSQL's jsonb cannot hold a NUL character (FHIR strings may not contain one either).
    if "\\u0000" in json.dumps(resource):
        raise ValidationFailed("The resource contains a NUL character (\\u0000), which FHIR strings may not hold.",
                               code="nul-character")


async def receive(session: AsyncSession, principal: Principal, resource: dict[str, Any]) -> OutsideRecord:
    """Keep a record another system sent (already a valid FHIR resource); it gets a new id."""
    require(principal, "write:charts")
    tenant_id = require_tenant(principal)
    _check_text(resource)
    patient_id = await _patient_of(session, principal, resource)
    record_id = new_id()
    stored = _stored(resource)
    [event] = await eventstore.append(session, stream_type="outside_record", stream_id=record_id,
                                      tenant_id=tenant_id, expected_version=0, new_events=[NewEvent(ev.RECEIVED, {
                                          "resource_type": resource["resourceType"],
                                          "patient_id": str(patient_id) if patient_id else None,
                                          "by": str(principal.account_id)},
                                          phi={"resource": stored}, subject_id=patient_id)])
    # What the projector just wrote, without reading it back (an import receives thousands).
    return OutsideRecord(record_id, tenant_id, resource["resourceType"], patient_id, stored,
                         index.occurred_at(stored), event.version, event.recorded_at, event.recorded_at, None)


async def revise(session: AsyncSession, principal: Principal, record_id: uuid.UUID, resource: dict[str, Any],
                 expected_version: int | None = None) -> OutsideRecord:
    """Replace a record with the sender's corrected version (of the same patient)."""
    require(principal, "write:charts")
    current = await get(session, principal, record_id, resource["resourceType"])
    _check_text(resource)
    if await _patient_of(session, principal, resource) != current.patient_id:
        raise ValidationFailed("A record cannot move to another patient; retract it and send it again.",
                               code="patient-changed")
    await eventstore.append(session, stream_type="outside_record", stream_id=record_id, tenant_id=current.tenant_id,
                            expected_version=expected_version if expected_version is not None else current.version,
                            new_events=[NewEvent(ev.REVISED, {"by": str(principal.account_id)},
                                                 phi={"resource": _stored(resource)},
                                                 subject_id=current.patient_id)])
    return await _load(session, current.tenant_id, record_id)


async def retract(session: AsyncSession, principal: Principal, record_id: uuid.UUID, resource_type: str) -> None:
    """Withdraw a record sent in error: it answers as deleted, its history stays."""
    require(principal, "write:charts")
    current = await get(session, principal, record_id, resource_type)
    await eventstore.append(session, stream_type="outside_record", stream_id=record_id, tenant_id=current.tenant_id,
                            expected_version=current.version,
                            new_events=[NewEvent(ev.RETRACTED, {"by": str(principal.account_id)})])


async def _load(session: AsyncSession, tenant_id: uuid.UUID, record_id: uuid.UUID) -> OutsideRecord:
    r = (await session.execute(select(t).where(t.c.id == record_id, t.c.tenant_id == tenant_id))).first()
    if r is None:
        raise NotFound("No such outside record in your organization.", code="record-not-found")
    return _record(r)


def _reads_directory(principal: Principal) -> bool:
    """Who reads records about no patient (other organizations' practitioners, places): the
    care team and integrations (read:charts), and the rest of the staff (read:providers)."""
    return principal.can("read:charts") or (principal.is_staff and principal.can("read:providers"))


async def _may_read(session: AsyncSession, principal: Principal, patient_id: uuid.UUID | None) -> None:
    """The same rules, and the same audit, as reading the patient; a record about no patient
    (a practitioner, an organization) is the directory's."""
    if patient_id is None:
        if not _reads_directory(principal):
            raise Forbidden("Only staff read the directory of other organizations.", code="staff-only")
        return
    require(principal, "read:charts", "read:own_record")
    await patients.get_patient(session, principal, patient_id)


async def get(session: AsyncSession, principal: Principal, record_id: uuid.UUID,
              resource_type: str | None = None) -> OutsideRecord:
    """One record (of this resource type, when given); a retracted one answers 410."""
    found = await _load(session, require_tenant(principal), record_id)
    if resource_type is not None and found.resource_type != resource_type:
        raise NotFound(f"No such {resource_type} in your organization.", code="record-not-found")
    await _may_read(session, principal, found.patient_id)
    if found.deleted_at is not None:
        raise Gone(f"This {found.resource_type} was retracted by its sender.", code="record-retracted")
    return found


async def exists(session: AsyncSession, principal: Principal, record_id: uuid.UUID, resource_type: str) -> bool:
    """Whether this id is an outside record of that type here (retracted ones included), without
    reading it: the FHIR API asks before it tries Carebase's own records."""
    return (await session.execute(select(t.c.id).where(
        t.c.id == record_id, t.c.tenant_id == require_tenant(principal),
        t.c.resource_type == resource_type))).first() is not None


async def any_of(session: AsyncSession, principal: Principal, resource_type: str) -> bool:
    """Whether the organization holds any outside record of this type (most hold none: their
    searches need not look)."""
    return (await session.execute(select(t.c.id).where(
        t.c.tenant_id == require_tenant(principal), t.c.resource_type == resource_type).limit(1))).first() is not None


async def versions(session: AsyncSession, principal: Principal, record_id: uuid.UUID,
                   resource_type: str) -> list[RecordVersion]:
    """Every version of one record, oldest first, from its events (FHIR vread and history)."""
    found = await _load(session, require_tenant(principal), record_id)
    if found.resource_type != resource_type:
        raise NotFound(f"No such {resource_type} in your organization.", code="record-not-found")
    await _may_read(session, principal, found.patient_id)
    change = {ev.RECEIVED: "received", ev.REVISED: "revised", ev.RETRACTED: "retracted"}
    return [RecordVersion(event.version, event.recorded_at, change[event.type], resource)
            for event, resource in ev.replay(await eventstore.load(session, record_id))]


@dataclass
class TypeSummary:
    resource_type: str
    count: int
    latest: list[OutsideRecord]  # newest first


def label(resource: dict[str, Any]) -> str:
    """What a person reads a record as: its code's text or display, else its code."""
    for element in ("code", "vaccineCode", "medicationCodeableConcept", "type", "category", "name"):
        value = resource.get(element)
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            if value.get("text"):
                return value["text"]
            for coding in value.get("coding") or []:
                if coding.get("display") or coding.get("code"):
                    return coding.get("display") or coding["code"]
    return resource.get("resourceType", "Record")


async def summary(session: AsyncSession, principal: Principal, patient_id: uuid.UUID,
                  per_type: int = 5) -> list[TypeSummary]:
    """A patient's outside records by type (the chart's "Outside records"): how many, and the
    newest few of each. Reading it is an audited read of the patient."""
    require(principal, "read:charts", "read:own_record")
    patient = await patients.get_patient(session, principal, patient_id)
    conds = [t.c.tenant_id == require_tenant(principal), t.c.deleted_at.is_(None),
             t.c.patient_id.in_(await patients.record_ids(session, patient))]
    counts = dict((await session.execute(select(t.c.resource_type, func.count()).where(*conds)
                                         .group_by(t.c.resource_type))).all())
    if not counts:
        return []
    ranked = select(t, func.row_number().over(
        partition_by=t.c.resource_type, order_by=(t.c.occurred_at.desc().nulls_last(), t.c.id)).label("n")
    ).where(*conds).subquery()
    latest: dict[str, list[OutsideRecord]] = {}
    for r in (await session.execute(select(ranked).where(ranked.c.n <= per_type)
                                    .order_by(ranked.c.resource_type, ranked.c.n))).all():
        latest.setdefault(r.resource_type, []).append(_record(r))
    return [TypeSummary(kind, counts[kind], latest.get(kind, [])) for kind in sorted(counts)]


def _conditions(tenant_id: uuid.UUID, c: Criteria) -> list:
    conds = [t.c.tenant_id == tenant_id, t.c.resource_type == c.resource_type, t.c.deleted_at.is_(None)]
    if c.ids is not None:
        conds.append(t.c.id.in_(c.ids))
    for terms in c.tokens:
        conds.append(t.c.tokens.overlap(terms))
    for refs in c.refs:
        conds.append(t.c.refs.overlap(refs))
    conds += [within(t.c.occurred_at, *b) for b in c.occurred]
    conds += [within(t.c.updated_at, *b) for b in c.updated]
    return conds


async def find(session: AsyncSession, principal: Principal, c: Criteria, *, limit: int = 50, offset: int = 0,
               order: tuple[tuple[str, bool], ...] = (("occurred", True),), count: bool = True,
               audit_reads: bool = True) -> tuple[list[OutsideRecord], int | None]:
    """One page of records of one type and (with ``count``) how many match: one patient's (with
    the records merged into theirs), or, for staff, the whole organization's. Every patient shown
    is in the read audit; ``audit_reads=False`` when the caller shows only some of what it asked
    for, and puts those in the audit itself (``record_listed``)."""
    tenant_id = require_tenant(principal)
    conds = _conditions(tenant_id, c)
    patient = None
    if c.patient_id is not None:
        require(principal, "read:charts", "read:own_record")
        patient = await patients.get_patient(session, principal, c.patient_id)
    elif principal.can("read:charts"):
        pass  # the whole organization's
    elif c.resource_type in index.STANDALONE:
        if not _reads_directory(principal):
            return [], 0  # a patient searching the directory: Carebase's own, not other organizations'
        conds.append(t.c.patient_id.is_(None))
    else:
        require(principal, "read:own_record")
        patient = await patients.own_patient(session, principal)  # a patient's search covers their own
    if patient is not None:
        conds.append(t.c.patient_id.in_(await patients.record_ids(session, patient)))
    # ``order``: ("occurred" or "updated", newest first?) pairs, the first the strongest; ties by id.
    # Undated records count as the oldest, either way round (as the FHIR side's merge sorts them).
    columns = {"occurred": t.c.occurred_at, "updated": t.c.updated_at}
    by = [columns[key].desc().nulls_last() if newest else columns[key].asc().nulls_first() for key, newest in order]
    rows = (await session.execute(select(t).where(*conds).order_by(*by, t.c.id).limit(limit).offset(offset))).all()
    found = [_record(r) for r in rows]
    total = None
    if count:
        total = (await session.execute(select(func.count()).select_from(t).where(*conds))).scalar_one() \
            if len(found) == limit or offset else len(found)
    if patient is None and audit_reads:
        await record_listed(session, principal, c, [r.patient_id for r in found])
    return found, total


async def record_listed(session: AsyncSession, principal: Principal, c: Criteria,
                        patient_ids: list[uuid.UUID | None]) -> None:
    """The read audit of records shown from a search of the whole organization: their patients.
    (A search about one patient audited that patient when it opened the record.)"""
    if c.patient_id is None and principal.can("read:charts"):
        await audit.record_reads(session, principal, patient_ids=sorted({p for p in patient_ids if p}),
                                 record_type=c.resource_type, purpose=audit.purpose_of(principal, None))


async def export(session: AsyncSession, principal: Principal, *, since: datetime | None = None,
                 patient_ids: list[uuid.UUID] | None = None, types: list[str] | None = None,
                 about_patients: bool = False, batch: int = 1000):
    """Every record of the organization (or about these patients; ``about_patients``: only
    records about a patient), in batches by id, for a bulk export; each batch's patients are in
    the read audit (purpose: operations)."""
    require(principal, "read:charts")
    query = select(t).where(t.c.tenant_id == require_tenant(principal), t.c.deleted_at.is_(None))
    if about_patients:
        query = query.where(t.c.patient_id.is_not(None))
    if since is not None:
        query = query.where(t.c.updated_at >= since)
    if patient_ids is not None:
        query = query.where(t.c.patient_id.in_(patient_ids))
    if types is not None:
        query = query.where(t.c.resource_type.in_(types))
    async for rows in batches(session, query, t.c.id, batch):
        found = [_record(r) for r in rows]
        await audit.record_reads(session, principal, patient_ids=sorted({r.patient_id for r in found if r.patient_id}),
                                 record_type="OutsideRecord", purpose="operations")
        yield found


async def of_patient(session: AsyncSession, principal: Principal, patient_id: uuid.UUID) -> list[OutsideRecord]:
    """Every outside record about one patient (and the records merged into theirs), oldest first,
    with the directory entries they name: Patient/$everything."""
    require(principal, "read:charts", "read:own_record")
    patient = await patients.get_patient(session, principal, patient_id)
    tenant_id = require_tenant(principal)
    rows = (await session.execute(select(t).where(
        t.c.tenant_id == tenant_id, t.c.deleted_at.is_(None),
        t.c.patient_id.in_(await patients.record_ids(session, patient)))
        .order_by(t.c.occurred_at.asc().nulls_first(), t.c.id))).all()
    found = [_record(r) for r in rows]
    named = {ref.partition("/") for r in found for ref in index.references(r.resource)}
    ids = {index.as_uuid(rid) for kind, _, rid in named if kind in index.STANDALONE} - {None}
    if ids:
        rows = (await session.execute(select(t).where(
            t.c.tenant_id == tenant_id, t.c.deleted_at.is_(None), t.c.patient_id.is_(None),
            t.c.resource_type.in_(index.STANDALONE), t.c.id.in_(ids)))).all()
        found += [_record(r) for r in rows]
    return found


