"""Patients API: registration with duplicate checks, search, the record, consents, e-mail
verification, merge and erasure; ``/me/patient`` for patients' own record."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from fastapi.responses import RedirectResponse

from carebase.patients import schemas, service
from carebase.platform.errors import ValidationFailed
from carebase.platform.web import CurrentPrincipal, DbSession, if_match_version, weak_etag

router = APIRouter(prefix="/api/v1", tags=["patients"])

Purpose = Annotated[str | None, Header(alias="X-Purpose-Of-Use", max_length=32,
                                        description="Why you read this: treatment, payment, operations, "
                                                    "patient-request, emergency, legal")]
IfMatch = Annotated[str | None, Header(max_length=40, description="The ETag you read, e.g. W/\"3\"")]


def _out(p: service.Patient) -> schemas.PatientOut:
    contact = None
    if p.emergency_contact_name and p.emergency_contact_phone:
        contact = schemas.EmergencyContact(name=p.emergency_contact_name, phone=p.emergency_contact_phone,
                                           relationship=p.emergency_contact_relationship)
    gov = ({"system": p.government_id_system, "last4": p.government_id_last4}
           if p.government_id_system and p.government_id_last4 else None)
    return schemas.PatientOut(
        id=p.id, global_id=p.global_id, mrn=p.mrn, given_name=p.given_name, family_name=p.family_name,
        birth_date=p.birth_date, gender=p.gender, phone=p.phone, email=p.email,
        email_verified=p.email_verified_at is not None, country=p.country, timezone=p.timezone,
        preferred_language=p.preferred_language, emergency_contact=contact, government_id=gov,
        consents={k: schemas.ConsentOut(**v) for k, v in p.consents().items()}, account_id=p.account_id,
        merged_into=p.merged_into, created_at=p.created_at, updated_at=p.updated_at, erased=p.erased_at is not None,
        version=p.version)


def _with_etag(p: service.Patient, response: Response) -> schemas.PatientOut:
    response.headers["ETag"] = weak_etag(p.version)
    return _out(p)


@router.post("/patients", status_code=status.HTTP_201_CREATED, response_model=schemas.PatientOut,
             summary="Register a patient (needs write:patients). Possible duplicates (same name and birth date, "
                     "or same phone or e-mail) get 409 `possible-duplicates` listing the candidates; send "
                     "`allow_duplicate: true` to register anyway. An e-mail address gets a verification link.")
async def register_patient(body: schemas.PatientIn, principal: CurrentPrincipal, session: DbSession,
                           response: Response) -> schemas.PatientOut:
    p = await service.register_patient(session, principal, **body.model_dump())
    response.headers["Location"] = f"/api/v1/patients/{p.id}"
    return _with_etag(p, response)


@router.get("/patients", response_model=list[schemas.PatientOut],
            summary="Find patients: `q` is a name prefix (accents and case ignored), phone, e-mail, global id, "
                    "MRN, id or birth date; narrow with `birth_date` or a government id. Each patient listed is "
                    "recorded in the read audit.")
async def search_patients(principal: CurrentPrincipal, session: DbSession, purpose: Purpose = None,
                          q: Annotated[str | None, Query(max_length=100)] = None,
                          birth_date: date | None = None,
                          government_id_system: Annotated[str | None, Query(pattern=r"^[A-Z0-9-]{2,32}$")] = None,
                          government_id_value: Annotated[str | None, Query(min_length=4, max_length=64)] = None,
                          limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[schemas.PatientOut]:
    if (government_id_system is None) != (government_id_value is None):
        raise ValidationFailed("Send government_id_system and government_id_value together.",
                               code="incomplete-government-id")
    gov = (government_id_system, government_id_value) if government_id_system and government_id_value else None
    found = await service.search_patients(session, principal, q=q, birth_date=birth_date, government_id=gov,
                                          limit=limit, purpose=purpose)
    return [_out(p) for p in found]


@router.get("/patients/{patient_id}", response_model=schemas.PatientOut,
            summary="One patient (audited read). A merged record answers 308 to the record it was merged into.",
            responses={308: {"description": "Merged: see Location"}})
async def get_patient(patient_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession, response: Response,
                      purpose: Purpose = None):
    p = await service.get_patient(session, principal, patient_id, purpose)
    if p.merged_into:
        return RedirectResponse(f"/api/v1/patients/{p.merged_into}", status_code=status.HTTP_308_PERMANENT_REDIRECT)
    return _with_etag(p, response)


@router.patch("/patients/{patient_id}", response_model=schemas.PatientOut,
              summary="Correct demographics; send If-Match with the ETag you read to avoid lost updates")
async def update_patient(patient_id: uuid.UUID, body: schemas.PatientPatch, principal: CurrentPrincipal,
                         session: DbSession, response: Response, if_match: IfMatch = None) -> schemas.PatientOut:
    p = await service.update_patient(session, principal, patient_id, expected_version=if_match_version(if_match),
                                     changes=body.model_dump(exclude_unset=True))
    return _with_etag(p, response)


@router.put("/patients/{patient_id}/consents", response_model=schemas.PatientOut,
            summary="Record consents given (true) or withdrawn (false), each stamped with the time")
async def set_consents(patient_id: uuid.UUID, body: schemas.Consents, principal: CurrentPrincipal,
                       session: DbSession, response: Response) -> schemas.PatientOut:
    return _with_etag(await service.set_consents(session, principal, patient_id, body.model_dump()), response)


@router.post("/patients/{patient_id}/merge", response_model=schemas.PatientOut,
             summary="Merge this record into another one (the same person registered twice); this id then "
                     "redirects to the kept record")
async def merge_patients(patient_id: uuid.UUID, body: schemas.MergeIn, principal: CurrentPrincipal,
                         session: DbSession, response: Response) -> schemas.PatientOut:
    return _with_etag(await service.merge_patients(session, principal, patient_id, body.into), response)


@router.post("/patients/{patient_id}/email-verification", status_code=status.HTTP_202_ACCEPTED,
             summary="Send the patient a new e-mail verification link")
async def resend_email_verification(patient_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.resend_email_verification(session, principal, patient_id)
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.post("/patient-email-verifications", status_code=status.HTTP_204_NO_CONTENT,
             summary="Confirm a patient's e-mail address with the token from the link (no sign-in needed)")
async def confirm_email(body: schemas.EmailVerificationConfirm, session: DbSession) -> Response:
    await service.confirm_email(session, body.token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/patients/{patient_id}/erase", status_code=status.HTTP_204_NO_CONTENT,
             summary="Erase a patient's personal data for good (crypto-shredding); needs erase:patients")
async def erase_patient(patient_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.erase_patient(session, principal, patient_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- the patient's own record ------------------------------------------------------------------


@router.get("/me/patient", response_model=schemas.PatientOut, summary="Your own patient record (patients)")
async def own_patient(principal: CurrentPrincipal, session: DbSession, response: Response) -> schemas.PatientOut:
    return _with_etag(await service.own_patient(session, principal), response)


@router.patch("/me/patient", response_model=schemas.PatientOut,
              summary="Update your own contact details, language, time zone and emergency contact")
async def update_own_profile(body: schemas.OwnProfilePatch, principal: CurrentPrincipal, session: DbSession,
                             response: Response, if_match: IfMatch = None) -> schemas.PatientOut:
    p = await service.update_own_profile(session, principal, expected_version=if_match_version(if_match),
                                         changes=body.model_dump(exclude_unset=True))
    return _with_etag(p, response)


@router.put("/me/patient/consents", response_model=schemas.PatientOut,
            summary="Give (true) or withdraw (false) your GDPR, HIPAA and data-sharing consents")
async def set_own_consents(body: schemas.Consents, principal: CurrentPrincipal, session: DbSession,
                           response: Response) -> schemas.PatientOut:
    return _with_etag(await service.set_consents(session, principal, None, body.model_dump()), response)


@router.post("/me/patient/email-verification", status_code=status.HTTP_202_ACCEPTED,
             summary="Send yourself a new e-mail verification link")
async def resend_own_email_verification(principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.resend_email_verification(session, principal, None)
    return Response(status_code=status.HTTP_202_ACCEPTED)
