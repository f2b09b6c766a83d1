"""Request and response models of the messaging API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from carebase.platform.fields import Strict


class SendIn(Strict):
    conversation_id: uuid.UUID | None = Field(default=None, description="Reply in this conversation")
    patient_id: uuid.UUID | None = Field(default=None, description="Staff: start or continue with this patient")
    to_account_id: uuid.UUID | None = Field(default=None, description="Patients: write to this member of the "
                                                                       "care team (GET /messages/contacts)")
    body: str = Field(default="", max_length=5000)
    attachment_ids: list[uuid.UUID] = Field(default_factory=list, max_length=10)
    client_message_id: str | None = Field(default=None, max_length=64,
                                          description="Your id for this message: a retry stores it once")


class MessageOut(BaseModel):
    id: uuid.UUID
    conversation_id: uuid.UUID
    sender_id: uuid.UUID
    body: str
    attachments: list[dict[str, Any]]
    created_at: datetime


class ParticipantOut(BaseModel):
    account_id: uuid.UUID
    role: str
    display_name: str
    last_read_at: datetime | None = Field(description="Read receipt: everything up to here has been seen")


class ConversationOut(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    participants: list[ParticipantOut]
    last_message: MessageOut | None
    last_message_at: datetime | None
    unread: int


class ConversationMessagesOut(BaseModel):
    id: uuid.UUID
    participants: list[ParticipantOut]
    messages: list[MessageOut]


class ContactOut(BaseModel):
    account_id: uuid.UUID
    display_name: str
    role: str


class AttachmentOut(BaseModel):
    id: uuid.UUID
    filename: str
    content_type: str
    size: int
