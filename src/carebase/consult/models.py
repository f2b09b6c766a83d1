"""Consultations: a patient's intake conversation with the assistant, its turns and summary."""

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from carebase.platform.db import metadata

consultations = Table(
    "consultations",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("patient_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=False),  # the patient's login that consults
    Column("status", String(16), nullable=False),  # active | emergency | handled | completed
    Column("urgency", SmallInteger, nullable=False),  # 0 routine, 1 urgent, 2 emergency: the queue's order
    Column("engine", String(80), nullable=False),  # offline | llm:<model>
    Column("emergency", JSONB, nullable=True),  # {sign, advice} when stopped as an emergency
    Column("summary", JSONB, nullable=True),  # the structured summary, re-identified
    # Token → original for this consultation's PHI stripping: never leaves the server.
    Column("phi_tokens", JSONB, nullable=False, server_default="{}"),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    # An emergency a clinician has dealt with (called the patient, sent them to hospital) leaves the queue.
    Column("handled_by", UUID(as_uuid=True), nullable=True),
    Column("handled_at", DateTime(timezone=True), nullable=True),
    Column("handled_note", Text, nullable=True),
    Index("ix_consultations_tenant_id_status_urgency", "tenant_id", "status", "urgency"),
    Index("ix_consultations_patient_id_started_at", "patient_id", "started_at"),
)

consultation_turns = Table(
    "consultation_turns",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("consultation_id", UUID(as_uuid=True), ForeignKey("consultations.id", ondelete="CASCADE"),
           nullable=False),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("role", String(16), nullable=False),  # patient | assistant
    Column("text", Text, nullable=False),  # as the patient and the doctor see it
    Column("model_text", Text, nullable=False),  # as the assistant saw or wrote it: de-identified
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("consultation_id", "seq"),
)
