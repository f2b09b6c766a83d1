"""Tables of the identity domain.

``accounts`` is a projection of account events (rebuilt from the log). Credentials, sessions,
refresh tokens and one-time codes are security state, deliberately *not* event-sourced: they are
high-churn, secret, and must be destroyable.
"""

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Table
from sqlalchemy.dialects.postgresql import UUID

from carebase.platform.db import metadata
from carebase.platform.eventstore import projection_table

accounts = projection_table(Table(
    "accounts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("email", String(320), nullable=True, unique=True),  # lower-cased; NULL once erased
    Column("phone", String(20), nullable=True, unique=True),  # E.164
    Column("display_name", String(200), nullable=True),
    Column("is_superadmin", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=True),
    Column("version", Integer, nullable=False),
))

credentials = Table(
    "credentials",
    metadata,
    # No foreign keys into projections: rebuild-projections truncates those.
    Column("account_id", UUID(as_uuid=True), primary_key=True),
    Column("password_hash", String(200), nullable=True),
    Column("totp_secret", LargeBinary, nullable=True),  # AES-GCM sealed
    Column("totp_enabled_at", DateTime(timezone=True), nullable=True),
    Column("totp_last_step", Integer, nullable=True),  # refuses replay of a used code
    Column("failed_logins", Integer, nullable=False, server_default="0"),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("password_changed_at", DateTime(timezone=True), nullable=True),
)

auth_sessions = Table(
    "auth_sessions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),  # the refresh-token family
    # Owned by the account (RLS on app.account_id), not by a tenant: a person's sessions.
    Column("account_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("active_tenant_id", UUID(as_uuid=True), nullable=True),  # the tenant this session is signed in to
    Column("roles", String(200), nullable=False),
    Column("mfa", Boolean, nullable=False),
    # The SMART scopes the sign-in asked for; every token of the session keeps them (see authz).
    Column("scope", String(500), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_reason", String(64), nullable=True),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("session_id", UUID(as_uuid=True), ForeignKey("auth_sessions.id", ondelete="CASCADE"), nullable=False,
           index=True),
    # Lets refresh bind the transaction to the account before it can see the session (RLS).
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
)

otp_challenges = Table(
    "otp_challenges",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("destination_hash", String(64), nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=True),  # None: nobody has that number
    Column("code_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("consumed_at", DateTime(timezone=True), nullable=True),
    Index("ix_otp_challenges_destination_hash_created_at", "destination_hash", "created_at"),
)

password_resets = Table(
    "password_resets",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("account_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
)

# Keys for integrations (an HL7 feed, a FHIR backend client): the key is shown once and kept as a
# keyed hash; it acts in its organization as the "integration" role, narrowed by its scope.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("name", String(100), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scope", String(500), nullable=False),
    Column("created_by", UUID(as_uuid=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("ix_api_keys_tenant_id", "tenant_id"),
)
