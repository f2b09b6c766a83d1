"""The patient register (a projection of patient events) and e-mail verification tokens."""

from sqlalchemy import MetaData, Column, Computed, Date, DateTime, Index, Integer, String, Table, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import TSVECTOR, UUID

from carebase.platform.db import metadata
from carebase.platform.eventstore import projection_table

CONSENT_KINDS = ("gdpr", "hipaa", "data_sharing")

patients = projection_table(Table(
    "patients",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=True, index=True),  # the patient's own login, if any
    Column("mrn", String(32), nullable=False),
    Column("global_id", String(24), nullable=True),
    Column("given_name", String(100), nullable=True),
    Column("family_name", String(100), nullable=True),
    Column("birth_date", Date, nullable=True),
    Column("gender", String(1), nullable=False, server_default="U"),
    Column("phone", String(20), nullable=True),
    Column("email", String(320), nullable=True),
    Column("country", String(2), nullable=True),
    Column("timezone", String(64), nullable=True),
    Column("preferred_language", String(16), nullable=True),
    Column("emergency_contact_name", String(200), nullable=True),
    Column("emergency_contact_relationship", String(50), nullable=True),
    Column("emergency_contact_phone", String(20), nullable=True),
    *[Column(f"{kind}_{what}_at", DateTime(timezone=True), nullable=True)
      for kind in CONSENT_KINDS for what in ("consent", "withdrawn")],
    Column("email_verified_at", DateTime(timezone=True), nullable=True),
    Column("merged_into", UUID(as_uuid=True), nullable=True),
    Column("merged_at", DateTime(timezone=True), nullable=True),
    # Names folded (lower case, accents stripped) for full-text prefix search.
    Column("search_name", Text, nullable=True),
    Column("search_vector", TSVECTOR, Computed("to_tsvector('simple', coalesce(search_name, ''))", persisted=True)),
    # Government identifiers are never kept in clear: a keyed hash to find them, the last four to show.
    Column("government_id_system", String(32), nullable=True),
    Column("government_id_hash", String(64), nullable=True),
    Column("government_id_last4", String(4), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=True),
    Column("version", Integer, nullable=False),
    UniqueConstraint("tenant_id", "mrn"),
    Index("ix_patients_search_vector", "search_vector", postgresql_using="gin"),
    Index("uq_patients_global_id", "global_id", unique=True),
    Index("ix_patients_tenant_id_birth_date", "tenant_id", "birth_date"),
    Index("ix_patients_tenant_id_phone", "tenant_id", "phone"),
    Index("ix_patients_tenant_id_email", "tenant_id", "email"),
    Index("ix_patients_tenant_id_government_id_hash", "tenant_id", "government_id_hash"),
))

patient_email_verifications = Table(
    "patient_email_verifications",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("patient_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("email", String(320), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


# The same rows through a plain view (migration 0009) that repeats the tenant policy in its WHERE.
# Under row-level security PostgreSQL evaluates only leakproof conditions before the policy, so a
# search (full text `@@`, upper(mrn), lower(email)) could use no index and scanned every patient.
# The view runs with its owner's rights and filters by the tenant itself; the app role is the only
# client and runs only this code's queries, so nothing can observe rows before that filter. Used
# for search only; everything else reads the table under RLS.
patients_visible = Table("patients_visible", MetaData(), *(c._copy() for c in patients.columns))
