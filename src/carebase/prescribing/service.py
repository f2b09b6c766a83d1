"""Prescriptions: drafted by the assistant or written by a doctor, always checked by the safety
rules, approved and signed by a physician, verifiable by anyone holding the QR code.

* **Drafts** come from a completed consultation (the likeliest condition's first-line medicines
  from the knowledge base; controlled substances are never drafted) or from a doctor writing in
  the chart. Every draft and every edit runs every safety rule (``safety.py``) and keeps the flags.
* **The queue** (doctors): drafts, most urgent first, then longest waiting; live on
  ``tenant:<id>:prescriptions``.
* **Approval signs**: a blocking flag needs an override reason; the canonical content (patient,
  prescriber, medicines, instructions, time) is hashed (SHA-256) and signed with the physician's
  own Ed25519 key, whose private half is sealed at rest under a key derived from the master secret.
  The patient is notified of an approval or a rejection.
* **Verification** (``GET /prescriptions/verify/{id}``, public: the QR code's target) recomputes the
  hash and checks the signature: valid, revoked or tampered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from lxml import etree
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.audit import service as audit
from carebase.encounters import service as encounters
from carebase.identity import service as identity
from carebase.knowledge import service as knowledge
from carebase.notifications import service as notifications
from carebase.patients import service as patients
from carebase.platform import context, crypto, eventstore, realtime
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.db import set_context
from carebase.platform.errors import Conflict, Forbidden, NotFound, ValidationFailed
from carebase.platform.ids import new_id
from carebase.platform.pdf import PDF_ENCODING, FoldedText
from carebase.platform.storage import storage
from carebase.prescribing import esign
from carebase.prescribing.models import prescriber_keys, prescriptions
from carebase.prescribing.safety import Emergency, Item, Patient, Report, check
from carebase.prescribing.safety import emergency_signs as _emergency_signs
from carebase.settings import get_settings, public_base_url
from carebase.tenants import service as tenants

realtime.topic("prescriptions", "manage:prescriptions")

# How soon a physician should look: consultations and prescriptions share the scale.
URGENCY = {0: "routine", 1: "urgent", 2: "emergency"}


def emergency_signs(text: str) -> list[Emergency]:
    """Emergency red flags in what a patient wrote (stroke signs, chest pain on exertion, …)."""
    return _emergency_signs(text)


# -- the record ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prescription:
    id: uuid.UUID
    patient_id: uuid.UUID
    consultation_id: uuid.UUID | None
    source: str
    status: str
    urgency: int
    items: list[dict[str, Any]]
    safety: list[dict[str, Any]]
    diagnosis: str | None
    notes: str | None
    override_reason: str | None
    created_at: datetime
    updated_at: datetime
    reviewed_by: uuid.UUID | None
    reviewed_at: datetime | None
    content_hash: str | None
    signed: bool
    patient_signed_at: datetime | None
    esigned_by: str | None
    esigned_at: datetime | None
    # The patient's view of an approved prescription they have not signed yet: everything but the
    # medicines (the seed: the patient signs before the final prescription is shown).
    awaiting_patient_signature: bool = False


def _prescription(r, *, withhold: bool = False) -> Prescription:
    return Prescription(r.id, r.patient_id, r.consultation_id, r.source, r.status, r.urgency,
                        [] if withhold else r.items, [] if withhold else r.safety, r.diagnosis, r.notes,
                        r.override_reason, r.created_at, r.updated_at, r.reviewed_by, r.reviewed_at, r.content_hash,
                        r.signature is not None, r.patient_signed_at, r.esign_signer, r.esign_at, withhold)


def _flags(report: Report) -> list[dict[str, Any]]:
    return [f.__dict__ for f in report.flags]


def _items(raw: list[dict[str, Any]]) -> list[Item]:
    return [Item(i["medicine"], i.get("dose"), i.get("unit"), i.get("times_per_day")) for i in raw]


UNITS = ("mg", "mcg", "g", "units", "mL", "puffs", "drops", "application")


def _number_in(value: Any, name: str, low: float, high: float, *, whole: bool = False) -> float | int | None:
    """A line's number, or None; refused unless finite and within (low, high]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low < value <= high or (whole and value != int(value)):
        raise ValidationFailed(f"{name} must be a {'whole ' if whole else ''}number above {low:g} and at most "
                               f"{high:g}.", code="bad-medicine-line")
    return int(value) if whole else float(value)


