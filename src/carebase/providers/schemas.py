"""Request and response models of the provider directory API.

``verified`` is not a field of any request body: bodies are Strict, so a client sending it gets a
422 naming the field. Only ``POST /providers/{id}/verify`` (verify:providers) sets it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

from carebase.platform.fields import Email, Phone, Strict
from carebase.providers.codes import COUNTRIES, LANGUAGES, npi_problem


def _check_npi(v: str) -> str:
    problem = npi_problem(v)
    if problem:
        raise ValueError(problem)
    return v


def _upper(v: Any) -> Any:
    return v.strip().upper() if isinstance(v, str) else v


def _lower(v: Any) -> Any:
    return v.strip().lower() if isinstance(v, str) else v


def _check_language(v: str) -> str:
    if v not in LANGUAGES:
        raise ValueError(f"{v!r} is not an ISO 639-1 language code (like 'en' or 'hi')")
    return v


def _unique(v: list) -> list:
    return list(dict.fromkeys(v))


Npi = Annotated[str, Field(pattern=r"^[0-9]{10}$", description="National Provider Identifier: 10 digits, the last "
                                                                "a Luhn check digit over 80840 + the first nine"),
                AfterValidator(_check_npi)]
def _check_country(v: str) -> str:
    if v not in COUNTRIES:
        raise ValueError(f"{v!r} is not an ISO 3166-1 alpha-2 country code (like 'IN' or 'DE')")
    return v


Country = Annotated[str, BeforeValidator(_upper), Field(min_length=2, max_length=2,
                                                         json_schema_extra={"enum": list(COUNTRIES)}),
                    AfterValidator(_check_country)]
Language = Annotated[str, BeforeValidator(_lower), Field(min_length=2, max_length=2),
                     AfterValidator(_check_language)]
Languages = Annotated[list[Language], Field(max_length=20, description="ISO 639-1 codes, e.g. [\"en\", \"hi\"]"),
                      AfterValidator(_unique)]
Year = Annotated[int, Field(ge=1900, le=2100)]
Name = Annotated[str, Field(min_length=1, max_length=100)]


class Education(Strict):
    institution: str = Field(min_length=1, max_length=200)
    degree: str = Field(min_length=1, max_length=100)
    year: Year


class Certification(Strict):
    name: str = Field(min_length=1, max_length=200)
    issuer: str = Field(min_length=1, max_length=200)
    year: Year


class ProviderIn(Strict):
    npi: Npi
    license_number: str | None = Field(default=None, min_length=1, max_length=50)
    given_name: Name
    family_name: Name
    specialty: Name
    sub_specialty: Name | None = None
    practice_name: str | None = Field(default=None, min_length=1, max_length=200)
    country: Country = Field(description="ISO 3166-1 alpha-2, e.g. IN")
    state_province: Name | None = None
    city: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    languages: Languages = []
    education: list[Education] = Field(default=[], max_length=20)
    certifications: list[Certification] = Field(default=[], max_length=50)
    accepts_new_patients: bool = True
    telemedicine_enabled: bool = False
    account_id: uuid.UUID | None = Field(default=None, description="The provider's own login (a member here), to link")


class ProviderPatch(Strict):
    """Only the fields sent change; ``null`` clears an optional field. Required fields cannot be cleared."""

    npi: Npi = None  # type: ignore[assignment]
    license_number: str | None = Field(default=None, min_length=1, max_length=50)
    given_name: Name = None  # type: ignore[assignment]
    family_name: Name = None  # type: ignore[assignment]
    specialty: Name = None  # type: ignore[assignment]
    sub_specialty: Name | None = None
    practice_name: str | None = Field(default=None, min_length=1, max_length=200)
    country: Country = None  # type: ignore[assignment]
    state_province: Name | None = None
    city: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    languages: Languages = None  # type: ignore[assignment]
    education: list[Education] = Field(default=None, max_length=20)
    certifications: list[Certification] = Field(default=None, max_length=50)
    accepts_new_patients: bool = None  # type: ignore[assignment]
    telemedicine_enabled: bool = None  # type: ignore[assignment]
    account_id: uuid.UUID | None = None


class EducationOut(BaseModel):
    institution: str
    degree: str
    year: int


class CertificationOut(BaseModel):
    name: str
    issuer: str
    year: int


class ProviderOut(BaseModel):
    id: uuid.UUID
    npi: str
    license_number: str | None
    given_name: str
    family_name: str
    specialty: str
    sub_specialty: str | None
    practice_name: str | None
    country: str
    state_province: str | None
    city: str | None
    email: str | None
    phone: str | None
    languages: list[str]
    education: list[EducationOut]
    certifications: list[CertificationOut]
    accepts_new_patients: bool
    telemedicine_enabled: bool
    account_id: uuid.UUID | None
    verified: bool
    verified_by: uuid.UUID | None = Field(description="The administrator who verified the credentials")
    verified_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


class ProviderPage(BaseModel):
    items: list[ProviderOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")
    next: str | None = Field(description="The next page's URL (same filters), or null on the last page")
