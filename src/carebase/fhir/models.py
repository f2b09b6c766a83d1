"""Bulk Data exports: one row per $export request, its progress and the NDJSON files it wrote."""

from sqlalchemy import Column, DateTime, Integer, String, Table, Text
from sqlalchemy.dialects.postgresql import JSONB, UUID

from carebase.platform.db import metadata

fhir_exports = Table(
    "fhir_exports",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False, index=True),
    # Who asked: the export runs later, in a worker, with exactly their rights and scope.
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("roles", String(200), nullable=False),
    Column("scope", String(500), nullable=True),
    Column("request_url", Text, nullable=False),
    Column("level", String(8), nullable=False),  # system | patient | group
    Column("group_id", UUID(as_uuid=True), nullable=True),
    Column("types", JSONB, nullable=False),
    Column("since", DateTime(timezone=True), nullable=True),
    Column("status", String(12), nullable=False),  # queued | running | done | failed | cancelled
    Column("progress", String(200), nullable=True),
    Column("output", JSONB, nullable=False),  # [{type, file, count, bytes}]
    Column("error", Text, nullable=True),
    Column("rows", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("transaction_time", DateTime(timezone=True), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
)
