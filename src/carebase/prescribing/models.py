"""Prescriptions and the prescribers' signing keys."""

from sqlalchemy import Column, DateTime, Index, SmallInteger, String, Table, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB, UUID

from carebase.platform.db import metadata

prescriptions = Table(
    "prescriptions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("patient_id", UUID(as_uuid=True), nullable=False),
    Column("consultation_id", UUID(as_uuid=True), nullable=True),  # drafted from this consultation
    Column("source", String(16), nullable=False),  # assistant | physician
    Column("status", String(16), nullable=False),  # draft | approved | rejected | revoked
    Column("urgency", SmallInteger, nullable=False),  # the queue's order: 2 emergency, 1 urgent, 0 routine
    # [{medicine, dose, unit, times_per_day, duration_days, instructions}]
    Column("items", JSONB, nullable=False),
    Column("safety", JSONB, nullable=False),  # the flags of the last safety check
    Column("diagnosis", Text, nullable=True),
    Column("notes", Text, nullable=True),  # the physician's notes (approval or rejection)
    Column("override_reason", Text, nullable=True),  # why blocking flags were overridden
    Column("created_by", UUID(as_uuid=True), nullable=True),  # None: the assistant
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("reviewed_by", UUID(as_uuid=True), nullable=True),
    Column("reviewed_at", DateTime(timezone=True), nullable=True),
    # What was signed (canonical JSON), its SHA-256 and the prescriber's Ed25519 signature over it.
    Column("signed_content", JSONB, nullable=True),
    Column("content_hash", String(64), nullable=True),
    Column("signature", Text, nullable=True),
    Column("signer_key_id", UUID(as_uuid=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_reason", Text, nullable=True),
    # The patient's own signature (the signature pad's image, in storage), before they may see the
    # final prescription; the consent itself is also an event in the append-only log.
    Column("patient_signed_at", DateTime(timezone=True), nullable=True),
    Column("patient_signature_key", String(300), nullable=True),
    Column("patient_signature_sha256", String(64), nullable=True),
    Column("patient_signature_ip", String(64), nullable=True),
    # Aadhaar eSign (Indian deployments): the ESP transaction, then its PKCS#7 over content_hash.
    Column("esign_txn", String(64), nullable=True, unique=True),
    Column("esign_signature", Text, nullable=True),
    Column("esign_signer", String(200), nullable=True),
    Column("esign_certificate", Text, nullable=True),
    Column("esign_at", DateTime(timezone=True), nullable=True),
    Index("ix_prescriptions_tenant_id_status_urgency", "tenant_id", "status", "urgency"),
    Index("ix_prescriptions_patient_id_created_at", "patient_id", "created_at"),
)

prescriber_keys = Table(
    "prescriber_keys",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("public_key", String(64), nullable=False),  # raw Ed25519 public key, base64
    # The private key, AES-GCM sealed under a key derived from the master secret: a database dump
    # alone cannot sign.
    Column("sealed_private_key", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("tenant_id", "account_id"),
)
