"""Notifications: in-app notices, people's notification settings and their push devices."""

from sqlalchemy import Column, DateTime, String, Table, Text, Time, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB, UUID

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

# A person's notification settings, across all their clinics and pharmacies.
notification_profiles = Table(
    "notification_profiles",
    metadata,
    Column("account_id", UUID(as_uuid=True), primary_key=True),
    Column("language", String(8), nullable=False, server_default="en"),
    Column("timezone", String(64), nullable=True),  # None: the tenant's
    Column("quiet_start", Time, nullable=True),  # local wall-clock times; both or neither
    Column("quiet_end", Time, nullable=True),
    Column("categories_off", JSONB, nullable=False, server_default="[]"),
    Column("channels_off", JSONB, nullable=False, server_default="[]"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Where push notifications reach a person: browsers (Web Push subscriptions) and apps (FCM tokens).
push_devices = Table(
    "push_devices",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("account_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # webpush | fcm
    Column("address", Text, nullable=False, unique=True),  # the subscription endpoint or the FCM token
    Column("keys", JSONB, nullable=True),  # Web Push: p256dh and auth
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
