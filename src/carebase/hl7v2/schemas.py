"""Response models of the HL7 v2 inbox API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class InboxEntryOut(BaseModel):
    id: uuid.UUID
    received_at: datetime
    via: str = Field(description="mllp, http or replay")
    control_id: str | None = Field(description="MSH-10")
    sender: str | None = Field(description="MSH-3^MSH-4")
    message_type: str | None = Field(description="MSH-9, e.g. ADT^A01")
    status: Literal["processed", "duplicate", "error", "rejected"]
    ack_code: Literal["AA", "AE", "AR"]
    error: str | None
    patient_id: uuid.UUID | None
    encounter_id: uuid.UUID | None
    replay_of: uuid.UUID | None
    body: str | None = Field(default=None, description="The message as received (one entry only)")


class InboxOut(BaseModel):
    counts: dict[str, int] = Field(description="How many messages the inbox holds in each status")
    items: list[InboxEntryOut]


class ReplayOut(BaseModel):
    message_id: uuid.UUID = Field(description="The inbox entry of this new attempt")
    ack_code: Literal["AA", "AE", "AR"]
    status: str
    error: str | None
    ack: str = Field(description="The acknowledgement, HL7 ER7")
