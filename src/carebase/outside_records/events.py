"""Outside-record events. The resource is PHI: sealed with the patient's own key (a record about
no patient, such as a practitioner, with its own), so erasing the patient erases what other
systems sent about them too. Projectors only write."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.outside_records import index
from carebase.outside_records.models import outside_records
from carebase.platform.eventstore import StoredEvent, projector

RECEIVED = "outside_records.received"
REVISED = "outside_records.revised"
RETRACTED = "outside_records.retracted"


def _indexed(resource: dict[str, Any]) -> dict[str, Any]:
    return dict(tokens=index.tokens(resource), refs=index.references(resource),
                occurred_at=index.occurred_at(resource), resource=resource,
                source=((resource.get("meta") or {}).get("source") or None))


_INSERT = insert(outside_records)


def replay(stream: list[StoredEvent]) -> list[tuple[StoredEvent, dict[str, Any] | None]]:
    """Each event of one record's stream with the resource as it stood right after it (None once
    retracted, or when the patient was erased): FHIR vread and history."""
    out: list[tuple[StoredEvent, dict[str, Any] | None]] = []
    current: dict[str, Any] | None = None
    for ev in stream:
        if ev.type in (RECEIVED, REVISED):
            current = (ev.phi or {}).get("resource")
        elif ev.type == RETRACTED:
            current = None
        else:
            continue
        out.append((ev, current))
    return out


@projector(RECEIVED)
async def _received(session: AsyncSession, ev: StoredEvent) -> None:
    resource = (ev.phi or {}).get("resource")
    if resource is None:
        return  # the patient was erased: nothing of the record is left to show
    d = ev.data
    # One prepared statement for every row (an import projects thousands in a row).
    await session.execute(_INSERT, dict(
        id=ev.stream_id, tenant_id=ev.tenant_id, resource_type=d["resource_type"],
        patient_id=uuid.UUID(d["patient_id"]) if d.get("patient_id") else None, received_by=uuid.UUID(d["by"]),
        received_at=ev.recorded_at, updated_at=ev.recorded_at, deleted_at=None, version=ev.version,
        **_indexed(resource)))


@projector(REVISED)
async def _revised(session: AsyncSession, ev: StoredEvent) -> None:
    resource = (ev.phi or {}).get("resource")
    if resource is None:
        return
    await session.execute(outside_records.update().where(outside_records.c.id == ev.stream_id).values(
        updated_at=ev.recorded_at, version=ev.version, **_indexed(resource)))


@projector(RETRACTED)
async def _retracted(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(outside_records.update().where(outside_records.c.id == ev.stream_id).values(
        deleted_at=ev.recorded_at, updated_at=ev.recorded_at, version=ev.version))


@projector("patients.erased")
async def _patient_erased(session: AsyncSession, ev: StoredEvent) -> None:
    # The patient's key is shredded with this event, so a replay finds nothing to show; the live
    # read model drops their outside records to match.
    await session.execute(outside_records.delete().where(outside_records.c.patient_id == ev.stream_id))
