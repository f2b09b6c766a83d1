"""Request and response models of the consultation API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from carebase.platform.fields import Strict


class MessageIn(Strict):
    text: str = Field(min_length=1, max_length=2000, description="What the patient says, in their own words")


class TurnOut(BaseModel):
    seq: int
    role: Literal["patient", "assistant"]
    text: str
    created_at: datetime


class ConsultationOut(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    status: Literal["active", "emergency", "handled", "completed"] = Field(
        description="active: the assistant is asking; emergency: stopped at a red flag, waiting for a clinician; "
                    "handled: a clinician dealt with the emergency; completed: summary written, its draft "
                    "prescription waiting for a physician")
    urgency: Literal["routine", "urgent", "emergency"]
    engine: str = Field(description="offline, or llm:<model>")
    emergency: dict[str, Any] | None = Field(description="The red flags found and the advice given")
    summary: dict[str, Any] | None = Field(description="Symptoms with onset, duration and severity; history, "
                                                       "allergies and medicines from the chart; vitals if given")
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    turns: list[TurnOut] = Field(description="Every message, oldest first (empty in lists)")
    handled_at: datetime | None = None
    handled_note: str | None = Field(default=None, description="What the clinician did about the emergency")


class HandledIn(Strict):
    note: str = Field(min_length=1, max_length=2000, description="What was done, e.g. 'called, ambulance sent'")
