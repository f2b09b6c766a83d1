"""The patient register (a projection of patient events). Issue 4 grows it into the full chart."""

from sqlalchemy import Column, Date, DateTime, Integer, String, Table, UniqueConstraint
from sqlalchemy.dialects.postgresql import UUID

from carebase.platform.db import metadata
from carebase.platform.eventstore import projection_table

patients = projection_table(Table(
    "patients",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=True, index=True),  # the patient's own login, if any
    Column("mrn", String(32), nullable=False),
    Column("given_name", String(100), nullable=True),
    Column("family_name", String(100), nullable=True),
    Column("birth_date", Date, nullable=True),
    Column("sex", String(16), nullable=True),
    Column("phone", String(20), nullable=True),
    Column("email", String(320), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=True),
    Column("version", Integer, nullable=False),
    UniqueConstraint("tenant_id", "mrn"),
))
