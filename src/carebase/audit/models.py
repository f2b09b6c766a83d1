"""Who read which patient's data, when and why. Append-only (the app role cannot UPDATE/DELETE)."""

from sqlalchemy import BigInteger, Column, DateTime, Identity, Index, String, Table
from sqlalchemy.dialects.postgresql import UUID

from carebase.platform.db import metadata

audit_reads = Table(
    "audit_reads",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("actor_account_id", UUID(as_uuid=True), nullable=False),
    Column("actor_roles", String(200), nullable=False),
    Column("patient_id", UUID(as_uuid=True), nullable=False),
    Column("record_type", String(64), nullable=False),
    Column("record_id", UUID(as_uuid=True), nullable=True),
    Column("purpose", String(32), nullable=False),
    Column("request_id", String(64), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_audit_reads_tenant_id_patient_id_at", "tenant_id", "patient_id", "at"),
    Index("ix_audit_reads_tenant_id_at", "tenant_id", "at"),
)
