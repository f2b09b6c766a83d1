"""The knowledge base's searchable copy in PostgreSQL (the files in data/ are the source)."""

from sqlalchemy import Column, Computed, DateTime, Index, Integer, String, Table, Text, func
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR

from carebase.platform.db import metadata

reference_data = Table(
    "reference_data",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("digest", String(64), nullable=False),  # sha-256 of the shipped files last loaded
    Column("rows", Integer, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

kb_entries = Table(
    "kb_entries",
    metadata,
    Column("kind", String(16), primary_key=True),  # medicine | condition
    Column("key", String(200), primary_key=True),  # the generic name, or the condition's code and name
    Column("title", Text, nullable=False),  # names: weighted first in search
    Column("body", Text, nullable=False),  # symptoms, class, groups, uses
    Column("data", JSONB, nullable=False),  # the entry as shipped
    Column("search", TSVECTOR, Computed("setweight(to_tsvector('english', title), 'A') || "
                                        "setweight(to_tsvector('english', body), 'B')", persisted=True),
           nullable=False),
    Index("ix_kb_entries_search", "search", postgresql_using="gin"),
)
