"""Consultations: a patient's intake conversation with the assistant, reviewed by a physician.

Every patient message is, in this order: checked for emergency red flags (on the original text,
on the server; an emergency stops the consultation at once, tells the patient what to do and
puts it at the top of the clinicians' queue as urgent), stripped of identifiers (``phi.py``; the
token map stays with the consultation), stored, and only then shown to the assistant (``engine.py``:
offline by default, an OpenAI-compatible model when configured). The assistant's answer is
re-identified for display; both versions are kept, so an auditor can see exactly what the model
saw. After 5–10 exchanges the assistant writes the structured summary, which joins the chart's
allergies, medicines and problems, and the draft prescription goes to the physicians' queue
(``prescribing.draft_from_consultation``).

Patients see their own consultations; doctors and nurses of the tenant see the queue (most
urgent first, then longest waiting), live on ``tenant:<id>:consultations``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.audit import service as audit
from carebase.consult import phi
from carebase.consult.engine import MAX_EXCHANGES, Context, Engine, OfflineEngine, Reply, Turn
from carebase.consult.models import consultation_turns, consultations
from carebase.encounters import service as encounters
from carebase.knowledge import service as knowledge
from carebase.patients import service as patients
from carebase.platform import realtime
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.errors import Conflict, NotFound, ValidationFailed
from carebase.platform.ids import new_id
from carebase.prescribing import service as prescribing
from carebase.settings import Settings, get_settings

realtime.topic("consultations", "read:consultations")

MAX_MESSAGE_CHARS = 2000
URGENCY = prescribing.URGENCY


@dataclass(frozen=True)
class TurnOut:
    seq: int
    role: str
    text: str
    created_at: datetime


@dataclass(frozen=True)
class Consultation:
    id: uuid.UUID
    patient_id: uuid.UUID
    status: str
    urgency: int
    engine: str
    emergency: dict[str, Any] | None
    summary: dict[str, Any] | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    turns: list[TurnOut]
    handled_at: datetime | None = None
    handled_note: str | None = None


def engine_for(settings: Settings) -> Engine:
    if settings.llm_base_url:
        from carebase.consult.llm import LlmEngine  # httpx client and prompt only when configured

        return LlmEngine(settings)
    return OfflineEngine()


def _identity(p: patients.Patient) -> phi.Identity:
    others = tuple(n for n in (p.emergency_contact_name,) if n)
    return phi.Identity(given_name=p.given_name or "", family_name=p.family_name or "", other_names=others,
                        phone=p.phone, other_phones=tuple(n for n in (p.emergency_contact_phone,) if n),
                        email=p.email, birth_date=p.birth_date, ids=tuple(i for i in (p.mrn, p.global_id) if i))


async def _context(session: AsyncSession, principal: Principal, p: patients.Patient, *, complaint: str,
                   engine: Engine) -> Context:
    """What the engine may know besides the conversation: the chart without identity, and, for an
    engine that reads them, the knowledge base's entries for the (de-identified) complaint."""
    chart = await encounters.chart(session, principal)
    hits = await knowledge.search(session, complaint, kind="condition", limit=3) if engine.uses_knowledge else []
    return Context(
        age_bracket=phi.age_bracket(p.birth_date, date.today()), sex=p.gender,
        allergies=tuple(a["substance"] for a in chart["allergies"]),
        medicines=tuple(m["name"] for m in chart["medications"]),
        problems=tuple(pr["name"] for pr in chart["problems"]),
        knowledge=tuple(_knowledge_line(h.data) for h in hits))


def _knowledge_line(condition: dict[str, Any]) -> str:
    flags = "; ".join(f["sign"] for f in condition.get("red_flags", [])[:4])
    first = "; ".join(f"{f['generic']} ({f.get('adult') or f.get('child') or ''})"
                      for f in condition.get("first_line", [])[:3])
    return (f"{condition['name']} ({condition['code']}). Red flags: {flags or 'none listed'}. "
            f"First line: {first or 'none'}.")


def _check_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ValidationFailed("Write what is troubling you.", code="empty-message")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ValidationFailed(f"Please keep a message under {MAX_MESSAGE_CHARS} characters.",
                               code="message-too-long")
    return text


