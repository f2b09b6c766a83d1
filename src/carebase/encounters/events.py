"""Encounter events. The clinical content is PHI: sealed with the patient's own key, so erasing the
patient erases their chart from the log too. Projectors only write."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import cast
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.encounters.models import encounters
from carebase.platform.eventstore import StoredEvent, projector

RECORDED = "encounters.recorded"
AMENDED = "encounters.amended"
DISCHARGED = "encounters.discharged"

LISTS = ("diagnoses", "procedures", "allergies", "problems", "medications", "lab_results")
TEXTS = ("chief_complaint", "treatment_plan", "follow_up_instructions", "note")


def _recorded_values(ev: StoredEvent) -> dict:
    d, phi = ev.data, ev.phi or {}  # no PHI: the patient was erased, the chart replays empty
    return dict(
        id=ev.stream_id, tenant_id=ev.tenant_id, patient_id=uuid.UUID(d["patient_id"]),
        provider_id=uuid.UUID(d["provider_id"]),
        appointment_id=uuid.UUID(d["appointment_id"]) if d.get("appointment_id") else None, type=d["type"],
        occurred_at=datetime.fromisoformat(d["occurred_at"]), vitals=phi.get("vitals") or {},
        **{k: phi.get(k) or [] for k in LISTS}, **{k: phi.get(k) for k in TEXTS},
        signed_by=uuid.UUID(d["signed_by"]), signed_at=ev.recorded_at, amendments=[],
        status=d.get("status", "finished"), ended_at=None, visit_number=d.get("visit_number"), version=ev.version)


def _amendment(ev: StoredEvent) -> tuple[str, object, dict]:
    """(field, its new value, the amendment entry the record keeps)."""
    field, phi = ev.data["field"], ev.phi or {}
    entry = {"at": ev.recorded_at.isoformat(), "by": ev.data["by"], "field": field,
             "previous": phi.get("previous"), "value": phi.get("value"), "reason": phi.get("reason")}
    return field, phi.get("value") if field in TEXTS else (phi.get("value") or []), entry


def replay(stream: list[StoredEvent]) -> list[tuple[StoredEvent, dict]]:
    """Each event of one encounter's stream with the record as it stood right after it (FHIR
    vread and history): the same values the projectors below write."""
    state: dict = {}
    out = []
    for ev in stream:
        if ev.type == RECORDED:
            state = _recorded_values(ev)
        elif ev.type == AMENDED:
            field, value, entry = _amendment(ev)
            state = {**state, field: value, "amendments": [*state["amendments"], entry], "version": ev.version}
        elif ev.type == DISCHARGED:
            state = {**state, "status": "finished", "ended_at": datetime.fromisoformat(ev.data["ended_at"]),
                     "version": ev.version}
        else:
            continue
        out.append((ev, state))
    return out


@projector(RECORDED)
async def _recorded(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(insert(encounters).values(**_recorded_values(ev)))


@projector(DISCHARGED)
async def _discharged(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(encounters.update().where(encounters.c.id == ev.stream_id).values(
        status="finished", ended_at=datetime.fromisoformat(ev.data["ended_at"]), version=ev.version))


@projector(AMENDED)
async def _amended(session: AsyncSession, ev: StoredEvent) -> None:
    field, value, entry = _amendment(ev)
    await session.execute(encounters.update().where(encounters.c.id == ev.stream_id).values(
        {field: value, "amendments": encounters.c.amendments.op("||")(cast([entry], JSONB)),
         "version": ev.version}))


@projector("patients.erased")
async def _patient_erased(session: AsyncSession, ev: StoredEvent) -> None:
    # The patient's key is shredded with this event, so replays give empty charts; the live read
    # model is scrubbed here to match.
    await session.execute(encounters.update().where(encounters.c.patient_id == ev.stream_id).values(
        vitals={}, amendments=[], **{k: [] for k in LISTS}, **{k: None for k in TEXTS}))
