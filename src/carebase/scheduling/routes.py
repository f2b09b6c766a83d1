"""Scheduling API: availability templates and exceptions, free slots, booking, the status
workflow and rescheduling."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from carebase.platform.web import CurrentPrincipal, DbSession
from carebase.scheduling import schemas, service

router = APIRouter(prefix="/api/v1", tags=["scheduling"])


def _out(a: service.Appointment) -> schemas.AppointmentOut:
    return schemas.AppointmentOut(
        id=a.id, patient_id=a.patient_id, provider_id=a.provider_id, location_id=a.location_id, type=a.type,
        starts_at=a.starts_at, ends_at=a.ends_at, status=a.status, allowed_next=list(a.allowed_next),
        reason_for_visit=a.reason_for_visit, cancel_reason=a.cancel_reason, created_at=a.created_at,
        updated_at=a.updated_at, version=a.version)


def _windows(ws: list[service.Window]) -> list[schemas.WindowOut]:
    return [schemas.WindowOut(weekday=w.weekday, starts=w.starts, ends=w.ends, slot_minutes=w.slot_minutes)
            for w in ws]


@router.put("/providers/{provider_id}/availability", response_model=list[schemas.WindowOut],
            summary="Replace a provider's weekly availability at a location (wall-clock times there; "
                    "daylight-saving changes are followed). Needs manage:schedules.")
async def set_availability(provider_id: uuid.UUID, body: schemas.AvailabilityIn, principal: CurrentPrincipal,
                           session: DbSession) -> list[schemas.WindowOut]:
    return _windows(await service.set_availability(
        session, principal, provider_id, location_id=body.location_id,
        windows=[w.model_dump() for w in body.windows], valid_from=body.valid_from, valid_until=body.valid_until))


@router.get("/providers/{provider_id}/availability", response_model=list[schemas.WindowOut],
            summary="A provider's weekly availability at a location")
async def get_availability(provider_id: uuid.UUID, location_id: uuid.UUID, principal: CurrentPrincipal,
                           session: DbSession) -> list[schemas.WindowOut]:
    return _windows(await service.get_availability(session, principal, provider_id, location_id))


@router.post("/providers/{provider_id}/availability-exceptions", status_code=status.HTTP_201_CREATED,
             response_model=schemas.ExceptionOut, summary="Block time off (leave, holiday): no slots offered in it")
async def add_exception(provider_id: uuid.UUID, body: schemas.ExceptionIn, principal: CurrentPrincipal,
                        session: DbSession) -> schemas.ExceptionOut:
    return schemas.ExceptionOut(id=await service.add_exception(
        session, principal, provider_id, starts_at=body.starts_at, ends_at=body.ends_at, reason=body.reason))


@router.delete("/providers/{provider_id}/availability-exceptions/{exception_id}",
               status_code=status.HTTP_204_NO_CONTENT, summary="Remove a blocked period")
async def remove_exception(provider_id: uuid.UUID, exception_id: uuid.UUID, principal: CurrentPrincipal,
                           session: DbSession) -> Response:
    await service.remove_exception(session, principal, provider_id, exception_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/providers/{provider_id}/slots", response_model=list[schemas.SlotOut],
            summary="Free slots from the availability, minus exceptions, bookings and the past")
async def free_slots(provider_id: uuid.UUID, location_id: uuid.UUID, principal: CurrentPrincipal,
                     session: DbSession, start_date: Annotated[date, Query(description="First local day")],
                     days: Annotated[int, Query(ge=1, le=31)] = 7,
                     type: Annotated[schemas.AppointmentType | None, Query(
                         description="Only starts where a visit of this type fits, each slot as long as the "
                                     "visit")] = None) -> list[schemas.SlotOut]:
    slots = await service.free_slots(session, principal, provider_id, location_id=location_id, start=start_date,
                                     days=days, type=type)
    return [schemas.SlotOut(starts_at=s.starts_at, ends_at=s.ends_at) for s in slots]


@router.post("/appointments", status_code=status.HTTP_201_CREATED, response_model=schemas.AppointmentOut,
             summary="Book a visit (staff for any patient, patients for themselves). A taken time gets 409 "
                     "`slot-taken`: of concurrent bookings of one slot exactly one succeeds.")
async def book(body: schemas.AppointmentIn, principal: CurrentPrincipal, session: DbSession,
               response: Response) -> schemas.AppointmentOut:
    a = await service.book(session, principal, **body.model_dump())
    response.headers["Location"] = f"/api/v1/appointments/{a.id}"
    return _out(a)


@router.get("/appointments", response_model=list[schemas.AppointmentOut],
            summary="Appointments by provider, patient, time range and status (patients: their own)")
async def list_appointments(principal: CurrentPrincipal, session: DbSession,
                            provider_id: uuid.UUID | None = None, patient_id: uuid.UUID | None = None,
                            start: Annotated[datetime | None, Query(alias="from")] = None,
                            end: Annotated[datetime | None, Query(alias="to")] = None,
                            status_: Annotated[schemas.Status | None, Query(alias="status")] = None,
                            limit: Annotated[int, Query(ge=1, le=500)] = 200) -> list[schemas.AppointmentOut]:
    found = await service.list_appointments(session, principal, provider_id=provider_id, patient_id=patient_id,
                                            start=start, end=end, status=status_, limit=limit)
    return [_out(a) for a in found]


@router.get("/appointments/{appointment_id}", response_model=schemas.AppointmentOut, summary="One appointment")
async def get_appointment(appointment_id: uuid.UUID, principal: CurrentPrincipal,
                          session: DbSession) -> schemas.AppointmentOut:
    return _out(await service.get_appointment(session, principal, appointment_id))


@router.post("/appointments/{appointment_id}/status", response_model=schemas.AppointmentOut,
             summary="Move along scheduled → confirmed → checked_in → in_progress → completed, or to cancelled "
                     "(with a reason) / no_show; other moves get 409 naming the allowed ones")
async def change_status(appointment_id: uuid.UUID, body: schemas.StatusIn, principal: CurrentPrincipal,
                        session: DbSession) -> schemas.AppointmentOut:
    return _out(await service.change_status(session, principal, appointment_id, status=body.status,
                                            reason=body.reason))


@router.post("/appointments/{appointment_id}/reschedule", response_model=schemas.AppointmentOut,
             summary="Move a scheduled or confirmed visit to another free time")
async def reschedule(appointment_id: uuid.UUID, body: schemas.RescheduleIn, principal: CurrentPrincipal,
                     session: DbSession) -> schemas.AppointmentOut:
    return _out(await service.reschedule(session, principal, appointment_id, starts_at=body.starts_at,
                                         duration_minutes=body.duration_minutes))


class QueueOut(schemas.BaseModel):
    serving: list[schemas.AppointmentOut]
    waiting: list[schemas.AppointmentOut]


@router.get("/locations/{location_id}/queue", response_model=QueueOut,
            summary="Today's visit queue at a location: being seen (latest called first) and waiting")
async def get_queue(location_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> QueueOut:
    q = await service.queue(session, principal, location_id)
    return QueueOut(serving=[_out(a) for a in q["serving"]], waiting=[_out(a) for a in q["waiting"]])


@router.post("/locations/{location_id}/queue/call-next", response_model=schemas.AppointmentOut | None,
             summary="Call the next checked-in patient (their visit becomes in_progress; boards update live). "
                     "null when nobody is waiting.")
async def call_next(location_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession):
    a = await service.call_next(session, principal, location_id)
    return _out(a) if a else None
