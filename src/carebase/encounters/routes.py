"""Encounters and the chart API."""

from __future__ import annotations

import uuid
from dataclasses import asdict

from fastapi import APIRouter, Response, status

from carebase.encounters import export, schemas, service
from carebase.platform.web import CurrentPrincipal, DbSession, pdf_response

router = APIRouter(prefix="/api/v1", tags=["encounters"])


def _out(e: service.Encounter) -> schemas.EncounterOut:
    return schemas.EncounterOut(**{k: v for k, v in asdict(e).items() if k != "tenant_id"})


def _chart(c: dict) -> schemas.ChartOut:
    return schemas.ChartOut(patient_id=c["patient"].id, encounters=[_out(e) for e in c["encounters"]],
                            **{k: c[k] for k in ("diagnoses", "allergies", "problems", "medications", "vitals")})


@router.post("/patients/{patient_id}/encounters", status_code=status.HTTP_201_CREATED,
             response_model=schemas.EncounterOut,
             summary="Record and sign an encounter (doctors and nurses). ICD-10-CM codes are checked against the "
                     "official list (an unknown one gets 422 naming it), CPT codes by format, vitals by plausible "
                     "range.")
async def record_encounter(patient_id: uuid.UUID, body: schemas.EncounterIn, principal: CurrentPrincipal,
                           session: DbSession, response: Response) -> schemas.EncounterOut:
    content = body.model_dump(exclude={"type", "occurred_at", "provider_id", "appointment_id"})
    e = await service.record_encounter(session, principal, patient_id, type=body.type, occurred_at=body.occurred_at,
                                       provider_id=body.provider_id, appointment_id=body.appointment_id, **content)
    response.headers["Location"] = f"/api/v1/encounters/{e.id}"
    return _out(e)


@router.get("/encounters/{encounter_id}", response_model=schemas.EncounterOut, summary="One encounter (audited read)")
async def get_encounter(encounter_id: uuid.UUID, principal: CurrentPrincipal,
                        session: DbSession) -> schemas.EncounterOut:
    return _out(await service.get_encounter(session, principal, encounter_id))


@router.post("/encounters/{encounter_id}/amendments", response_model=schemas.EncounterOut,
             summary="Amend a signed encounter; the original stays, with who changed what, when and why")
async def amend(encounter_id: uuid.UUID, body: schemas.AmendmentIn, principal: CurrentPrincipal,
                session: DbSession) -> schemas.EncounterOut:
    return _out(await service.amend(session, principal, encounter_id, field=body.field, value=body.value,
                                    reason=body.reason))


@router.get("/patients/{patient_id}/chart", response_model=schemas.ChartOut,
            summary="A patient's chart: encounters (newest first), diagnoses, allergies, problems, medications and "
                    "vitals over time (audited read)")
async def chart(patient_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.ChartOut:
    return _chart(await service.chart(session, principal, patient_id))


@router.get("/me/chart", response_model=schemas.ChartOut, summary="Your own chart (patients)")
async def my_chart(principal: CurrentPrincipal, session: DbSession) -> schemas.ChartOut:
    return _chart(await service.chart(session, principal, None))


# -- the whole record, exported ----------------------------------------------------------------

# (The same record as FHIR, record.fhir.json, is served by the FHIR facade: carebase.fhir.routes.)
_PDF_DOC = {200: {"description": "An A4 PDF summary, as a download.",
                  "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}}}


def _pdf(record: export.RecordPdf) -> Response:
    return pdf_response(record.filename, record.content)


@router.get("/patients/{patient_id}/record.pdf", response_class=Response, responses=_PDF_DOC,
            summary="Download a readable PDF summary of a patient's record: allergies, medications, problems, "
                    "diagnoses, latest vitals and the encounter timeline (audited read)")
async def record_pdf(patient_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    return _pdf(await export.pdf_document(session, principal, patient_id))


@router.get("/me/record.pdf", response_class=Response, responses=_PDF_DOC,
            summary="Download a PDF summary of your own record (patients)")
async def my_record_pdf(principal: CurrentPrincipal, session: DbSession) -> Response:
    return _pdf(await export.pdf_document(session, principal, None))
