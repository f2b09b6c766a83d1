"""In-app notifications (the notifications issue adds e-mail, SMS and push on top)."""

from sqlalchemy import Column, DateTime, String, Table, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import UUID

from carebase.platform.db import metadata

notifications = Table(
    "notifications",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("kind", String(64), nullable=False),
    Column("title", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("link", String(500), nullable=True),
    # A job that runs twice must not notify twice: the sender names each notice once.
    Column("dedupe_key", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("read_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("tenant_id", "dedupe_key"),
)