async def start(session: AsyncSession, principal: Principal, text: str, *, engine: Engine | None = None
                ) -> Consultation:
    """A patient starts a consultation with their first message. ``engine``: the settings' unless
    given (the demo seed always uses the offline one)."""
    require(principal, "create:consultations")
    tenant_id = require_tenant(principal)
    text = _check_text(text)
    me = await patients.own_patient(session, principal)
    consultation_id = new_id()
    engine = engine or engine_for(get_settings())
    await session.execute(consultations.insert().values(
        id=consultation_id, tenant_id=tenant_id, patient_id=me.id, account_id=principal.account_id, status="active",
        urgency=0, engine=engine.name))
    await _patient_says(session, principal, me, consultation_id, {}, text, engine)
    return await get(session, principal, consultation_id)


async def say(session: AsyncSession, principal: Principal, consultation_id: uuid.UUID, text: str, *,
              engine: Engine | None = None) -> Consultation:
    """The patient's next message; answered by the assistant in the same request."""
    require(principal, "create:consultations")
    text = _check_text(text)
    row = (await session.execute(select(consultations).where(
        consultations.c.id == consultation_id, consultations.c.account_id == principal.account_id)
        .with_for_update())).first()
    if row is None:
        raise NotFound("No such consultation of yours.", code="consultation-not-found")
    if row.status != "active":
        raise Conflict(f"This consultation is {row.status}; start a new one if something else is troubling you.",
                       code="consultation-closed", status_now=row.status)
    me = await patients.own_patient(session, principal)
    await _patient_says(session, principal, me, consultation_id, row.phi_tokens or {}, text,
                        engine or engine_for(get_settings()))
    return await get(session, principal, consultation_id)


async def _add_turn(session: AsyncSession, tenant_id: uuid.UUID, consultation_id: uuid.UUID, seq: int, role: str,
                    text: str, model_text: str) -> None:
    await session.execute(consultation_turns.insert().values(
        id=new_id(), consultation_id=consultation_id, tenant_id=tenant_id, seq=seq, role=role, text=text,
        model_text=model_text))


async def _patient_says(session: AsyncSession, principal: Principal, me: patients.Patient,
                        consultation_id: uuid.UUID, tokens: dict[str, str], text: str, engine: Engine) -> None:
    """``tokens``: the consultation's PHI map so far (its row is locked by the caller)."""
    tenant_id = me.tenant_id
    # What the engine saw so far; the turns are numbered from it (the row lock keeps it current).
    history = [Turn(t.role, t.model_text) for t in (await session.execute(
        select(consultation_turns.c.role, consultation_turns.c.model_text)
        .where(consultation_turns.c.consultation_id == consultation_id).order_by(consultation_turns.c.seq))).all()]
    mapping = phi.Mapping.from_json(tokens)
    stripped, mapping = phi.strip(text, _identity(me), mapping)
    await _add_turn(session, tenant_id, consultation_id, len(history) + 1, "patient", text, stripped)
    history.append(Turn("patient", stripped))
    channel = f"tenant:{tenant_id}:consultations"

    emergencies = prescribing.emergency_signs(text)
    if emergencies:
        advice = " ".join(e.advice for e in emergencies)
        await _add_turn(session, tenant_id, consultation_id, len(history) + 1, "assistant", advice, advice)
        await session.execute(consultations.update().where(consultations.c.id == consultation_id).values(
            status="emergency", urgency=2, phi_tokens=mapping.to_json(), updated_at=func.now(),
            finished_at=func.now(),
            emergency={"signs": [e.sign for e in emergencies], "advice": advice,
                       "at": datetime.now(UTC).isoformat()}))
        await realtime.publish(session, channel, {"type": "consultation:emergency", "id": str(consultation_id)})
        return

    context = await _context(session, principal, me, complaint=history[0].text, engine=engine)
    reply: Reply = await engine.reply(context, history)
    if (reply.done and not reply.summary) or (not reply.done
                                              and sum(1 for t in history if t.role == "patient") >= MAX_EXCHANGES):
        # The assistant would not stop, or its summary was not one: the offline summary closes
        # the intake on time.
        offline = OfflineEngine()
        reply = Reply(reply.text, done=True, summary=offline.summarise(context, history, offline.plan(
            next((t.text for t in history if t.role == "patient"), ""))[0]))
    await _add_turn(session, tenant_id, consultation_id, len(history) + 1, "assistant",
                    phi.reidentify(reply.text, mapping), reply.text)
    values: dict[str, Any] = {"phi_tokens": mapping.to_json(), "updated_at": func.now()}
    if reply.done:
        summary = _reidentify(reply.summary or {}, mapping)
        values.update(status="completed", summary=summary, finished_at=func.now(),
                      urgency=1 if _urgent(summary) else 0)
    await session.execute(consultations.update().where(consultations.c.id == consultation_id).values(**values))
    if reply.done:
        await prescribing.draft_from_consultation(session, principal, patient_id=me.id,
                                                  consultation_id=consultation_id, summary=values["summary"],
                                                  urgency=values["urgency"])
        await realtime.publish(session, channel, {"type": "consultation:completed", "id": str(consultation_id)})


