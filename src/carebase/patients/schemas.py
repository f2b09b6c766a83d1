"""Request and response models of the patients API."""

from __future__ import annotations

import uuid
import zoneinfo
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from carebase.platform.fields import Email, Phone, Strict

Gender = Literal["M", "F", "O", "U"]
ConsentKind = Literal["gdpr", "hipaa", "data_sharing"]


def _zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name like 'Asia/Kolkata'") from None
    return value


Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2, e.g. IN")]
TimeZone = Annotated[str, Field(max_length=64, description="IANA time zone, e.g. Asia/Kolkata"),
                     AfterValidator(_zone)]
Language = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$", description="e.g. en, hi, pt-BR")]
Name = Annotated[str, Field(min_length=1, max_length=100)]


class EmergencyContact(Strict):
    name: str = Field(min_length=1, max_length=200)
    relationship: str | None = Field(default=None, max_length=50)
    phone: Phone


class GovernmentId(Strict):
    system: str = Field(pattern=r"^[A-Z0-9-]{2,32}$", description="Issuer, e.g. IN-AADHAAR, US-SSN")
    value: str = Field(min_length=4, max_length=64, pattern=r"^[A-Za-z0-9 -]+$")


class Consents(Strict):
    """True gives consent (now), false withdraws it (now); leave one out to keep it as it is."""

    gdpr: bool | None = None
    hipaa: bool | None = None
    data_sharing: bool | None = None


class PatientIn(Strict):
    given_name: Name
    family_name: Name
    birth_date: date
    gender: Gender = "U"
    phone: Phone | None = None
    email: Email | None = None
    country: Country | None = None
    timezone: TimeZone | None = None
    preferred_language: Language = "en"
    emergency_contact: EmergencyContact | None = None
    government_id: GovernmentId | None = None
    consents: Consents | None = None
    mrn: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,32}$", description="Medical record number")
    account_id: uuid.UUID | None = Field(default=None, description="The patient's own login, to link")
    allow_duplicate: bool = Field(default=False, description="Register even though possible duplicates were "
                                                             "found (after checking the candidates)")


class PatientPatch(Strict):
    given_name: Name | None = None
    family_name: Name | None = None
    birth_date: date | None = None
    gender: Gender | None = None
    phone: Phone | None = None
    email: Email | None = None
    country: Country | None = None
    timezone: TimeZone | None = None
    preferred_language: Language | None = None
    emergency_contact: EmergencyContact | None = None


class OwnProfilePatch(Strict):
    """What patients may change themselves; names and birth date are corrected by staff."""

    phone: Phone | None = None
    email: Email | None = None
    timezone: TimeZone | None = None
    preferred_language: Language | None = None
    emergency_contact: EmergencyContact | None = None


class MergeIn(Strict):
    into: uuid.UUID = Field(description="The record that stays; this one then redirects to it")


class EmailVerificationConfirm(Strict):
    token: str = Field(min_length=10, max_length=200)


class ConsentOut(BaseModel):
    given: bool
    given_at: datetime | None
    withdrawn_at: datetime | None


class PatientOut(BaseModel):
    id: uuid.UUID
    global_id: str | None
    mrn: str
    given_name: str | None
    family_name: str | None
    birth_date: date | None
    gender: str
    phone: str | None
    email: str | None
    email_verified: bool
    country: str | None
    timezone: str | None
    preferred_language: str | None
    emergency_contact: EmergencyContact | None
    government_id: dict | None = Field(description="Issuer and last four characters only")
    consents: dict[str, ConsentOut]
    account_id: uuid.UUID | None
    merged_into: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    erased: bool
    version: int


class DuplicateCandidate(BaseModel):
    id: uuid.UUID
    global_id: str | None
    mrn: str
    given_name: str | None
    family_name: str | None
    birth_date: date | None
    matched_on: list[str]
