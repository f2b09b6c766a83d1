"""Encounters and the chart: a clinician records a visit (complaint, ICD-10-CM diagnoses, CPT
procedures, vitals, allergies, problems, medications, lab results, plan, follow-up, note) and
signs it in the same step; a signed record is never edited in place, only amended, and every
amendment keeps what it replaced. Reading a chart is an audited read of the patient."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.audit import service as audit
from carebase.encounters import codes
from carebase.encounters import events as ev
from carebase.encounters.models import encounters
from carebase.patients import service as patients
from carebase.platform import eventstore
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.db import batches, within
from carebase.platform.errors import NotFound, ValidationFailed
from carebase.platform.eventstore import NewEvent
from carebase.platform.ids import new_id
from carebase.providers import service as providers

ENCOUNTER_TYPES = ("office_visit", "telemedicine", "emergency", "hospital", "lab", "imaging")
TYPE_LABELS = {"office_visit": "Office visit", "telemedicine": "Telemedicine", "emergency": "Emergency",
               "hospital": "Hospital", "lab": "Laboratory", "imaging": "Imaging"}
# The unit each recorded vital is kept in, as people read it (mmHg, °C, kg...).
VITAL_UNITS = {name: unit for name, (_, _, unit) in codes.VITAL_RANGES.items()}
AMENDABLE = (*ev.TEXTS, "diagnoses", "procedures")


@dataclass
class Encounter:
    id: uuid.UUID
    tenant_id: uuid.UUID
    patient_id: uuid.UUID
    provider_id: uuid.UUID
    appointment_id: uuid.UUID | None
    type: str
    occurred_at: datetime
    chief_complaint: str | None
    diagnoses: list
    procedures: list
    vitals: dict
    allergies: list
    problems: list
    medications: list
    lab_results: list
    treatment_plan: str | None
    follow_up_instructions: str | None
    note: str | None
    signed_by: uuid.UUID
    signed_at: datetime
    amendments: list
    status: str  # in-progress (an admitted stay) | finished
    ended_at: datetime | None
    visit_number: str | None
    version: int


def _encounter(r) -> Encounter:
    m = r._mapping
    return Encounter(**{k: m[k] for k in Encounter.__dataclass_fields__})


def _check(content: dict[str, Any]) -> dict[str, Any]:
    out = dict(content)
    if "diagnoses" in out:
        out["diagnoses"] = [codes.icd10cm(c) for c in out["diagnoses"]]
    if "procedures" in out:
        out["procedures"] = [codes.cpt(c) for c in out["procedures"]]
    if "vitals" in out:
        out["vitals"] = codes.vitals(out["vitals"] or {})
    return out


async def record_encounter(session: AsyncSession, principal: Principal, patient_id: uuid.UUID, *, type: str,
                           occurred_at: datetime | None = None, provider_id: uuid.UUID | None = None,
                           appointment_id: uuid.UUID | None = None, admission: str | None = None,
                           **content: Any) -> Encounter:
    """Record and sign an encounter (the caller signs it). ``admission``: the admitting system's
    visit number of a stay that begins now and stays in progress until ``discharge``."""
    require(principal, "write:charts")
    tenant_id = require_tenant(principal)
    patient = await patients.get_patient(session, principal, patient_id, "treatment")
    if patient.erased_at or patient.merged_into:
        raise ValidationFailed("This patient record is erased or merged; chart on the kept record.",
                               code="patient-inactive")
    if provider_id is None:
        mine = await providers.provider_of_account(session, principal, principal.account_id)
        if mine is None:
            raise ValidationFailed("Say which provider saw the patient (provider_id): your login is not "
                                   "linked to a provider.", code="provider-required")
        provider_id = mine.id
    else:
        await providers.get_provider(session, principal, provider_id)
    occurred_at = (occurred_at or datetime.now(UTC))
    if occurred_at.tzinfo is None:
        raise ValidationFailed("occurred_at needs a time zone offset.", code="naive-datetime")
    if occurred_at > datetime.now(UTC):
        raise ValidationFailed("An encounter cannot be recorded ahead of time.", code="encounter-in-future")
    checked = _check(content)
    encounter_id = new_id()
    await eventstore.append(session, stream_type="encounter", stream_id=encounter_id, tenant_id=tenant_id,
                            expected_version=0, new_events=[NewEvent(ev.RECORDED, {
                                "patient_id": str(patient_id), "provider_id": str(provider_id),
                                "appointment_id": str(appointment_id) if appointment_id else None, "type": type,
                                "occurred_at": occurred_at.astimezone(UTC).isoformat(),
                                "signed_by": str(principal.account_id),
                                **({"status": "in-progress", "visit_number": admission} if admission else {})},
                                phi=checked, subject_id=patient_id)])
    return await _load(session, tenant_id, encounter_id)


async def by_visit_number(session: AsyncSession, principal: Principal, visit_number: str) -> Encounter | None:
    """The stay an admitting system knows by this visit number (the latest, if it reused one)."""
    require(principal, "write:charts")
    r = (await session.execute(select(encounters).where(
        encounters.c.tenant_id == require_tenant(principal), encounters.c.visit_number == visit_number)
        .order_by(encounters.c.occurred_at.desc()).limit(1))).first()
    return _encounter(r) if r else None


async def discharge(session: AsyncSession, principal: Principal, encounter_id: uuid.UUID, *,
                    ended_at: datetime) -> Encounter:
    """End an admitted stay. Discharging one already discharged changes nothing (feeds resend)."""
    require(principal, "write:charts")
    e = await get_encounter(session, principal, encounter_id)
    if e.status == "finished":
        return e
    if ended_at.tzinfo is None:
        raise ValidationFailed("The discharge time needs a time zone offset.", code="naive-datetime")
    if ended_at < e.occurred_at:
        raise ValidationFailed("A stay cannot end before it began.", code="discharge-before-admission")
    await eventstore.append(session, stream_type="encounter", stream_id=e.id, tenant_id=e.tenant_id,
                            expected_version=e.version, new_events=[NewEvent(ev.DISCHARGED, {
                                "ended_at": ended_at.astimezone(UTC).isoformat()})])
    return await _load(session, e.tenant_id, e.id)


async def _load(session: AsyncSession, tenant_id: uuid.UUID, encounter_id: uuid.UUID) -> Encounter:
    r = (await session.execute(select(encounters).where(encounters.c.id == encounter_id,
                                                        encounters.c.tenant_id == tenant_id))).first()
    if r is None:
        raise NotFound("No such encounter in your organization.", code="encounter-not-found")
    return _encounter(r)


def _require_chart_reader(principal: Principal) -> None:
    # Clinical content is for the care team (and the patient, for their own): the front desk
    # finds and books patients but does not read their charts.
    require(principal, "read:charts", "read:own_record")


async def get_encounter(session: AsyncSession, principal: Principal, encounter_id: uuid.UUID) -> Encounter:
    _require_chart_reader(principal)
    e = await _load(session, require_tenant(principal), encounter_id)
    await patients.get_patient(session, principal, e.patient_id)  # the same rules (and audit) as the patient
    return e


@dataclass
class EncounterVersion:
    version: int
    at: datetime
    change: str  # created | updated
    encounter: Encounter


async def versions(session: AsyncSession, principal: Principal, encounter_id: uuid.UUID) -> list[EncounterVersion]:
    """Every version of one encounter, oldest first, rebuilt from its events (FHIR vread and
    history): the signed original, then each amendment and the discharge."""
    current = await get_encounter(session, principal, encounter_id)  # the same rules, audited
    return [EncounterVersion(event.version, event.recorded_at, "created" if event.type == ev.RECORDED else "updated",
                             Encounter(**{k: state[k] for k in Encounter.__dataclass_fields__}))
            for event, state in ev.replay(await eventstore.load(session, current.id))]


async def amend(session: AsyncSession, principal: Principal, encounter_id: uuid.UUID, *, field: str, value: Any,
                reason: str, expected_version: int | None = None) -> Encounter:
    """Correct a signed encounter: the new value shows, the old one stays in the amendments."""
    require(principal, "write:charts")
    e = await get_encounter(session, principal, encounter_id)
    if field not in AMENDABLE:
        raise ValidationFailed(f"{field!r} cannot be amended; amend one of: {', '.join(AMENDABLE)}.",
                               code="not-amendable")
    if field in ev.TEXTS and value is not None and not isinstance(value, str):
        raise ValidationFailed(f"{field} takes text.", code="bad-amendment")
    if field in ("diagnoses", "procedures") and not (isinstance(value, list)
                                                     and all(isinstance(v, str) for v in value)):
        raise ValidationFailed(f"{field} takes a list of codes.", code="bad-amendment")
    checked = _check({field: value})[field]
    await eventstore.append(session, stream_type="encounter", stream_id=e.id, tenant_id=e.tenant_id,
                            expected_version=expected_version if expected_version is not None else e.version,
                            new_events=[NewEvent(ev.AMENDED, {"field": field, "by": str(principal.account_id)},
                                                 phi={"previous": getattr(e, field), "value": checked,
                                                      "reason": reason}, subject_id=e.patient_id)])
    return await _load(session, e.tenant_id, e.id)


async def _encounters_of(session: AsyncSession, tenant_id: uuid.UUID,
                         patient_ids: list[uuid.UUID]) -> list[Encounter]:
    rows = (await session.execute(select(encounters).where(
        encounters.c.tenant_id == tenant_id, encounters.c.patient_id.in_(patient_ids))
        .order_by(encounters.c.occurred_at.desc(), encounters.c.id))).all()
    return [_encounter(r) for r in rows]


def _union(items: list[tuple[datetime, list]], key: str) -> list[dict]:
    seen: dict[str, dict] = {}
    for at, entries in sorted(items, key=lambda x: x[0]):
        for entry in entries:
            k = str(entry.get(key) if isinstance(entry, dict) else entry).lower()
            seen[k] = {**(entry if isinstance(entry, dict) else {key: entry}), "last_recorded": at.isoformat()}
    return sorted(seen.values(), key=lambda x: x["last_recorded"], reverse=True)


async def find_encounters(session: AsyncSession, principal: Principal, *, patient_id: uuid.UUID | None = None,
                          occurred: list[tuple[str, datetime, datetime]] = (), types: list[str] | None = None,
                          statuses: list[str] | None = None, limit: int = 50, offset: int = 0, newest_first: bool = True) -> tuple[list[Encounter], int]:
    """One page of encounters (newest first unless asked otherwise) and how many match: one patient's (with the records
    merged into theirs), or the whole organization's; ``occurred`` as FHIR date prefixes read.
    Every patient shown is in the read audit."""
    _require_chart_reader(principal)
    tenant_id = require_tenant(principal)
    conds = [encounters.c.tenant_id == tenant_id]
    if patient_id is None and not principal.can("read:charts"):
        patient = await patients.own_patient(session, principal)  # a patient's search covers their own
    elif patient_id is not None:
        patient = await patients.get_patient(session, principal, patient_id)
    else:
        patient = None
    if patient is not None:
        conds.append(encounters.c.patient_id.in_(await patients.record_ids(session, patient)))
    conds += [within(encounters.c.occurred_at, *b) for b in occurred]
    if types is not None:
        conds.append(encounters.c.type.in_(types))
    if statuses is not None:
        conds.append(encounters.c.status.in_(statuses))
    total = (await session.execute(select(func.count()).select_from(encounters).where(*conds))).scalar_one()
    when = encounters.c.occurred_at.desc() if newest_first else encounters.c.occurred_at
    rows = (await session.execute(select(encounters).where(*conds).order_by(when, encounters.c.id)
                                  .limit(limit).offset(offset))).all()
    found = [_encounter(r) for r in rows]
    if patient is None:
        await audit.record_reads(session, principal, patient_ids=sorted({e.patient_id for e in found}),
                                 record_type="Encounter", purpose=audit.purpose_of(principal, None))
    return found, total


async def export_encounters(session: AsyncSession, principal: Principal, *, since: datetime | None = None,
                            patient_ids: list[uuid.UUID] | None = None, batch: int = 1000):
    """Every encounter of the organization (or of these patients), in batches by id, for a bulk
    export; each batch's patients are in the read audit (purpose: operations)."""
    require(principal, "read:charts")
    query = select(encounters).where(encounters.c.tenant_id == require_tenant(principal))
    if since is not None:
        query = query.where(encounters.c.signed_at >= since)
    if patient_ids is not None:
        query = query.where(encounters.c.patient_id.in_(patient_ids))
    async for rows in batches(session, query, encounters.c.id, batch):
        found = [_encounter(r) for r in rows]
        await audit.record_reads(session, principal, patient_ids=sorted({e.patient_id for e in found}),
                                 record_type="Encounter", purpose="operations")
        yield found


