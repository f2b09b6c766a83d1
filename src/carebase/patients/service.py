"""The patient register: register (with duplicate checks), find, read (always audited), correct,
consents, e-mail verification, merge and erase.

Reads go through ``get_patient``/``search_patients``/``own_patient`` only, and each records who
read whom and why in the read audit before returning anything.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import Table, and_, false, func, literal_column, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.audit import service as audit
from carebase.patients import events as ev
from carebase.patients.models import CONSENT_KINDS, patient_email_verifications, patients, patients_visible
from carebase.platform import crypto, delivery, eventstore, realtime
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.db import batches, set_context, within
from carebase.platform.errors import Conflict, NotFound, ValidationFailed
from carebase.platform.eventstore import NewEvent
from carebase.platform.ids import new_id
from carebase.settings import get_settings, public_base_url

EMAIL_VERIFICATION_TTL = timedelta(days=3)

# Live register updates for front desks and clinicians (ids only; details via the audited API).
realtime.topic("patients", "read:patients")


async def _announce(session: AsyncSession, tenant_id: uuid.UUID, kind: str, patient_id: uuid.UUID) -> None:
    await realtime.publish(session, f"tenant:{tenant_id}:patients", {"type": kind, "patient_id": str(patient_id)})


@dataclass
class Patient:
    id: uuid.UUID
    tenant_id: uuid.UUID
    mrn: str
    global_id: str | None
    given_name: str | None
    family_name: str | None
    birth_date: date | None
    gender: str
    phone: str | None
    email: str | None
    email_verified_at: datetime | None
    country: str | None
    timezone: str | None
    preferred_language: str | None
    emergency_contact_name: str | None
    emergency_contact_relationship: str | None
    emergency_contact_phone: str | None
    gdpr_consent_at: datetime | None
    gdpr_withdrawn_at: datetime | None
    hipaa_consent_at: datetime | None
    hipaa_withdrawn_at: datetime | None
    data_sharing_consent_at: datetime | None
    data_sharing_withdrawn_at: datetime | None
    government_id_system: str | None
    government_id_last4: str | None
    account_id: uuid.UUID | None
    merged_into: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None
    version: int

    def consents(self) -> dict[str, dict[str, Any]]:
        out = {}
        for kind in CONSENT_KINDS:
            given_at, withdrawn_at = getattr(self, f"{kind}_consent_at"), getattr(self, f"{kind}_withdrawn_at")
            out[kind] = {"given": given_at is not None and withdrawn_at is None, "given_at": given_at,
                         "withdrawn_at": withdrawn_at}
        return out


_FIELDS = [f.name for f in fields(Patient)]


def _patient(r) -> Patient:
    m = r._mapping
    return Patient(**{f: m[f] for f in _FIELDS})


@dataclass
class DuplicateCandidate:
    patient: Patient
    matched_on: list[str]


class PossibleDuplicates(Conflict):
    def __init__(self, candidates: list[DuplicateCandidate]):
        # keep_writes: the refusal itself showed these patients, and that read stays audited.
        super().__init__(
            f"{len(candidates)} patient(s) here look like the same person. Check them; to register anyway, "
            "send the request again with \"allow_duplicate\": true.", code="possible-duplicates", keep_writes=True,
            candidates=[{"id": str(c.patient.id), "global_id": c.patient.global_id, "mrn": c.patient.mrn,
                         "given_name": c.patient.given_name, "family_name": c.patient.family_name,
                         "birth_date": c.patient.birth_date.isoformat() if c.patient.birth_date else None,
                         "matched_on": c.matched_on} for c in candidates])
        self.candidates = candidates


def age_in_years(birth_date: date | None, today: date | None = None) -> int | None:
    """Completed years on ``today`` (default: today); None without a birth date."""
    if birth_date is None:
        return None
    today = today or date.today()
    return today.year - birth_date.year - ((today.month, today.day) < (birth_date.month, birth_date.day))


def _check_birth_date(d: date | None) -> None:
    if d is not None and (d > datetime.now(UTC).date() or d.year < 1880):
        raise ValidationFailed("The birth date must be in the past (and after 1880).", code="bad-birth-date")


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def global_id_for(country: str | None, number: int) -> str:
    """``WXQ-<country>-<8 digits><check digit>``: unique because the number comes from a sequence,
    and the Luhn digit catches a mistyped digit or two swapped ones."""
    digits = f"{number:08d}"
    return f"WXQ-{country or 'XX'}-{digits}{_luhn_digit(digits)}"


def _government_id(system: str, value: str) -> tuple[str, str]:
    normalized = re.sub(r"[\s-]", "", value).upper()
    return crypto.keyring().keyed_hash(f"government-id:{system}:{normalized}"), normalized[-4:]


async def _load(session: AsyncSession, tenant_id: uuid.UUID, patient_id: uuid.UUID) -> Patient:
    r = (await session.execute(select(patients).where(patients.c.id == patient_id,
                                                      patients.c.tenant_id == tenant_id))).first()
    if r is None:
        raise NotFound("No such patient in your organization.", code="patient-not-found")
    return _patient(r)


def _active():
    return and_(patients.c.erased_at.is_(None), patients.c.merged_into.is_(None))


async def find_duplicates(session: AsyncSession, principal: Principal, *, given_name: str, family_name: str,
                          birth_date: date, phone: str | None, email: str | None) -> list[DuplicateCandidate]:
    """Patients of this tenant with the same name and birth date, or the same phone or e-mail."""
    require(principal, "write:patients")
    tenant_id = require_tenant(principal)
    folded = ev.fold(f"{given_name} {family_name}")
    same_person = and_(patients.c.search_name == folded, patients.c.birth_date == birth_date)
    conditions = [same_person]
    if phone:
        conditions.append(patients.c.phone == phone)
    if email:
        conditions.append(func.lower(patients.c.email) == email.lower())
    rows = (await session.execute(select(patients).where(patients.c.tenant_id == tenant_id, _active(),
                                                         or_(*conditions)).limit(20))).all()
    found = []
    for r in rows:
        p = _patient(r)
        matched = []
        if r.search_name == folded and p.birth_date == birth_date:
            matched.append("name+birth_date")
        if phone and p.phone == phone:
            matched.append("phone")
        if email and p.email and p.email.lower() == email.lower():
            matched.append("email")
        found.append(DuplicateCandidate(p, matched))
    await audit.record_reads(session, principal, patient_ids=[c.patient.id for c in found], record_type="Patient",
                             purpose="operations")
    return found


def _phi_of(values: dict[str, Any]) -> dict[str, Any]:
    phi = {}
    for k in ev.PHI_FIELDS:
        if k in values:
            v = values[k]
            phi[k] = v.isoformat() if isinstance(v, date) else v
    return phi


def _flatten_contact(values: dict[str, Any]) -> dict[str, Any]:
    if "emergency_contact" in values:
        contact = values.pop("emergency_contact") or {}
        values["emergency_contact_name"] = contact.get("name")
        values["emergency_contact_relationship"] = contact.get("relationship")
        values["emergency_contact_phone"] = contact.get("phone")
    return values


def _consent_events(consents: dict[str, bool | None] | None) -> list[NewEvent]:
    return [NewEvent(ev.CONSENT_CHANGED, {"kind": kind, "given": given})
            for kind, given in (consents or {}).items() if given is not None]


async def register_patient(session: AsyncSession, principal: Principal, *, given_name: str, family_name: str,
                           birth_date: date, gender: str = "U", phone: str | None = None, email: str | None = None,
                           country: str | None = None, timezone: str | None = None,
                           preferred_language: str | None = "en", emergency_contact: dict | None = None,
                           government_id: dict | None = None, consents: dict | None = None,
                           mrn: str | None = None, account_id: uuid.UUID | None = None,
                           allow_duplicate: bool = False) -> Patient:
    require(principal, "write:patients")
    tenant_id = require_tenant(principal)
    _check_birth_date(birth_date)
    if not allow_duplicate:
        candidates = await find_duplicates(session, principal, given_name=given_name, family_name=family_name,
                                           birth_date=birth_date, phone=phone, email=email)
        if candidates:
            raise PossibleDuplicates(candidates)
    patient_id = new_id()
    mrn = mrn or "P" + patient_id.hex[-8:].upper()
    taken = (await session.execute(select(patients.c.id).where(patients.c.tenant_id == tenant_id,
                                                               patients.c.mrn == mrn))).first()
    if taken:
        raise Conflict(f"Medical record number {mrn} is already in use here.", code="mrn-taken")
    number = (await session.execute(text("SELECT nextval('patient_global_numbers')"))).scalar_one()
    data: dict[str, Any] = {"mrn": mrn, "global_id": global_id_for(country, number), "gender": gender,
                            "country": country, "timezone": timezone, "preferred_language": preferred_language,
                            "account_id": str(account_id) if account_id else None}
    if government_id:
        digest, last4 = _government_id(government_id["system"], government_id["value"])
        data.update(government_id_system=government_id["system"], government_id_hash=digest,
                    government_id_last4=last4)
    values = _flatten_contact({"given_name": given_name, "family_name": family_name, "birth_date": birth_date,
                               "phone": phone, "email": email, "emergency_contact": emergency_contact})
    await eventstore.append(
        session, stream_type="patient", stream_id=patient_id, tenant_id=tenant_id, expected_version=0,
        new_events=[NewEvent(ev.REGISTERED, data, phi=_phi_of(values)), *_consent_events(consents)])
    if email:
        await _send_email_verification(session, tenant_id, patient_id, email)
    await _announce(session, tenant_id, "patient.registered", patient_id)
    return await _load(session, tenant_id, patient_id)


def _may_read(principal: Principal, patient: Patient) -> bool:
    return principal.can("read:patients") or (
        principal.can("read:own_record") and patient.account_id is not None
        and patient.account_id == principal.account_id)


async def get_patient(session: AsyncSession, principal: Principal, patient_id: uuid.UUID,
                      purpose: str | None = None) -> Patient:
    """One patient. A merged record comes back as it is, with ``merged_into`` set (the API redirects)."""
    tenant_id = require_tenant(principal)
    patient = await _load(session, tenant_id, patient_id)
    if not _may_read(principal, patient):
        # A patient may read their own record and nobody else's (404, not 403: no probing).
        raise NotFound("No such patient in your organization.", code="patient-not-found")
    await audit.record_reads(session, principal, patient_ids=[patient.id], record_type="Patient",
                             record_id=patient.id, purpose=audit.purpose_of(principal, purpose))
    return patient


_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PHONE = re.compile(r"^\+?[0-9 ()-]{7,20}$")


def _name_query(q: str) -> str | None:
    """'Ash Ver' -> 'ash:* & ver:*' (every word a prefix), safe for to_tsquery."""
    words = ev.fold(q).split()
    return " & ".join(f"{w}:*" for w in words) or None


def _search_condition(t: Table, q: str):
    q = q.strip()
    if q.upper().startswith("WXQ-"):
        return t.c.global_id == q.upper()
    if _UUID.match(q):
        return t.c.id == uuid.UUID(q)
    if "@" in q:
        return func.lower(t.c.email) == q.lower()
    if _DATE.match(q):
        try:
            return t.c.birth_date == date.fromisoformat(q)
        except ValueError:
            raise ValidationFailed(f"{q!r} is not a real date.", code="bad-date") from None
    if _PHONE.match(q) and sum(c.isdigit() for c in q) >= 7:
        digits = "".join(c for c in q if c.isdigit())
        return or_(t.c.phone == "+" + digits, t.c.phone.like(f"%{digits}"))
    names = _name_query(q)
    by_mrn = func.upper(t.c.mrn) == q.upper()
    if names is None:
        return by_mrn
    return or_(t.c.search_vector.op("@@")(func.to_tsquery(literal_column("'simple'"), names)), by_mrn)


async def search_patients(session: AsyncSession, principal: Principal, *, q: str | None = None,
                          birth_date: date | None = None, government_id: tuple[str, str] | None = None,
                          limit: int = 50, purpose: str | None = None) -> list[Patient]:
    """Find patients by name prefix (accents and case ignored), phone, e-mail, global id, MRN, id
    or birth date (all through ``q``), narrowed by ``birth_date`` and a government identifier."""
    require(principal, "read:patients")
    tenant_id = require_tenant(principal)
    t = patients_visible  # the indexed path (see models); the tenant filter stays explicit as well
    query = select(t).where(t.c.tenant_id == tenant_id, t.c.erased_at.is_(None), t.c.merged_into.is_(None))
    if q and q.strip():
        query = query.where(_search_condition(t, q))
    if birth_date is not None:
        query = query.where(t.c.birth_date == birth_date)
    if government_id is not None:
        digest, _ = _government_id(*government_id)
        query = query.where(t.c.government_id_hash == digest)
    rows = (await session.execute(query.order_by(t.c.family_name, t.c.given_name, t.c.id).limit(limit))).all()
    found = [_patient(r) for r in rows]
    await audit.record_reads(session, principal, patient_ids=[p.id for p in found], record_type="Patient",
                             purpose=audit.purpose_of(principal, purpose))
    return found


DateBound = tuple[str, Any, Any]  # (FHIR prefix eq|ne|gt|lt|ge|le, start, end exclusive)
SORTABLE = {"family": "family_name", "given": "given_name", "birthdate": "birth_date", "updated": "updated_at",
            "gender": "gender"}


@dataclass
class Criteria:
    """A structured patient search (the FHIR API's): every field narrows (AND); the values within
    ``genders`` and ``ids`` are alternatives (OR). Name parts match as prefixes."""
    ids: list[uuid.UUID] | None = None
    names: list[str] = field(default_factory=list)  # any part of the name, accents and case ignored
    families: list[str] = field(default_factory=list)
    givens: list[str] = field(default_factory=list)
    birth_dates: list[DateBound] = field(default_factory=list)
    genders: list[str] | None = None
    identifiers: list[str] = field(default_factory=list)  # MRN or global id
    phones: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    updated: list[DateBound] = field(default_factory=list)


@dataclass
class PatientPage:
    patients: list[Patient]
    total: int | None  # how many match in all (None: not counted)
    more: bool  # whether a page follows this one


async def find_patients(session: AsyncSession, principal: Principal, criteria: Criteria, *,
                        sort: list[tuple[str, bool]] = (), limit: int = 50, offset: int = 0,
                        count: bool = False, purpose: str | None = None) -> PatientPage:
    """One page of the patients matching ``criteria``; merged and erased records are left out.
    ``sort``: (a key of SORTABLE, descending) pairs. The total comes with the last page, where it
    costs nothing, and otherwise only when ``count`` asks for it: counting every match of a common
    name prefix costs more than the page itself."""
    require(principal, "read:patients", "read:own_record")
    tenant_id = require_tenant(principal)
    t = patients_visible
    conds = [t.c.tenant_id == tenant_id, t.c.erased_at.is_(None), t.c.merged_into.is_(None)]
    if not principal.can("read:patients"):
        conds.append(t.c.account_id == principal.account_id)  # a patient finds only themselves
    if criteria.ids is not None:
        conds.append(t.c.id.in_(criteria.ids))
    for name in criteria.names:
        words = _name_query(name)
        if words:
            conds.append(t.c.search_vector.op("@@")(func.to_tsquery(literal_column("'simple'"), words)))
    conds += [func.lower(t.c.family_name).startswith(v.lower(), autoescape=True) for v in criteria.families]
    conds += [func.lower(t.c.given_name).startswith(v.lower(), autoescape=True) for v in criteria.givens]
    conds += [within(t.c.birth_date, *b) for b in criteria.birth_dates]
    conds += [within(t.c.updated_at, *b) for b in criteria.updated]
    if criteria.genders is not None:
        conds.append(t.c.gender.in_(criteria.genders))
    for ident in criteria.identifiers:
        conds.append(or_(func.upper(t.c.mrn) == ident.upper(), t.c.global_id == ident.upper()))
    for phone in criteria.phones:
        digits = "".join(c for c in phone if c.isdigit())
        conds.append(or_(t.c.phone == "+" + digits, t.c.phone.like(f"%{digits}")) if digits else false())
    conds += [func.lower(t.c.email) == v.lower() for v in criteria.emails]
    order = [getattr(t.c, SORTABLE[key]).desc() if desc else getattr(t.c, SORTABLE[key]) for key, desc in sort]
    rows = (await session.execute(select(t).where(*conds).order_by(*order, t.c.family_name, t.c.given_name, t.c.id)
                                  .limit(limit + 1).offset(offset))).all()
    if len(rows) <= limit and (rows or offset == 0):
        counted = offset + len(rows)  # the last page: the total is known without counting
    elif count:
        counted = (await session.execute(select(func.count()).select_from(t).where(*conds))).scalar_one()
    else:
        counted = None
    found = [_patient(r) for r in rows[:limit]]
    await audit.record_reads(session, principal, patient_ids=[p.id for p in found], record_type="Patient",
                             purpose=audit.purpose_of(principal, purpose))
    return PatientPage(found, counted, len(rows) > limit)


async def export_patients(session: AsyncSession, principal: Principal, *, since: datetime | None = None,
                          ids: list[uuid.UUID] | None = None, batch: int = 1000):
    """Every active patient (or those of ``ids``), in batches by id, for a bulk export; each batch
    is in the read audit (purpose: operations)."""
    require(principal, "read:patients")
    t = patients
    query = select(t).where(t.c.tenant_id == require_tenant(principal), t.c.erased_at.is_(None),
                            t.c.merged_into.is_(None))
    if since is not None:
        query = query.where(t.c.updated_at >= since)
    if ids is not None:
        query = query.where(t.c.id.in_(ids))
    async for rows in batches(session, query, t.c.id, batch):
        found = [_patient(r) for r in rows]
        await audit.record_reads(session, principal, patient_ids=[p.id for p in found], record_type="Patient",
                                 purpose="operations")
        yield found


@dataclass
class PatientVersion:
    patient_id: uuid.UUID
    version: int
    at: datetime
    change: str  # created | updated | deleted (erased)
    patient: Patient | None  # None once erased: the sealed past cannot be opened any more


async def versions(session: AsyncSession, principal: Principal, patient_id: uuid.UUID,
                   purpose: str | None = None) -> list[PatientVersion]:
    """Every version of one record, oldest first, rebuilt from its events (FHIR vread and history)."""
    current = await get_patient(session, principal, patient_id, purpose)  # the same rules, audited
    return _versions(await eventstore.load(session, current.id))


def _versions(stream: list) -> list[PatientVersion]:
    out = []
    erased = any(e.type == ev.ERASED for e in stream)
    for event, state in ev.replay(stream):
        change = {ev.REGISTERED: "created", ev.ERASED: "deleted"}.get(event.type, "updated")
        out.append(PatientVersion(event.stream_id, event.version, event.recorded_at, change,
                                  None if erased else Patient(**{f: state[f] for f in _FIELDS})))
    return out


async def recent_versions(session: AsyncSession, principal: Principal, *, since: datetime | None = None,
                          limit: int = 50, offset: int = 0) -> tuple[list[PatientVersion], int]:
    """The register's change log, newest first (FHIR history of the Patient type)."""
    require(principal, "read:patients")
    tenant_id = require_tenant(principal)
    conds = [eventstore.events.c.tenant_id == tenant_id, eventstore.events.c.stream_type == "patient"]
    if since is not None:
        conds.append(eventstore.events.c.recorded_at >= since)
    e = eventstore.events
    total = (await session.execute(select(func.count()).select_from(e).where(*conds))).scalar_one()
    page = (await session.execute(select(e.c.stream_id, e.c.version).where(*conds)
                                  .order_by(e.c.position.desc()).limit(limit).offset(offset))).all()
    by_stream: dict[uuid.UUID, list[PatientVersion]] = {}
    for stream_id in {r.stream_id for r in page}:
        by_stream[stream_id] = _versions(await eventstore.load(session, stream_id))
    out = [by_stream[r.stream_id][r.version - 1] for r in page]
    await audit.record_reads(session, principal, patient_ids=list(by_stream), record_type="Patient",
                             purpose=audit.purpose_of(principal, None))
    return out, total


async def _change(session: AsyncSession, patient: Patient, expected_version: int | None,
                  changes: dict[str, Any]) -> Patient:
    if patient.erased_at:
        raise Conflict("This patient's data was erased.", code="patient-erased")
    if patient.merged_into:
        raise Conflict("This record was merged into another one; change that one.", code="patient-merged",
                       merged_into=str(patient.merged_into))
    _check_birth_date(changes.get("birth_date"))
    changes = _flatten_contact(dict(changes))
    phi = _phi_of(changes)
    if "given_name" in phi or "family_name" in phi:
        phi["search_name"] = ev.fold(f"{phi.get('given_name', patient.given_name) or ''} "
                                     f"{phi.get('family_name', patient.family_name) or ''}")
    data = {k: changes[k] for k in ev.PLAIN_FIELDS if k in changes}
    if not phi and not data:
        return patient
    await eventstore.append(session, stream_type="patient", stream_id=patient.id, tenant_id=patient.tenant_id,
                            expected_version=expected_version if expected_version is not None else patient.version,
                            new_events=[NewEvent(ev.UPDATED, data, phi=phi or None)])
    if changes.get("email") and changes["email"] != patient.email:
        await _send_email_verification(session, patient.tenant_id, patient.id, changes["email"])
    await _announce(session, patient.tenant_id, "patient.updated", patient.id)
    return await _load(session, patient.tenant_id, patient.id)


async def update_patient(session: AsyncSession, principal: Principal, patient_id: uuid.UUID, *,
                         expected_version: int | None, changes: dict) -> Patient:
    require(principal, "write:patients")
    return await _change(session, await _load(session, require_tenant(principal), patient_id), expected_version,
                         changes)


async def names_of(session: AsyncSession, principal: Principal, patient_ids: list[uuid.UUID],
                   purpose: str | None = None) -> dict[uuid.UUID, str]:
    """Display names for lists (calendars, queues), each one shown recorded in the read audit."""
    require(principal, "read:patients")
    tenant_id = require_tenant(principal)
    if not patient_ids:
        return {}
    rows = (await session.execute(select(patients.c.id, patients.c.given_name, patients.c.family_name).where(
        patients.c.tenant_id == tenant_id, patients.c.id.in_(patient_ids)))).all()
    await audit.record_reads(session, principal, patient_ids=[r.id for r in rows], record_type="Patient",
                             purpose=audit.purpose_of(principal, purpose))
    return {r.id: f"{r.family_name or '(erased)'}, {r.given_name or ''}".strip(", ") for r in rows}


async def account_of(session: AsyncSession, tenant_id: uuid.UUID, patient_id: uuid.UUID) -> uuid.UUID | None:
    """The patient's own login, for notices sent to them (no PHI, so no read to audit)."""
    return (await session.execute(select(patients.c.account_id).where(
        patients.c.id == patient_id, patients.c.tenant_id == tenant_id, patients.c.erased_at.is_(None)))).scalar()


# -- the patient's own record ------------------------------------------------------------------


async def _own(session: AsyncSession, principal: Principal) -> Patient:
    require(principal, "read:own_record")
    tenant_id = require_tenant(principal)
    r = (await session.execute(select(patients).where(
        patients.c.tenant_id == tenant_id, patients.c.account_id == principal.account_id, _active()))).first()
    if r is None:
        raise NotFound("Your account is not linked to a patient record here yet; ask the front desk.",
                       code="no-patient-record")
    return _patient(r)


async def own_patient(session: AsyncSession, principal: Principal) -> Patient:
    patient = await _own(session, principal)
    await audit.record_reads(session, principal, patient_ids=[patient.id], record_type="Patient",
                             record_id=patient.id, purpose="patient-request")
    return patient


async def update_own_profile(session: AsyncSession, principal: Principal, *, expected_version: int | None,
                             changes: dict) -> Patient:
    require(principal, "manage:own_profile")
    return await _change(session, await _own(session, principal), expected_version, changes)


async def set_consents(session: AsyncSession, principal: Principal, patient_id: uuid.UUID | None,
                       consents: dict[str, bool | None]) -> Patient:
    """Give or withdraw consents, each stamped with the time; ``patient_id`` None: the caller's own."""
    if patient_id is None:
        require(principal, "manage:own_profile")
        patient = await _own(session, principal)
    else:
        require(principal, "write:patients")
        patient = await _load(session, require_tenant(principal), patient_id)
    if patient.erased_at or patient.merged_into:
        raise Conflict("This record can no longer be changed (erased or merged).", code="patient-inactive")
    current = patient.consents()
    changes = {k: v for k, v in consents.items() if v is not None and current[k]["given"] != v}
    events = _consent_events(changes)
    if not events:
        return patient
    await eventstore.append(session, stream_type="patient", stream_id=patient.id, tenant_id=patient.tenant_id,
                            expected_version=patient.version, new_events=events)
    return await _load(session, patient.tenant_id, patient.id)


# -- e-mail verification -----------------------------------------------------------------------


async def _send_email_verification(session: AsyncSession, tenant_id: uuid.UUID, patient_id: uuid.UUID,
                                   email: str) -> None:
    # The tenant travels in the token (it is not secret) so the public confirm step can bind the
    # right tenant before it looks the token up under row-level security.
    token = f"{tenant_id.hex}.{secrets.token_urlsafe(24)}"
    now = datetime.now(UTC)
    await session.execute(patient_email_verifications.insert().values(
        token_hash=crypto.keyring().keyed_hash(token), tenant_id=tenant_id, patient_id=patient_id, email=email,
        expires_at=now + EMAIL_VERIFICATION_TTL, created_at=now))
    settings = get_settings()
    base = public_base_url(settings)
    await delivery.send_email(
        session, email, "Confirm your e-mail address for Carebase",
        "Your clinic registered this e-mail address for your patient record.\n\n"
        f"Open this link within {EMAIL_VERIFICATION_TTL.days} days to confirm it:\n"
        f"{base}/verify-email?token={quote(token)}\n\nOr use this code: {token}\n\n"
        "If you do not know this clinic, ignore this message.")


async def resend_email_verification(session: AsyncSession, principal: Principal, patient_id: uuid.UUID | None) -> None:
    patient = await _own(session, principal) if patient_id is None else await _load(
        session, require_tenant(principal), patient_id)
    if patient_id is not None:
        require(principal, "write:patients")
    if not patient.email:
        raise ValidationFailed("This patient has no e-mail address to verify.", code="no-email")
    if patient.email_verified_at:
        raise Conflict("This e-mail address is already verified.", code="email-already-verified")
    await _send_email_verification(session, patient.tenant_id, patient.id, patient.email)


async def confirm_email(session: AsyncSession, token: str) -> None:
    invalid = ValidationFailed("This verification link is invalid, used or expired. Ask for a new one.",
                               code="bad-verification-token")
    tenant_hex, _, _ = token.partition(".")
    try:
        tenant_id = uuid.UUID(hex=tenant_hex)
    except ValueError:
        raise invalid from None
    await set_context(session, tenant_id, None)
    row = (await session.execute(select(patient_email_verifications).where(
        patient_email_verifications.c.token_hash == crypto.keyring().keyed_hash(token)).with_for_update())).first()
    if row is None or row.used_at is not None or row.expires_at < datetime.now(UTC):
        raise invalid
    patient = await _load(session, tenant_id, row.patient_id)
    if patient.email != row.email:
        raise ValidationFailed("The e-mail address changed since this link was sent; use the newest link.",
                               code="bad-verification-token")
    await session.execute(patient_email_verifications.update().where(
        patient_email_verifications.c.token_hash == row.token_hash).values(used_at=datetime.now(UTC)))
    await eventstore.append(session, stream_type="patient", stream_id=patient.id, tenant_id=tenant_id,
                            expected_version=patient.version,
                            new_events=[NewEvent(ev.EMAIL_VERIFIED, {}, phi={"email": row.email})])


# -- merge and erase ---------------------------------------------------------------------------


async def merge_patients(session: AsyncSession, principal: Principal, source_id: uuid.UUID,
                         into_id: uuid.UUID) -> Patient:
    """Mark ``source_id`` as the same person as ``into_id``; the source then redirects there."""
    require(principal, "write:patients")
    tenant_id = require_tenant(principal)
    source = await _load(session, tenant_id, source_id)
    target = await _load(session, tenant_id, into_id)
    if source.id == target.id:
        raise ValidationFailed("A record cannot be merged into itself.", code="merge-into-self")
    for p, role in ((source, "merged"), (target, "kept")):
        if p.erased_at or p.merged_into:
            raise Conflict(f"The record to be {role} is erased or already merged.", code="patient-inactive",
                           patient_id=str(p.id))
    await eventstore.append(session, stream_type="patient", stream_id=source.id, tenant_id=tenant_id,
                            expected_version=source.version,
                            new_events=[NewEvent(ev.MERGED, {"into": str(target.id)})])
    await _announce(session, tenant_id, "patient.merged", source.id)
    return target


async def record_ids(session: AsyncSession, patient: Patient) -> list[uuid.UUID]:
    """The ids under which this person's history was recorded: the record itself and every record
    merged into it (also through a chain of merges). Other domains key their rows by patient id
    and never rewrite them on a merge; they read through this instead."""
    rows = (await session.execute(text(
        "WITH RECURSIVE merged(id) AS (SELECT CAST(:id AS uuid) UNION "
        "SELECT p.id FROM patients p JOIN merged m ON p.merged_into = m.id WHERE p.tenant_id = :tenant) "
        "SELECT id FROM merged"), {"id": patient.id, "tenant": patient.tenant_id})).scalars().all()
    return [patient.id, *[r for r in rows if r != patient.id]]


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
