"""Prescriptions API: the physicians' queue, edits, approval with signature, rejection, doctors
writing from the chart, the patient's own list, the public verification behind the QR code, and
Aadhaar eSign where a deployment uses it."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response, status
from fastapi.responses import RedirectResponse

from carebase.platform.errors import NotFound, ValidationFailed
from carebase.platform.web import CurrentPrincipal, DbSession, pdf_response
from carebase.portal.pages import templates
from carebase.prescribing import schemas, service

router = APIRouter(prefix="/api/v1", tags=["prescriptions"])


def _out(p: service.Prescription) -> schemas.PrescriptionOut:
    return schemas.PrescriptionOut(
        id=p.id, patient_id=p.patient_id, consultation_id=p.consultation_id, source=p.source, status=p.status,
        urgency=service.URGENCY[p.urgency], items=p.items, safety=[schemas.FlagOut(**f) for f in p.safety],
        diagnosis=p.diagnosis, notes=p.notes, override_reason=p.override_reason, created_at=p.created_at,
        updated_at=p.updated_at, reviewed_by=p.reviewed_by, reviewed_at=p.reviewed_at, content_hash=p.content_hash,
        signed=p.signed, patient_signed_at=p.patient_signed_at, esigned_by=p.esigned_by, esigned_at=p.esigned_at,
        awaiting_patient_signature=p.awaiting_patient_signature)


@router.get("/prescriptions/queue", response_model=list[schemas.PrescriptionOut],
            summary="Doctors: drafts waiting for review, emergencies first, then urgent, then longest waiting "
                    "(live on tenant:<id>:prescriptions)")
async def queue(principal: CurrentPrincipal, session: DbSession) -> list[schemas.PrescriptionOut]:
    return [_out(p) for p in await service.queue(session, principal)]


@router.get("/me/prescriptions", response_model=list[schemas.PrescriptionOut],
            summary="Patients: their prescriptions a physician has decided on, newest first")
async def mine(principal: CurrentPrincipal, session: DbSession) -> list[schemas.PrescriptionOut]:
    return [_out(p) for p in await service.mine(session, principal)]


@router.post("/patients/{patient_id}/prescriptions", status_code=status.HTTP_201_CREATED,
             response_model=schemas.PrescriptionOut,
             summary="Doctors: write a prescription from the chart. Every safety rule runs; approve it to sign.")
async def write(patient_id: uuid.UUID, body: schemas.PrescriptionIn, principal: CurrentPrincipal,
                session: DbSession) -> schemas.PrescriptionOut:
    return _out(await service.write(session, principal, patient_id, items=[i.model_dump() for i in body.items],
                                    diagnosis=body.diagnosis))


@router.get("/prescriptions/verify/{prescription_id}", response_model=schemas.VerificationOut,
            summary="Public (the QR code's target): is this prescription valid, revoked or tampered with? "
                    "404 when no signed prescription has this number. A browser (Accept: text/html) gets a page.")
async def verify(prescription_id: uuid.UUID, request: Request, session: DbSession):
    v = await service.verify(session, prescription_id)
    if "text/html" in request.headers.get("accept", ""):  # a phone's camera opened the QR code
        return templates.TemplateResponse(request, "prescribing/verify.html", {"v": v, "id": prescription_id},
                                          status_code=404 if v.status == "unknown" else 200)
    if v.status == "unknown":
        raise NotFound(v.detail, code="prescription-not-found")
    return schemas.VerificationOut(status=v.status, detail=v.detail, issued_at=v.issued_at, prescriber=v.prescriber,
                                   content_hash=v.content_hash, esigned_by=v.esigned_by, esigned_at=v.esigned_at)


@router.get("/prescriptions/{prescription_id}", response_model=schemas.PrescriptionOut,
            summary="One prescription: its organization's doctors, or its patient once decided")
async def get(prescription_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession
              ) -> schemas.PrescriptionOut:
    return _out(await service.get(session, principal, prescription_id))


@router.patch("/prescriptions/{prescription_id}", response_model=schemas.PrescriptionOut,
              summary="Doctors: change a draft's medicines; the safety rules run again")
async def edit(prescription_id: uuid.UUID, body: schemas.PrescriptionIn, principal: CurrentPrincipal,
               session: DbSession) -> schemas.PrescriptionOut:
    return _out(await service.edit(session, principal, prescription_id, items=[i.model_dump() for i in body.items],
                                   diagnosis=body.diagnosis))


@router.post("/prescriptions/{prescription_id}/approve", response_model=schemas.PrescriptionOut,
             summary="Doctors: approve and sign (Ed25519). 409 `override-required` with the blocking flags unless "
                     "`override_reason` is given; the patient is notified.")
async def approve(prescription_id: uuid.UUID, body: schemas.ApproveIn, principal: CurrentPrincipal,
                  session: DbSession) -> schemas.PrescriptionOut:
    return _out(await service.approve(session, principal, prescription_id, notes=body.notes,
                                      override_reason=body.override_reason))


@router.post("/prescriptions/{prescription_id}/reject", response_model=schemas.PrescriptionOut,
             summary="Doctors: reject a draft with a note for the patient, who is notified")
async def reject(prescription_id: uuid.UUID, body: schemas.RejectIn, principal: CurrentPrincipal,
                 session: DbSession) -> schemas.PrescriptionOut:
    return _out(await service.reject(session, principal, prescription_id, notes=body.notes))


@router.post("/prescriptions/{prescription_id}/revoke", response_model=schemas.PrescriptionOut,
             summary="Doctors: withdraw a signed prescription; its verification says revoked from now on")
async def revoke(prescription_id: uuid.UUID, body: schemas.RevokeIn, principal: CurrentPrincipal,
                 session: DbSession) -> schemas.PrescriptionOut:
    return _out(await service.revoke(session, principal, prescription_id, reason=body.reason))


@router.post("/prescriptions/{prescription_id}/patient-signature", response_model=schemas.PrescriptionOut,
             summary="Patients: sign an approved prescription (a PNG from the signature pad) to see it in full; "
                     "stored with its hash, time and address, and logged as consent")
async def patient_signature(prescription_id: uuid.UUID, body: schemas.PatientSignatureIn, principal: CurrentPrincipal,
                            session: DbSession) -> schemas.PrescriptionOut:
    try:
        image = body.png()
    except ValueError:
        raise ValidationFailed("The signature is not a readable PNG data URL.", code="bad-signature-image") from None
    return _out(await service.sign_as_patient(session, principal, prescription_id, image=image))


@router.get("/prescriptions/{prescription_id}/pdf", response_class=Response,
            responses={200: {"content": {"application/pdf": {}}}},
            summary="The signed prescription as a PDF with its QR code: doctors once approved, the patient once "
                    "they have signed it")
async def pdf(prescription_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    return pdf_response(*await service.pdf(session, principal, prescription_id))


@router.post("/prescriptions/{prescription_id}/esign", response_model=schemas.EsignStartOut,
             summary="The prescriber: Aadhaar eSign an approved prescription (where enabled). Returns the form the "
                     "browser posts to the ESP; its answer comes back to POST /esign/response.")
async def start_esign(prescription_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession
                      ) -> schemas.EsignStartOut:
    r = await service.start_esign(session, principal, prescription_id)
    return schemas.EsignStartOut(url=r.url, fields=r.fields, txn=r.txn)


@router.post("/esign/response", status_code=status.HTTP_303_SEE_OTHER, response_class=RedirectResponse,
             summary="The ESP's answer (form field `eSignResponse`), posted back by the signer's browser: checked, "
                     "stored on its prescription, then back to the prescription's page")
async def esign_response(session: DbSession, eSignResponse: Annotated[str, Form(max_length=200_000)]  # noqa: N803
                         ) -> RedirectResponse:
    prescription_id = await service.complete_esign(session, eSignResponse)
    return RedirectResponse(f"/portal/prescriptions/{prescription_id}", status_code=status.HTTP_303_SEE_OTHER)
