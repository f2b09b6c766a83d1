"""Patients API (the register; issue 4 adds the chart)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from carebase.patients import schemas, service
from carebase.platform.errors import ValidationFailed
from carebase.platform.web import CurrentPrincipal, DbSession

router = APIRouter(prefix="/api/v1", tags=["patients"])

Purpose = Annotated[str | None, Header(alias="X-Purpose-Of-Use", max_length=32,
                                        description="Why you read this: treatment, payment, operations, "
                                                    "patient-request, emergency, legal")]


def _out(p: service.Patient) -> schemas.PatientOut:
    return schemas.PatientOut(id=p.id, mrn=p.mrn, given_name=p.given_name, family_name=p.family_name,
                              birth_date=p.birth_date, sex=p.sex, phone=p.phone, email=p.email,
                              account_id=p.account_id, created_at=p.created_at, updated_at=p.updated_at,
                              erased=p.erased_at is not None, version=p.version)


def _etag(p: service.Patient) -> str:
    return f'W/"{p.version}"'


def _if_match(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.removeprefix("W/").strip('"'))
    except ValueError:
        raise ValidationFailed("If-Match must be the ETag you read, like W/\"3\".", code="bad-if-match") from None


@router.post("/patients", status_code=status.HTTP_201_CREATED, response_model=schemas.PatientOut,
             summary="Register a patient (needs write:patients)")
async def register_patient(body: schemas.PatientIn, principal: CurrentPrincipal, session: DbSession,
                           response: Response) -> schemas.PatientOut:
    p = await service.register_patient(session, principal, **body.model_dump())
    response.headers["ETag"] = _etag(p)
    response.headers["Location"] = f"/api/v1/patients/{p.id}"
    return _out(p)


@router.get("/patients", response_model=list[schemas.PatientOut],
            summary="Find patients by name or MRN (each one listed is recorded in the read audit)")
async def search_patients(principal: CurrentPrincipal, session: DbSession, purpose: Purpose = None,
                          q: Annotated[str | None, Query(max_length=100)] = None,
                          limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[schemas.PatientOut]:
    return [_out(p) for p in await service.search_patients(session, principal, q=q, limit=limit, purpose=purpose)]


@router.get("/patients/{patient_id}", response_model=schemas.PatientOut, summary="One patient (audited read)")
async def get_patient(patient_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession, response: Response,
                      purpose: Purpose = None) -> schemas.PatientOut:
    p = await service.get_patient(session, principal, patient_id, purpose)
    response.headers["ETag"] = _etag(p)
    return _out(p)


@router.patch("/patients/{patient_id}", response_model=schemas.PatientOut,
              summary="Correct demographics; send If-Match with the ETag you read to avoid lost updates")
async def update_patient(patient_id: uuid.UUID, body: schemas.PatientPatch, principal: CurrentPrincipal,
                         session: DbSession, response: Response,
                         if_match: Annotated[str | None, Header(max_length=40)] = None) -> schemas.PatientOut:
    p = await service.update_patient(session, principal, patient_id, expected_version=_if_match(if_match),
                                     changes=body.model_dump(exclude_unset=True))
    response.headers["ETag"] = _etag(p)
    return _out(p)


@router.post("/patients/{patient_id}/erase", status_code=status.HTTP_204_NO_CONTENT,
             summary="Erase a patient's personal data for good (crypto-shredding); needs erase:patients")
async def erase_patient(patient_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.erase_patient(session, principal, patient_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
