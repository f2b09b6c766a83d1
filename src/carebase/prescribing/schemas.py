"""Request and response models of the prescriptions API."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from carebase.platform.fields import Strict


class ItemIn(Strict):
    medicine: str = Field(min_length=1, max_length=200, description="Generic or brand name, e.g. amoxicillin")
    dose: float | None = Field(default=None, gt=0, le=100000, description="Per administration, in `unit`")
    unit: Literal["mg", "mcg", "g", "units", "mL", "puffs", "drops", "application"] | None = None
    times_per_day: float | None = Field(default=None, gt=0, le=24)
    duration_days: int | None = Field(default=None, gt=0, le=365)
    quantity: int | None = Field(default=None, gt=0, le=10000,
                                 description="Units to dispense (tablets, capsules, inhalers...); when absent the "
                                             "pharmacy dispenses dose x times a day x days")
    instructions: str = Field(default="", max_length=500)


class PrescriptionIn(Strict):
    items: list[ItemIn] = Field(min_length=1, max_length=20)
    diagnosis: str | None = Field(default=None, max_length=500)


class ApproveIn(Strict):
    notes: str | None = Field(default=None, max_length=2000, description="For the patient and the pharmacist")
    override_reason: str | None = Field(default=None, max_length=2000,
                                        description="Required when a safety check blocks: why you prescribe anyway")


class RejectIn(Strict):
    notes: str = Field(min_length=1, max_length=2000, description="Why, for the patient")


class RevokeIn(Strict):
    reason: str = Field(min_length=1, max_length=2000, description="Why, for the record and the patient")


class PatientSignatureIn(Strict):
    image: str = Field(max_length=300_000, pattern=r"^data:image/png;base64,[A-Za-z0-9+/=]+$",
                       description="The signature pad's drawing: a PNG data URL (canvas.toDataURL())")

    def png(self) -> bytes:
        return base64.b64decode(self.image.split(",", 1)[1], validate=True)


class FlagOut(BaseModel):
    rule: str
    severity: Literal["blocking", "warning", "info"]
    medicine: str
    reason: str
    other: str | None = None
    overridable: bool = True


class PrescriptionOut(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    consultation_id: uuid.UUID | None
    source: Literal["assistant", "physician"]
    status: Literal["draft", "approved", "rejected", "revoked"]
    urgency: Literal["routine", "urgent", "emergency"]
    items: list[dict[str, Any]]
    safety: list[FlagOut] = Field(description="The flags of the latest safety check")
    diagnosis: str | None
    notes: str | None
    override_reason: str | None
    created_at: datetime
    updated_at: datetime
    reviewed_by: uuid.UUID | None
    reviewed_at: datetime | None
    content_hash: str | None = Field(description="SHA-256 of the signed content, once approved")
    signed: bool
    patient_signed_at: datetime | None
    esigned_by: str | None = Field(description="Aadhaar eSign: the signer's name on their certificate")
    esigned_at: datetime | None
    awaiting_patient_signature: bool = Field(description="Patients: sign (POST …/patient-signature) to see the "
                                                         "medicines and download the PDF")


class VerificationOut(BaseModel):
    status: Literal["valid", "revoked", "tampered"]
    detail: str
    issued_at: str | None
    prescriber: str | None
    content_hash: str | None
    esigned_by: str | None = Field(default=None, description="Aadhaar eSign signer, where used")
    esigned_at: str | None = None


class EsignStartOut(BaseModel):
    url: str = Field(description="The ESP's gateway: post `fields` there from the signer's browser")
    fields: dict[str, str]
    txn: str
