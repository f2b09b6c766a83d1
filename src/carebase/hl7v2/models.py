"""The HL7 v2 inbox: every message received, processed or not, with the acknowledgement it got."""

from sqlalchemy import Column, DateTime, Index, Integer, String, Table, Text, text
from sqlalchemy.dialects.postgresql import UUID

from carebase.platform.db import metadata

hl7_messages = Table(
    "hl7_messages",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("api_key_id", UUID(as_uuid=True), nullable=True),  # who sent it (replays act as that key)
    Column("via", String(8), nullable=False),  # mllp | http | replay
    Column("control_id", String(199), nullable=True),  # MSH-10; None when the header could not be read
    Column("sender", String(200), nullable=True),  # MSH-3^MSH-4: control ids are unique per sending system
    Column("message_type", String(20), nullable=True),  # ADT^A01
    # The message as received, sealed (it names patients): opened only for an admin's inspection or a replay.
    Column("sealed_body", Text, nullable=False),
    Column("status", String(12), nullable=False),  # processed | duplicate | error | rejected
    Column("ack_code", String(2), nullable=False),  # AA | AE | AR
    Column("error", Text, nullable=True),
    Column("patient_id", UUID(as_uuid=True), nullable=True),
    Column("encounter_id", UUID(as_uuid=True), nullable=True),
    Column("replay_of", UUID(as_uuid=True), nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="1"),
    # A control id from one sender is processed once: the first accepted message holds it.
    Index("uq_hl7_messages_processed", "tenant_id", "sender", "control_id", unique=True,
          postgresql_where=text("status = 'processed'")),
    Index("ix_hl7_messages_tenant_id_received_at", "tenant_id", "received_at"),
)
