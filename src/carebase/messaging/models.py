"""Conversations between a patient and their care team: who is in each, and what was said.

Not event-sourced, like notifications: a chat message is a communication, stored once and shown
as sent; nobody edits one. Rows are tenant rows (RLS), and only participants may read them, which
the service checks on every read."""

from sqlalchemy import Column, DateTime, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB, UUID

from carebase.platform.db import metadata

conversations = Table(
    "conversations",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("patient_id", UUID(as_uuid=True), nullable=False),  # whose care this is about
    Column("created_by", UUID(as_uuid=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_message_at", DateTime(timezone=True), nullable=True),
    Index("ix_conversations_tenant_id_patient_id", "tenant_id", "patient_id"),
)

conversation_participants = Table(
    "conversation_participants",
    metadata,
    Column("conversation_id", UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"),
           primary_key=True),
    Column("account_id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("role", String(16), nullable=False),  # patient | staff
    Column("display_name", String(200), nullable=False),  # as the others see them
    # Read receipts: everything up to this instant has been seen.
    Column("last_read_at", DateTime(timezone=True), nullable=True),
    Column("joined_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_conversation_participants_account_id", "account_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("conversation_id", UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"),
           nullable=False),
    Column("sender_id", UUID(as_uuid=True), nullable=False),
    Column("body", Text, nullable=False),
    Column("attachments", JSONB, nullable=False, server_default="[]"),  # [{id, filename, content_type, size}]
    # The sender's own id for the message: sending again after a lost answer stores it once.
    Column("client_message_id", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("conversation_id", "sender_id", "client_message_id"),
    Index("ix_messages_conversation_id_created_at", "conversation_id", "created_at"),
)

attachments = Table(
    "message_attachments",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("conversation_id", UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"),
           nullable=False),
    Column("message_id", UUID(as_uuid=True), nullable=True),  # None until sent with a message
    Column("uploaded_by", UUID(as_uuid=True), nullable=False),
    Column("storage_key", String(300), nullable=False),
    Column("filename", String(255), nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