def _clean_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every line checked here, whichever door it came in by (the API's schema, a portal form)."""
    if not items:
        raise ValidationFailed("A prescription needs at least one medicine.", code="no-medicines")
    if len(items) > 20:
        raise ValidationFailed("At most 20 medicines on one prescription.", code="too-many-medicines")
    out = []
    for i in items:
        name = str(i.get("medicine") or "").strip()
        if not name or len(name) > 200:
            raise ValidationFailed("Every line needs a medicine (at most 200 characters).", code="no-medicine-name")
        if i.get("unit") not in (None, *UNITS):
            raise ValidationFailed(f"The unit must be one of {', '.join(UNITS)}.", code="bad-medicine-line")
        i = {**i, "dose": _number_in(i.get("dose"), "A dose", 0, 100000),
             "times_per_day": _number_in(i.get("times_per_day"), "Times a day", 0, 24),
             "duration_days": _number_in(i.get("duration_days"), "Days", 0, 365, whole=True),
             "quantity": _number_in(i.get("quantity"), "A quantity", 0, 10000, whole=True),
             "instructions": str(i.get("instructions") or "")[:500]}
        med = knowledge.medicine(name)
        out.append({"medicine": med.generic if med else name, "dose": i.get("dose"), "unit": i.get("unit"),
                    "times_per_day": i.get("times_per_day"), "duration_days": i.get("duration_days"),
                    **({"quantity": i["quantity"]} if i.get("quantity") else {}),
                    "instructions": (i.get("instructions") or "").strip()})
    return out


async def _facts(session: AsyncSession, principal: Principal, patient_id: uuid.UUID) -> Patient:
    """What the safety rules need of the patient: age, weight, allergies, problems, medicines."""
    p = await patients.get_patient(session, principal, patient_id, purpose="treatment")
    return _patient_facts(p.birth_date, await encounters.chart(session, principal, patient_id))


def _patient_facts(birth_date: date | None, chart: dict[str, Any], allergies: list[str] = ()) -> Patient:
    weights = [v["weight_kg"] for v in chart["vitals"] if v.get("weight_kg")]
    return Patient(age_years=patients.age_in_years(birth_date), weight_kg=weights[-1] if weights else None,
                   allergies=tuple({*(a["substance"] for a in chart["allergies"]), *allergies}),
                   conditions=tuple(pr["name"] for pr in chart["problems"]),
                   current_medicines=tuple(m["name"] for m in chart["medications"]))


async def draft_from_consultation(session: AsyncSession, principal: Principal, *, patient_id: uuid.UUID,
                                  consultation_id: uuid.UUID, summary: dict[str, Any], urgency: int) -> uuid.UUID:
    """The assistant's draft for a completed consultation: the likeliest condition's first-line
    medicines (never a controlled substance), checked, into the physicians' queue."""
    tenant_id = require_tenant(principal)
    kb = knowledge.catalog()
    items: list[dict[str, Any]] = []
    left_out: list[str] = []
    diagnosis = None
    facts = await _own_facts(session, principal, summary)
    for guess in summary.get("possible_conditions") or []:
        condition = next((c for c in kb.conditions if c.code == guess.get("code")), None)
        if condition is None:
            continue
        diagnosis = f"{condition.name} ({condition.code}), suggested by the assistant"
        child = facts.age_years is not None and facts.age_years < 18
        for f in condition.first_line:
            med = kb.medicine(f.generic)
            if med is not None and med.controlled:
                left_out.append(f"{med.generic} (controlled, schedule {med.controlled}): never drafted")
                continue
            items.append({"medicine": med.generic if med else f.generic, "dose": None, "unit": None,
                          "times_per_day": None, "duration_days": None,
                          "instructions": ((f.child if child else f.adult) or "") + (f"; {f.note}" if f.note else "")})
        break
    report = check(_items(items), facts, source="assistant")
    prescription_id = new_id()
    notes = "Not drafted: " + "; ".join(left_out) if left_out else None
    await session.execute(prescriptions.insert().values(
        id=prescription_id, tenant_id=tenant_id, patient_id=patient_id, consultation_id=consultation_id,
        source="assistant", status="draft", urgency=urgency, items=items, safety=_flags(report), diagnosis=diagnosis,
        notes=notes, created_by=None))
    await realtime.publish(session, f"tenant:{tenant_id}:prescriptions",
                           {"type": "prescription:draft", "id": str(prescription_id)})
    return prescription_id


async def _own_facts(session: AsyncSession, principal: Principal, summary: dict[str, Any]) -> Patient:
    """The patient's own facts while they consult (their own chart, and what they told the assistant)."""
    me = await patients.own_patient(session, principal)
    return _patient_facts(me.birth_date, await encounters.chart(session, principal), summary.get("allergies") or [])


async def write(session: AsyncSession, principal: Principal, patient_id: uuid.UUID, *, items: list[dict[str, Any]],
                diagnosis: str | None = None) -> Prescription:
    """A doctor writes a prescription in the chart: the same safety rules, then approval signs it."""
    require(principal, "manage:prescriptions")
    tenant_id = require_tenant(principal)
    items = _clean_items(items)
    report = check(_items(items), await _facts(session, principal, patient_id), source="physician")
    prescription_id = new_id()
    await session.execute(prescriptions.insert().values(
        id=prescription_id, tenant_id=tenant_id, patient_id=patient_id, source="physician", status="draft",
        urgency=0, items=items, safety=_flags(report), diagnosis=diagnosis, created_by=principal.account_id))
    return await get(session, principal, prescription_id)


async def _load(session: AsyncSession, prescription_id: uuid.UUID, *, lock: bool = False):
    stmt = select(prescriptions).where(prescriptions.c.id == prescription_id)
    row = (await session.execute(stmt.with_for_update() if lock else stmt)).first()
    if row is None:
        raise NotFound("No such prescription.", code="prescription-not-found")
    return row


async def get(session: AsyncSession, principal: Principal, prescription_id: uuid.UUID) -> Prescription:
    """Physicians see every prescription of their organization; a patient sees their own once a
    physician decided (never a draft)."""
    row = await _load(session, prescription_id)
    if principal.can("manage:prescriptions"):
        await _audit(session, principal, [row.patient_id], row.id)
        return _prescription(row)
    await _own_decided(session, principal, row)
    return _prescription(row, withhold=_unsigned_for_patient(row))


def _unsigned_for_patient(row) -> bool:
    """Decided to prescribe, not yet signed by the patient: its medicines are not theirs to see
    (revoked ones included: revoking does not show what was withdrawn)."""
    return row.status in ("approved", "revoked") and row.patient_signed_at is None


async def _own_decided(session: AsyncSession, principal: Principal, row) -> None:
    own = await patients.account_of(session, row.tenant_id, row.patient_id)
    if own != principal.account_id or row.status == "draft":
        raise NotFound("No such prescription.", code="prescription-not-found")


async def queue(session: AsyncSession, principal: Principal, *, limit: int = 100) -> list[Prescription]:
    require(principal, "manage:prescriptions")
    require_tenant(principal)
    rows = (await session.execute(select(prescriptions).where(prescriptions.c.status == "draft")
                                  .order_by(prescriptions.c.urgency.desc(), prescriptions.c.created_at)
                                  .limit(limit))).all()
    await _audit(session, principal, sorted({r.patient_id for r in rows}), None)
    return [_prescription(r) for r in rows]


async def _audit(session: AsyncSession, principal: Principal, patient_ids: list[uuid.UUID],
                 prescription_id: uuid.UUID | None) -> None:
    """A clinician saw these patients' prescriptions (medicines, diagnosis): in the read audit."""
    await audit.record_reads(session, principal, patient_ids=patient_ids, record_type="prescription",
                             record_id=prescription_id, purpose=audit.purpose_of(principal, None))


async def mine(session: AsyncSession, principal: Principal) -> list[Prescription]:
    """A patient's decided prescriptions, newest first."""
    me = await patients.own_patient(session, principal)
    rows = (await session.execute(select(prescriptions).where(
        prescriptions.c.patient_id == me.id, prescriptions.c.status != "draft")
        .order_by(prescriptions.c.created_at.desc()))).all()
    return [_prescription(r, withhold=_unsigned_for_patient(r)) for r in rows]


async def of_patient(session: AsyncSession, principal: Principal, patient_id: uuid.UUID | None) -> list[Prescription]:
    """One patient's prescriptions, newest first: every one for a physician (audited), the decided
    ones for the patient themselves (``patient_id`` None: the caller's own)."""
    require(principal, "manage:prescriptions", "read:own_record")
    if principal.can("manage:prescriptions") and patient_id is not None:
        patient = await patients.get_patient(session, principal, patient_id)
        rows = (await session.execute(select(prescriptions).where(
            prescriptions.c.patient_id.in_(await patients.record_ids(session, patient)))
            .order_by(prescriptions.c.created_at.desc()))).all()
        await _audit(session, principal, [patient.id], None)
        return [_prescription(r) for r in rows]
    return [p for p in await mine(session, principal) if patient_id is None or p.patient_id == patient_id]


def _must_be_draft(row) -> None:
    if row.status != "draft":
        raise Conflict(f"This prescription is already {row.status}.", code="prescription-decided",
                       status_now=row.status)


async def edit(session: AsyncSession, principal: Principal, prescription_id: uuid.UUID, *,
               items: list[dict[str, Any]], diagnosis: str | None = None) -> Prescription:
    """The physician's edit of a draft: every safety rule runs again on the new medicines."""
    require(principal, "manage:prescriptions")
    row = await _load(session, prescription_id, lock=True)
    _must_be_draft(row)
    items = _clean_items(items)
    report = check(_items(items), await _facts(session, principal, row.patient_id), source="physician")
    await session.execute(prescriptions.update().where(prescriptions.c.id == row.id).values(
        items=items, safety=_flags(report), diagnosis=diagnosis if diagnosis is not None else row.diagnosis,
        updated_at=func.now()))
    return await get(session, principal, prescription_id)


# -- deciding and signing --------------------------------------------------------------------------


def _private_key_sealing(account_id: uuid.UUID) -> tuple[bytes, bytes]:
    return crypto.keyring().derive("prescriber-keys"), b"prescriber-key:" + str(account_id).encode()


async def _signing_key(session: AsyncSession, tenant_id: uuid.UUID,
                       account_id: uuid.UUID) -> tuple[uuid.UUID, Ed25519PrivateKey]:
    """The physician's own key, made on their first signature."""
    key, aad = _private_key_sealing(account_id)
    row = (await session.execute(select(prescriber_keys).where(prescriber_keys.c.account_id == account_id))).first()
    if row is not None:
        return row.id, Ed25519PrivateKey.from_private_bytes(crypto.open_sealed(key, row.sealed_private_key, aad))
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = new_id()
    made = await session.execute(pg_insert(prescriber_keys).values(
        id=key_id, tenant_id=tenant_id, account_id=account_id, public_key=base64.b64encode(public).decode(),
        sealed_private_key=crypto.seal(key, raw, aad)).on_conflict_do_nothing(
        index_elements=["tenant_id", "account_id"]))
    if made.rowcount == 0:  # their first two approvals at once: the other one's key stands
        return await _signing_key(session, tenant_id, account_id)
    return key_id, private


def canonical(content: dict[str, Any]) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


async def approve(session: AsyncSession, principal: Principal, prescription_id: uuid.UUID, *,
                  notes: str | None = None, override_reason: str | None = None) -> Prescription:
    """Approve and sign. Blocking safety flags need ``override_reason``; a flag that may not be
    overridden (a controlled substance drafted by the assistant) cannot be approved at all."""
    require(principal, "manage:prescriptions")
    tenant_id = require_tenant(principal)
    row = await _load(session, prescription_id, lock=True)
    _must_be_draft(row)
    if not row.items:
        raise Conflict("There is no medicine to approve: add one, or reject with a note.", code="no-medicines")
    report = check(_items(row.items), await _facts(session, principal, row.patient_id), source="physician")
    if not report.can_be_approved:
        raise Conflict("This prescription cannot be approved: " + "; ".join(
            f"{f.medicine}: {f.reason}" for f in report.blocking if not f.overridable), code="not-overridable")
    override = (override_reason or "").strip() or None
    if report.needs_override and not override:
        raise Conflict("Safety checks found problems that need your reason to override: " + "; ".join(
            f"{f.medicine}: {f.reason}" for f in report.blocking), code="override-required",
            flags=[f.__dict__ for f in report.blocking])
    p = await patients.get_patient(session, principal, row.patient_id, purpose="treatment")
    prescriber = await _prescriber_name(session, principal)
    now = datetime.now(UTC)
    content = {
        "prescription_id": str(row.id), "tenant_id": str(tenant_id), "issued_at": now.isoformat(),
        "patient": {"id": str(p.id), "name": f"{p.given_name or ''} {p.family_name or ''}".strip(), "mrn": p.mrn,
                    "birth_date": p.birth_date.isoformat() if p.birth_date else None},
        "prescriber": {"account_id": str(principal.account_id), "name": prescriber},
        "diagnosis": row.diagnosis, "items": row.items, "notes": (notes or "").strip() or None,
    }
    body = canonical(content)
    digest = hashlib.sha256(body).hexdigest()
    key_id, private = await _signing_key(session, tenant_id, principal.account_id)
    signature = base64.b64encode(private.sign(digest.encode())).decode()
    await session.execute(prescriptions.update().where(prescriptions.c.id == row.id).values(
        status="approved", safety=_flags(report), notes=content["notes"], override_reason=override,
        reviewed_by=principal.account_id, reviewed_at=now, updated_at=now, signed_content=content,
        content_hash=digest, signature=signature, signer_key_id=key_id))
    await _tell_patient(session, tenant_id, row, "prescription.approved", prescriber)
    await realtime.publish(session, f"tenant:{tenant_id}:prescriptions",
                           {"type": "prescription:approved", "id": str(row.id)})
    return await get(session, principal, prescription_id)


async def reject(session: AsyncSession, principal: Principal, prescription_id: uuid.UUID, *, notes: str
                 ) -> Prescription:
    require(principal, "manage:prescriptions")
    tenant_id = require_tenant(principal)
    notes = (notes or "").strip()
    if not notes:
        raise ValidationFailed("Say why, for the patient: a rejection needs a note.", code="note-required")
    row = await _load(session, prescription_id, lock=True)
    _must_be_draft(row)
    await session.execute(prescriptions.update().where(prescriptions.c.id == row.id).values(
        status="rejected", notes=notes, reviewed_by=principal.account_id, reviewed_at=func.now(),
        updated_at=func.now()))
    await _tell_patient(session, tenant_id, row, "prescription.rejected", await _prescriber_name(session, principal))
    await realtime.publish(session, f"tenant:{tenant_id}:prescriptions",
                           {"type": "prescription:rejected", "id": str(row.id)})
    return await get(session, principal, prescription_id)


async def revoke(session: AsyncSession, principal: Principal, prescription_id: uuid.UUID, *, reason: str
                 ) -> Prescription:
    """Withdraw a signed prescription (a wrong dose spotted, the patient reacted): the signature
    stays, and verification answers "revoked" from now on, so no pharmacy dispenses it."""
    require(principal, "manage:prescriptions")
    tenant_id = require_tenant(principal)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("Say why the prescription is revoked.", code="reason-required")
    row = await _load(session, prescription_id, lock=True)
    if row.status != "approved":
        raise Conflict(f"Only an approved prescription can be revoked; this one is {row.status}.",
                       code="prescription-not-approved", status_now=row.status)
    await session.execute(prescriptions.update().where(prescriptions.c.id == row.id).values(
        status="revoked", revoked_at=func.now(), revoked_reason=reason[:2000], updated_at=func.now()))
    await realtime.publish(session, f"tenant:{tenant_id}:prescriptions",
                           {"type": "prescription:revoked", "id": str(row.id)})
    return await get(session, principal, prescription_id)


async def _prescriber_name(session: AsyncSession, principal: Principal) -> str:
    account = await identity.get_account(session, principal.account_id)
    return account.display_name if account else "your doctor"


async def _tell_patient(session: AsyncSession, tenant_id: uuid.UUID, row, kind: str, doctor: str) -> None:
    account = await patients.account_of(session, tenant_id, row.patient_id)
    if account is not None:
        await notifications.notify(session, tenant_id=tenant_id, account_id=account, type=kind,
                                   data={"doctor": doctor.removeprefix("Dr ").removeprefix("Dr. ")},
                                   event_key=str(row.id), link=f"/portal/prescriptions/{row.id}")


# -- the patient's signature and the printed prescription -----------------------------------------

SIGNATURE_MAX_BYTES = 200_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def sign_as_patient(session: AsyncSession, principal: Principal, prescription_id: uuid.UUID, *,
                          image: bytes) -> Prescription:
    """The patient signs (the portal's signature pad, a PNG) before the final prescription is
    shown to them: the image is stored with its SHA-256, the time and the address it came from,
    and the consent is an event in the append-only log. Signing twice keeps the first."""
    row = await _load(session, prescription_id, lock=True)
    await _own_decided(session, principal, row)
    if row.status != "approved":
        raise Conflict(f"Only an approved prescription is signed; this one is {row.status}.",
                       code="prescription-not-approved", status_now=row.status)
    if row.patient_signed_at is not None:
        return await get(session, principal, prescription_id)
    # The header's own size (IHDR: width, height) too: a small file can claim a huge picture.
    width, height = (int.from_bytes(image[16:20], "big"), int.from_bytes(image[20:24], "big")) \
        if len(image) >= 24 and image[12:16] == b"IHDR" else (0, 0)
    if not image.startswith(PNG_MAGIC) or not 100 <= len(image) <= SIGNATURE_MAX_BYTES \
            or not (0 < width <= 2000 and 0 < height <= 1000):
        raise ValidationFailed(f"The signature must be a PNG image under {SIGNATURE_MAX_BYTES // 1000} kB and "
                               "2000 × 1000 pixels (draw it on the signature pad).", code="bad-signature-image")
    digest = hashlib.sha256(image).hexdigest()
    key = f"prescriptions/{row.tenant_id}/{row.id}/patient-signature.png"
    await storage(get_settings()).put(key, image, "image/png")
    ip = context.get().ip
    now = datetime.now(UTC)
    await session.execute(prescriptions.update().where(prescriptions.c.id == row.id).values(
        patient_signed_at=now, patient_signature_key=key, patient_signature_sha256=digest,
        patient_signature_ip=ip, updated_at=now))
    await eventstore.append(session, stream_type="prescription_consent", stream_id=row.id, expected_version=None,
                            tenant_id=row.tenant_id, new_events=[eventstore.NewEvent(
                                "prescription.patient_signed",
                                data={"prescription_id": str(row.id), "content_hash": row.content_hash,
                                      "signature_sha256": digest, "signed_at": now.isoformat()},
                                phi={"ip": ip}, subject_id=row.patient_id)])
    return await get(session, principal, prescription_id)


async def pdf(session: AsyncSession, principal: Principal, prescription_id: uuid.UUID) -> tuple[str, bytes]:
    """The signed prescription as a PDF with its QR code: the organization's doctors once it is
    approved, the patient once they have signed it. Returns (file name, bytes)."""
    row = await _load(session, prescription_id)
    if principal.can("manage:prescriptions"):
        await _audit(session, principal, [row.patient_id], row.id)
    else:
        await _own_decided(session, principal, row)
        if _unsigned_for_patient(row):
            raise Conflict("Sign the prescription first: it is shown to you once you have signed it.",
                           code="patient-signature-required")
    if row.signature is None:
        raise Conflict("Only a signed prescription can be printed.", code="prescription-not-signed",
                       status_now=row.status)
    signature_png = None
    if row.patient_signature_key:
        signature_png = await storage(get_settings()).get(row.patient_signature_key)
    tenant = await tenants.get_tenant(session, row.tenant_id)
    verify_url = f"{public_base_url(get_settings())}/api/v1/prescriptions/verify/{row.id}"
    body = await asyncio.to_thread(_render_pdf, row, tenant.name, verify_url, signature_png)
    return f"prescription-{str(row.id)[:8]}.pdf", body


def _render_pdf(row, clinic: str, verify_url: str, signature_png: bytes | None) -> bytes:
    # Imported on first use: fpdf2 brings Pillow and fontTools, over a second to load.
    import io

    import segno
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    content = row.signed_content
    t = FoldedText()
    pdf = FPDF(format="A4", unit="mm")
    pdf.core_fonts_encoding = PDF_ENCODING
    pdf.set_title("Prescription")
    pdf.set_creator("Carebase")
    pdf.set_margins(18, 16, 18)
    pdf.add_page()

    def line(text: str, size: float = 10, style: str = "", h: float = 5.4, beside_qr: bool = False) -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.multi_cell(pdf.epw - (36 if beside_qr else 0), h, t(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    qr = io.BytesIO()
    segno.make(verify_url, error="m").save(qr, kind="png", scale=6, border=1)
    pdf.image(io.BytesIO(qr.getvalue()), x=pdf.w - pdf.r_margin - 32, y=14, w=32)
    line(clinic, 15, "B", 8, beside_qr=True)
    line("Prescription (Rx)", 12, "B", 7, beside_qr=True)
    issued = datetime.fromisoformat(content["issued_at"])
    line(f"No. {row.id}", 9, beside_qr=True)
    line(f"Issued {issued:%d %b %Y %H:%M} UTC", 9, beside_qr=True)
    pdf.set_y(max(pdf.get_y(), 48))
    pdf.ln(4)
    patient = content["patient"]
    line(f"Patient: {patient['name']}    MRN {patient['mrn']}"
         + (f"    Born {patient['birth_date']}" if patient.get("birth_date") else ""), 10, "B")
    line(f"Prescriber: {content['prescriber']['name']}", 10)
    if content.get("diagnosis"):
        line(f"Diagnosis: {content['diagnosis']}", 10)
    pdf.ln(3)
    pdf.set_font("Helvetica", "", 9)
    with pdf.table(col_widths=(30, 16, 16, 10, 46), line_height=5, text_align="LEFT") as table:
        header = table.row()
        for head in ("Medicine", "Dose", "How often", "Days", "Instructions"):
            header.cell(head)
        for item in content["items"]:
            dose = f"{item['dose']:g} {item.get('unit') or ''}".strip() if item.get("dose") else "-"
            often = f"{item['times_per_day']:g} x a day" if item.get("times_per_day") else "-"
            days = str(item["duration_days"]) if item.get("duration_days") else "-"
            r = table.row()
            for cell in (item["medicine"], dose, often, days, item.get("instructions") or ""):
                r.cell(t(cell))
    if content.get("notes"):
        pdf.ln(3)
        line(f"Notes: {content['notes']}", 9.5)
    pdf.ln(6)
    line("Digitally signed by the prescriber (Ed25519) over the SHA-256 of this prescription's content:", 8.5, "B")
    line(row.content_hash, 8.5)
    if row.esign_signer:
        line(f"Aadhaar eSign: {row.esign_signer}, {row.esign_at:%d %b %Y %H:%M} UTC (PKCS#7 kept with the record)",
             8.5)
    line("Check it: scan the QR code, or open", 8.5)
    line(verify_url, 8.5)
    if signature_png:
        pdf.ln(4)
        line(f"Patient's signature ({row.patient_signed_at:%d %b %Y %H:%M} UTC):", 8.5)
        pdf.image(io.BytesIO(signature_png), w=50)
    if t.lost:
        pdf.ln(2)
        line("Some characters could not be printed in this font; the signed record keeps every one.", 8, "I")
    return bytes(pdf.output())


# -- Aadhaar eSign (Indian deployments) -------------------------------------------------------------


async def start_esign(session: AsyncSession, principal: Principal, prescription_id: uuid.UUID) -> esign.EsignRequest:
    """The prescriber's Aadhaar eSign of an approved prescription's hash: the form their browser
    posts to the ESP (where they confirm with the Aadhaar OTP)."""
    require(principal, "manage:prescriptions")
    row = await _load(session, prescription_id, lock=True)
    adapter = esign.provider(get_settings())
    if adapter is None:
        raise Conflict("Aadhaar eSign is not enabled here (CAREBASE_ESIGN_PROVIDER).", code="esign-not-enabled")
    if row.status != "approved" or row.signature is None:
        raise Conflict("Only an approved, signed prescription is e-signed.", code="prescription-not-approved",
                       status_now=row.status)
    if row.reviewed_by != principal.account_id:
        raise Forbidden("Only the prescriber who approved it may e-sign it.", code="not-the-prescriber")
    if row.esign_signature is not None:
        raise Conflict("This prescription is already e-signed.", code="already-esigned")
    txn = f"cb-{new_id().hex}"
    request = adapter.request(document_sha256=row.content_hash, doc_info=f"Prescription {row.id}", txn=txn)
    await session.execute(prescriptions.update().where(prescriptions.c.id == row.id).values(
        esign_txn=txn, updated_at=func.now()))
    return request


async def complete_esign(session: AsyncSession, response_xml: str) -> uuid.UUID:
    """The ESP's answer, brought back by the prescriber's browser (no session: a cross-site POST).
    Its transaction names the prescription; the adapter checks everything else. Returns the id."""
    adapter = esign.provider(get_settings())
    if adapter is None:
        raise Conflict("Aadhaar eSign is not enabled here (CAREBASE_ESIGN_PROVIDER).", code="esign-not-enabled")
    try:
        txn = etree.fromstring(response_xml.encode(), parser=etree.XMLParser(resolve_entities=False)).get("txn") or ""
    except etree.XMLSyntaxError:
        raise ValidationFailed("The eSign answer is not XML.", code="esign-bad-response") from None
    found = (await session.execute(text("SELECT * FROM prescription_for_esign(:txn)"), {"txn": txn})).first()
    if found is None:
        raise NotFound("No prescription is waiting for this eSign answer.", code="esign-unknown-transaction")
    result = adapter.complete(response_xml, txn=txn, document_sha256=found.content_hash)
    await set_context(session, found.tenant_id, None)
    await session.execute(prescriptions.update().where(
        prescriptions.c.id == found.id, prescriptions.c.esign_txn == txn, prescriptions.c.status == "approved",
        prescriptions.c.esign_signature.is_(None)).values(
        esign_signature=result.signature_pkcs7, esign_signer=result.signer_name[:200],
        esign_certificate=result.signer_certificate_pem, esign_at=func.now(), updated_at=func.now()))
    return found.id


# -- verification (public) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    status: str  # valid | revoked | tampered | unknown
    detail: str
    issued_at: str | None = None
    prescriber: str | None = None
    content_hash: str | None = None
    esigned_by: str | None = None  # Aadhaar eSign, where the deployment uses it
    esigned_at: str | None = None


@dataclass(frozen=True)
class Dispensable:
    """What a pharmacy may dispense from: the lines as signed, and when they were signed."""
    id: uuid.UUID
    issued_at: datetime
    items: list[dict[str, Any]]


async def for_dispensing(session: AsyncSession, principal: Principal, prescription_id: uuid.UUID) -> Dispensable:
    """The caller's own prescription, approved, signed by the patient and with a valid signature
    (the check a pharmacy makes at checkout); anything else is refused with the reason."""
    row = await _load(session, prescription_id)
    await _own_decided(session, principal, row)
    if row.status != "approved":
        raise Conflict(f"Prescription {str(row.id)[:8]} is {row.status}: nothing can be dispensed from it.",
                       code="prescription-not-dispensable")
    if row.patient_signed_at is None:
        raise Conflict("Sign your prescription in the portal first: until then it cannot be used to order.",
                       code="prescription-unsigned")
    v = await verify(session, prescription_id)
    if v.status != "valid":
        raise Conflict(v.message, code="prescription-not-dispensable")
    content = row.signed_content or {}
    return Dispensable(row.id, datetime.fromisoformat(content["issued_at"]), list(content.get("items") or []))


async def verify(session: AsyncSession, prescription_id: uuid.UUID) -> Verification:
    """What the QR code leads to: the signature and the hash checked against what is stored."""
    row = (await session.execute(text("SELECT * FROM prescription_for_verification(:id)"),
                                 {"id": prescription_id})).first()
    if row is None:
        return Verification("unknown", "No signed prescription has this number.")
    content = row.signed_content or {}
    digest = hashlib.sha256(canonical(content)).hexdigest()
    intact = digest == row.content_hash
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(row.public_key)).verify(
            base64.b64decode(row.signature), row.content_hash.encode())
    except Exception:
        intact = False
    issued = content.get("issued_at")
    prescriber = (content.get("prescriber") or {}).get("name")
    if not intact:
        return Verification("tampered", "The stored prescription does not match its signature: do not dispense.",
                            issued, prescriber, row.content_hash)
    if row.status == "revoked" or row.revoked_at is not None:
        return Verification("revoked", "The prescriber revoked this prescription: do not dispense.", issued,
                            prescriber, row.content_hash)
    return Verification("valid", "Signed by the prescriber and unchanged since.", issued, prescriber,
                        row.content_hash, row.esign_signer, row.esign_at.isoformat() if row.esign_at else None)

