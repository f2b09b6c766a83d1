"""Scheduling read models: weekly availability, exceptions, appointments and the slot claims that
make double booking impossible (all projections of scheduling events)."""

from sqlalchemy import Column, Date, DateTime, Index, Integer, PrimaryKeyConstraint, SmallInteger, String, Table, Text, Time
from sqlalchemy.dialects.postgresql import UUID

from carebase.platform.db import metadata
from carebase.platform.eventstore import projection_table

availability = projection_table(Table(
    "availability",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("provider_id", UUID(as_uuid=True), nullable=False),
    Column("location_id", UUID(as_uuid=True), nullable=False),
    Column("weekday", SmallInteger, nullable=False),  # 0 = Monday, as Python's date.weekday()
    Column("starts", Time, nullable=False),  # wall-clock time at the location
    Column("ends", Time, nullable=False),
    Column("slot_minutes", SmallInteger, nullable=False),
    Column("valid_from", Date, nullable=True),
    Column("valid_until", Date, nullable=True),
    Index("ix_availability_provider_id_location_id", "provider_id", "location_id"),
))

availability_exceptions = projection_table(Table(
    "availability_exceptions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("provider_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("reason", String(200), nullable=False),
))

appointments = projection_table(Table(
    "appointments",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("patient_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("provider_id", UUID(as_uuid=True), nullable=False),
    Column("location_id", UUID(as_uuid=True), nullable=False),
    Column("type", String(20), nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason_for_visit", Text, nullable=True),
    Column("cancel_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
    Index("ix_appointments_provider_id_starts_at", "provider_id", "starts_at"),
))

# One row per 5-minute unit an active appointment covers: the primary key is what makes two
# overlapping bookings of one provider impossible, whatever the code above it does.
slot_claims = projection_table(Table(
    "slot_claims",
    metadata,
    Column("provider_id", UUID(as_uuid=True), nullable=False),
    Column("unit_start", DateTime(timezone=True), nullable=False),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("appointment_id", UUID(as_uuid=True), nullable=False, index=True),
    PrimaryKeyConstraint("provider_id", "unit_start"),
))