async def patients_seen_by(session: AsyncSession, principal: Principal, provider_id: uuid.UUID) -> list[uuid.UUID]:
    """The patients a provider has seen (their panel): whoever has an encounter with them."""
    require(principal, "read:charts")
    rows = (await session.execute(select(encounters.c.patient_id).where(
        encounters.c.tenant_id == require_tenant(principal), encounters.c.provider_id == provider_id)
        .distinct())).scalars().all()
    return sorted(rows)


async def chart(session: AsyncSession, principal: Principal, patient_id: uuid.UUID | None = None) -> dict[str, Any]:
    """A patient's chart: the encounter timeline (newest first), their diagnoses, vitals over time,
    allergies, problems and medications, including what was recorded under records merged into
    this one. ``patient_id`` None: the caller's own chart."""
    if patient_id is None:
        patient = await patients.own_patient(session, principal)
    else:
        _require_chart_reader(principal)
        patient = await patients.get_patient(session, principal, patient_id)
    while patient.merged_into:  # a merged id leads to the kept record's chart (its patient_id says which)
        patient = await patients.get_patient(session, principal, patient.merged_into)
    # Encounters recorded under records later merged into this one belong to this chart too.
    found = await _encounters_of(session, patient.tenant_id, await patients.record_ids(session, patient))
    return {
        "patient": patient,
        "encounters": found,
        "diagnoses": _union([(e.occurred_at, e.diagnoses) for e in found], "code"),
        "allergies": _union([(e.occurred_at, e.allergies) for e in found], "substance"),
        "problems": _union([(e.occurred_at, e.problems) for e in found], "name"),
        "medications": _union([(e.occurred_at, e.medications) for e in found], "name"),
        "vitals": [{"at": e.occurred_at.isoformat(), **e.vitals} for e in sorted(found, key=lambda e: e.occurred_at)
                   if e.vitals],
    }
