"""Request and response models of the scheduling API."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Literal

from pydantic import BaseModel, Field

from carebase.platform.fields import Strict

AppointmentType = Literal["office_visit", "telemedicine", "follow_up", "consultation", "emergency"]
Status = Literal["scheduled", "confirmed", "checked_in", "in_progress", "completed", "cancelled", "no_show"]


class WindowIn(Strict):
    weekday: int = Field(ge=0, le=6, description="0 = Monday … 6 = Sunday")
    starts: time = Field(description="Wall-clock time at the location, e.g. 09:00")
    ends: time
    slot_minutes: int = Field(default=15, ge=5, le=240, multiple_of=5)


class AvailabilityIn(Strict):
    location_id: uuid.UUID
    windows: list[WindowIn] = Field(max_length=70)
    valid_from: date | None = None
    valid_until: date | None = None


class WindowOut(BaseModel):
    weekday: int
    starts: time
    ends: time
    slot_minutes: int


class ExceptionIn(Strict):
    starts_at: datetime
    ends_at: datetime
    reason: str = Field(min_length=1, max_length=200, description="e.g. leave, public holiday")


class ExceptionOut(BaseModel):
    id: uuid.UUID


class SlotOut(BaseModel):
    starts_at: datetime
    ends_at: datetime


class AppointmentIn(Strict):
    patient_id: uuid.UUID
    provider_id: uuid.UUID
    location_id: uuid.UUID
    type: AppointmentType = "office_visit"
    starts_at: datetime = Field(description="With its offset, e.g. 2026-12-01T09:00:00+05:30")
    duration_minutes: int | None = Field(default=None, ge=5, le=480,
                                         description="Default by type: office_visit 30, telemedicine 20, "
                                                     "follow_up 15, consultation 45, emergency 30")
    reason_for_visit: str | None = Field(default=None, max_length=2000)


class StatusIn(Strict):
    status: Status
    reason: str | None = Field(default=None, max_length=2000, description="Required when cancelling")


class RescheduleIn(Strict):
    starts_at: datetime
    duration_minutes: int | None = Field(default=None, ge=5, le=480)


class AppointmentOut(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    provider_id: uuid.UUID
    location_id: uuid.UUID
    type: str
    starts_at: datetime
    ends_at: datetime
    status: str
    allowed_next: list[str]
    reason_for_visit: str | None
    cancel_reason: str | None
    created_at: datetime
    updated_at: datetime
    version: int
