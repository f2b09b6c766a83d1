"""Request and response models of the patients API."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from carebase.platform.fields import Email, Phone, Strict

Sex = Literal["female", "male", "other", "unknown"]


class PatientIn(Strict):
    given_name: str = Field(min_length=1, max_length=100)
    family_name: str = Field(min_length=1, max_length=100)
    birth_date: date
    sex: Sex = "unknown"
    phone: Phone | None = None
    email: Email | None = None
    mrn: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,32}$", description="Medical record number")
    account_id: uuid.UUID | None = Field(default=None, description="The patient's own login, to link")


class PatientPatch(Strict):
    given_name: str | None = Field(default=None, min_length=1, max_length=100)
    family_name: str | None = Field(default=None, min_length=1, max_length=100)
    birth_date: date | None = None
    sex: Sex | None = None
    phone: Phone | None = None
    email: Email | None = None


class PatientOut(BaseModel):
    id: uuid.UUID
    mrn: str
    given_name: str | None
    family_name: str | None
    birth_date: date | None
    sex: str | None
    phone: str | None
    email: str | None
    account_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    erased: bool
    version: int
