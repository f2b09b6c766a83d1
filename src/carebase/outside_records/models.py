"""The read model of outside records: one row per record, the resource as it stands now plus the
columns its searches use (a projection of outside-record events)."""

from sqlalchemy import Column, DateTime, Index, Integer, String, Table, Text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from carebase.platform.db import metadata
from carebase.platform.eventstore import projection_table

outside_records = projection_table(Table(
    "outside_records",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("resource_type", String(64), nullable=False),
    # The Carebase patient the record is about (None: a practitioner, organization, location...).
    Column("patient_id", UUID(as_uuid=True), nullable=True),
    # Search tokens, lower case: "<param>=<system>|<code>" and "<param>=<code>" (code, category,
    # status, type, ...), so one array index answers every token parameter.
    Column("tokens", ARRAY(String), nullable=False),
    # Every reference the record makes ("Encounter/<id>"): encounter= searches and _revinclude.
    Column("refs", ARRAY(String), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=True),  # the clinical date its date= searches
    Column("resource", JSONB, nullable=False),  # without id and meta: those are the row's
    Column("source", Text, nullable=True),  # the sending system, when it said (meta.source)
    Column("received_by", UUID(as_uuid=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    Column("version", Integer, nullable=False),
    Index("ix_outside_records_patient", "tenant_id", "patient_id", "resource_type", "occurred_at"),
    Index("ix_outside_records_type", "tenant_id", "resource_type", "occurred_at"),
    Index("ix_outside_records_tokens", "tokens", postgresql_using="gin"),
    Index("ix_outside_records_refs", "refs", postgresql_using="gin"),
))
