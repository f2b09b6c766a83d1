"""Consultation API: a patient converses with the intake assistant; clinicians see the queue."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from carebase.consult import schemas, service
from carebase.platform.web import CurrentPrincipal, DbSession

router = APIRouter(prefix="/api/v1", tags=["consultations"])


def _out(c: service.Consultation) -> schemas.ConsultationOut:
    return schemas.ConsultationOut(
        id=c.id, patient_id=c.patient_id, status=c.status, urgency=service.URGENCY[c.urgency], engine=c.engine,
        emergency=c.emergency, summary=c.summary, started_at=c.started_at, updated_at=c.updated_at,
        finished_at=c.finished_at,
        turns=[schemas.TurnOut(seq=t.seq, role=t.role, text=t.text, created_at=t.created_at) for t in c.turns],
        handled_at=c.handled_at, handled_note=c.handled_note)


@router.post("/consultations", status_code=status.HTTP_201_CREATED, response_model=schemas.ConsultationOut,
             summary="Start a consultation (patients): the first message, answered by the intake assistant. "
                     "Emergency red flags stop it at once with advice and alert the clinicians.")
async def start(body: schemas.MessageIn, principal: CurrentPrincipal, session: DbSession) -> schemas.ConsultationOut:
    return _out(await service.start(session, principal, body.text))


@router.post("/consultations/{consultation_id}/messages", response_model=schemas.ConsultationOut,
             summary="The patient's next message; the assistant's reply is in the returned turns. After 5–10 "
                     "exchanges the consultation is completed with a summary for the physician.")
async def say(consultation_id: uuid.UUID, body: schemas.MessageIn, principal: CurrentPrincipal,
              session: DbSession) -> schemas.ConsultationOut:
    return _out(await service.say(session, principal, consultation_id, body.text))


@router.get("/consultations/{consultation_id}", response_model=schemas.ConsultationOut,
            summary="One consultation with its transcript: its patient, or the organization's doctors and nurses "
                    "(read audited)")
async def get(consultation_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.ConsultationOut:
    return _out(await service.get(session, principal, consultation_id))


@router.get("/consultations", response_model=list[schemas.ConsultationOut],
            summary="Patients: their own consultations, newest first. Doctors and nurses: the queue, emergencies "
                    "first, then urgent, then routine, longest waiting first (live on "
                    "tenant:<id>:consultations)")
async def listing(principal: CurrentPrincipal, session: DbSession,
                  status: Literal["active", "emergency", "handled", "completed"] | None = None,
                  limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[schemas.ConsultationOut]:
    if principal.can("read:consultations"):
        found = await service.queue(session, principal, status=status, limit=limit)
    else:
        found = await service.mine(session, principal, limit=limit)
    return [_out(c) for c in found]


@router.post("/consultations/{consultation_id}/handled", response_model=schemas.ConsultationOut,
             summary="Doctors and nurses: an emergency has been dealt with (say what was done); it leaves the queue")
async def handled(consultation_id: uuid.UUID, body: schemas.HandledIn, principal: CurrentPrincipal,
                  session: DbSession) -> schemas.ConsultationOut:
    return _out(await service.handle_emergency(session, principal, consultation_id, note=body.note))
