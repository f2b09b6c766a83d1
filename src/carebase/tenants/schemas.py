"""Request and response models of the tenants API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from carebase.platform.fields import Email, Strict

TenantKind = Literal["clinic", "chain", "hospital", "pharmacy", "lab", "platform"]
StaffRole = Literal["admin", "doctor", "nurse", "receptionist", "pharmacist", "lab"]


class TenantOut(BaseModel):
    id: uuid.UUID
    slug: str
    name: str
    kind: str
    parent_id: uuid.UUID | None
    timezone: str
    created_at: datetime


class LocationIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    address: str | None = Field(default=None, max_length=500)
    timezone: str | None = Field(default=None, max_length=64, description="IANA zone; defaults to the tenant's")


class LocationOut(BaseModel):
    id: uuid.UUID
    name: str
    address: str | None
    timezone: str
    created_at: datetime


class MemberIn(Strict):
    email: Email
    display_name: str = Field(min_length=1, max_length=200)
    role: StaffRole


class MemberOut(BaseModel):
    id: uuid.UUID
    account_id: uuid.UUID
    email: str | None
    display_name: str | None
    role: str
    created_at: datetime
    invited: bool = False
