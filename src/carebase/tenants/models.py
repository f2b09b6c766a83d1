"""Tables of the tenants domain: organizations, their locations, and who belongs with which role."""

from sqlalchemy import Column, DateTime, ForeignKey, Index, Integer, String, Table, text
from sqlalchemy.dialects.postgresql import UUID

from carebase.platform.db import metadata
from carebase.platform.eventstore import projection_table

# Global directory (no tenant_id): a clinic's name and slug are public, and login needs them.
tenants = projection_table(Table(
    "tenants",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("slug", String(63), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("parent_id", UUID(as_uuid=True), ForeignKey("tenants.id"), nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
))

locations = projection_table(Table(
    "locations",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("address", String(500), nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
))

memberships = projection_table(Table(
    "memberships",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id"), nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("role", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # One active grant of a role per person and tenant; removed grants stay as history.
    Index("uq_memberships_active", "tenant_id", "account_id", "role", unique=True,
          postgresql_where=text("revoked_at IS NULL")),
    Index("ix_memberships_account_id", "account_id"),
))
