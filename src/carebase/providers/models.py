"""The provider directory (a projection of provider events): who practises here, what they do,
where, in which languages, and whether an administrator has verified their credentials."""

from sqlalchemy import Boolean, Column, DateTime, Index, Integer, String, Table, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from carebase.platform.db import metadata
from carebase.platform.eventstore import projection_table

providers = projection_table(Table(
    "providers",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=True),  # the provider's own login, if any
    Column("npi", String(10), nullable=False),
    Column("license_number", String(50), nullable=True),
    Column("given_name", String(100), nullable=False),
    Column("family_name", String(100), nullable=False),
    Column("specialty", String(100), nullable=False),
    Column("sub_specialty", String(100), nullable=True),
    Column("practice_name", String(200), nullable=True),
    Column("country", String(2), nullable=False),
    Column("state_province", String(100), nullable=True),
    Column("city", String(100), nullable=True),
    Column("email", String(320), nullable=True),
    Column("phone", String(20), nullable=True),
    Column("languages", ARRAY(String(3)), nullable=False),
    Column("education", JSONB, nullable=False),
    Column("certifications", JSONB, nullable=False),
    Column("accepts_new_patients", Boolean, nullable=False),
    Column("telemedicine_enabled", Boolean, nullable=False),
    Column("verified", Boolean, nullable=False),
    Column("verified_by", UUID(as_uuid=True), nullable=True),
    Column("verified_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
    UniqueConstraint("tenant_id", "npi"),
    # One directory entry per login and organization.
    UniqueConstraint("tenant_id", "account_id"),
    Index("ix_providers_languages", "languages", postgresql_using="gin"),
))

# The directory's sort order, which keyset pagination walks.
Index("ix_providers_tenant_id_name", providers.c.tenant_id, func.lower(providers.c.family_name),
      func.lower(providers.c.given_name), providers.c.id)
