"""The chart's read model: one row per encounter (a projection of encounter events)."""

from sqlalchemy import Column, DateTime, Index, Integer, String, Table, Text
from sqlalchemy.dialects.postgresql import JSONB, UUID

from carebase.platform.db import metadata
from carebase.platform.eventstore import projection_table

encounters = projection_table(Table(
    "encounters",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("patient_id", UUID(as_uuid=True), nullable=False),
    Column("provider_id", UUID(as_uuid=True), nullable=False),
    Column("appointment_id", UUID(as_uuid=True), nullable=True),
    Column("type", String(20), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("chief_complaint", Text, nullable=True),
    Column("diagnoses", JSONB, nullable=False),
    Column("procedures", JSONB, nullable=False),
    Column("vitals", JSONB, nullable=False),
    Column("allergies", JSONB, nullable=False),
    Column("problems", JSONB, nullable=False),
    Column("medications", JSONB, nullable=False),
    Column("lab_results", JSONB, nullable=False),
    Column("treatment_plan", Text, nullable=True),
    Column("follow_up_instructions", Text, nullable=True),
    Column("note", Text, nullable=True),
    Column("signed_by", UUID(as_uuid=True), nullable=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
    # Every correction, oldest first: {at, by, field, previous, value, reason}. The original stays.
    Column("amendments", JSONB, nullable=False),
    # A hospital stay admitted from an ADT feed is in-progress until discharged; visits charted in
    # Carebase are finished when signed.
    Column("status", String(16), nullable=False, server_default="finished"),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Column("visit_number", String(64), nullable=True),  # the admitting system's (HL7 PV1-19)
    Column("version", Integer, nullable=False),
    Index("ix_encounters_patient_id_occurred_at", "patient_id", "occurred_at"),
    Index("ix_encounters_tenant_id_visit_number", "tenant_id", "visit_number"),
))