def _reidentify(value: Any, mapping: phi.Mapping) -> Any:
    if isinstance(value, str):
        return phi.reidentify(value, mapping)
    if isinstance(value, list):
        return [_reidentify(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: _reidentify(v, mapping) for k, v in value.items()}
    return value


def _urgent(summary: dict[str, Any]) -> bool:
    """Severe pain, or a high fever, go before routine requests in the queue."""
    severity = summary.get("severity")
    if isinstance(severity, int) and severity >= 8:
        return True
    temperature = str((summary.get("vitals") or {}).get("temperature", ""))
    try:
        value = float("".join(c for c in temperature if c.isdigit() or c == "."))
    except ValueError:
        return False
    return value >= 39.5 if value < 50 else value >= 103


# -- reading -------------------------------------------------------------------------------------


def _consultation(r, turns: list[TurnOut]) -> Consultation:
    return Consultation(r.id, r.patient_id, r.status, r.urgency, r.engine, r.emergency, r.summary, r.started_at,
                        r.updated_at, r.finished_at, turns, r.handled_at, r.handled_note)


async def get(session: AsyncSession, principal: Principal, consultation_id: uuid.UUID) -> Consultation:
    """One consultation with every turn: its patient, or the tenant's clinicians (audited read)."""
    row = (await session.execute(select(consultations).where(consultations.c.id == consultation_id))).first()
    if row is None or not (row.account_id == principal.account_id or principal.can("read:consultations")):
        raise NotFound("No such consultation.", code="consultation-not-found")
    turns = [TurnOut(t.seq, t.role, t.text, t.created_at) for t in (await session.execute(
        select(consultation_turns).where(consultation_turns.c.consultation_id == consultation_id)
        .order_by(consultation_turns.c.seq))).all()]
    await audit.record_reads(session, principal, patient_ids=[row.patient_id], record_type="consultation",
                             record_id=row.id, purpose=audit.purpose_of(principal, None))
    return _consultation(row, turns)


async def mine(session: AsyncSession, principal: Principal, *, limit: int = 50) -> list[Consultation]:
    rows = (await session.execute(select(consultations).where(consultations.c.account_id == principal.account_id)
                                  .order_by(consultations.c.started_at.desc()).limit(limit))).all()
    return [_consultation(r, []) for r in rows]


async def queue(session: AsyncSession, principal: Principal, *, status: str | None = None,
                limit: int = 100) -> list[Consultation]:
    """The clinicians' queue: emergencies first, then urgent, then routine; longest waiting first."""
    require(principal, "read:consultations")
    require_tenant(principal)
    stmt = select(consultations).order_by(consultations.c.urgency.desc(), consultations.c.updated_at).limit(limit)
    stmt = stmt.where(consultations.c.status == status) if status else stmt.where(
        consultations.c.status.in_(("emergency", "completed")))
    return [_consultation(r, []) for r in (await session.execute(stmt)).all()]


async def handle_emergency(session: AsyncSession, principal: Principal, consultation_id: uuid.UUID, *,
                           note: str) -> Consultation:
    """A clinician has dealt with an emergency (called the patient, sent an ambulance): it leaves
    the queue, with who, when and what they did."""
    require(principal, "read:consultations")
    note = (note or "").strip()
    if not note:
        raise ValidationFailed("Say what was done (for the record).", code="note-required")
    row = (await session.execute(select(consultations).where(consultations.c.id == consultation_id)
                                 .with_for_update())).first()
    if row is None:
        raise NotFound("No such consultation.", code="consultation-not-found")
    if row.status != "emergency":
        raise Conflict(f"Only an emergency is handled; this consultation is {row.status}.",
                       code="not-an-emergency", status_now=row.status)
    await session.execute(consultations.update().where(consultations.c.id == consultation_id).values(
        status="handled", handled_by=principal.account_id, handled_at=func.now(), handled_note=note[:2000],
        updated_at=func.now()))
    await realtime.publish(session, f"tenant:{row.tenant_id}:consultations",
                           {"type": "consultation:handled", "id": str(consultation_id)})
    return await get(session, principal, consultation_id)
