"""prescribing prescriptions: drafts, the physician queue, signed approvals, prescriber keys

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from carebase.platform.migrations import app_role, grant, tenant_rls

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('prescriptions',
    sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('tenant_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('patient_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('consultation_id', postgresql.UUID(as_uuid=True), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('urgency', sa.SmallInteger(), nullable=False),
    sa.Column('items', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('safety', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('diagnosis', sa.Text(), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('override_reason', sa.Text(), nullable=True),
    sa.Column('created_by', postgresql.UUID(as_uuid=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('reviewed_by', postgresql.UUID(as_uuid=True), nullable=True),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('signed_content', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=True),
    sa.Column('signature', sa.Text(), nullable=True),
    sa.Column('signer_key_id', postgresql.UUID(as_uuid=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_reason', sa.Text(), nullable=True),
    sa.Column('patient_signed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('patient_signature_key', sa.String(length=300), nullable=True),
    sa.Column('patient_signature_sha256', sa.String(length=64), nullable=True),
    sa.Column('patient_signature_ip', sa.String(length=64), nullable=True),
    sa.Column('esign_txn', sa.String(length=64), nullable=True),
    sa.Column('esign_signature', sa.Text(), nullable=True),
    sa.Column('esign_signer', sa.String(length=200), nullable=True),
    sa.Column('esign_certificate', sa.Text(), nullable=True),
    sa.Column('esign_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prescriptions')),
    sa.UniqueConstraint('esign_txn', name=op.f('uq_prescriptions_esign_txn'))
    )
    op.create_index('ix_prescriptions_tenant_id_status_urgency', 'prescriptions', ['tenant_id', 'status', 'urgency'])
    op.create_index('ix_prescriptions_patient_id_created_at', 'prescriptions', ['patient_id', 'created_at'])
    op.create_table('prescriber_keys',
    sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('tenant_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('account_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('public_key', sa.String(length=64), nullable=False),
    sa.Column('sealed_private_key', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prescriber_keys')),
    sa.UniqueConstraint('tenant_id', 'account_id', name=op.f('uq_prescriber_keys_tenant_id_account_id'))
    )
    for table in ('prescriptions', 'prescriber_keys'):
        grant(table, 'SELECT, INSERT, UPDATE')
        tenant_rls(table)
    # The public verification page knows only a prescription's id (from its QR code) and no
    # tenant: this function answers for that one row and nothing else.
    op.execute("""
        CREATE FUNCTION prescription_for_verification(p_id uuid)
        RETURNS TABLE (status text, signed_content jsonb, content_hash text, signature text, public_key text,
                       revoked_at timestamptz, esign_signer text, esign_at timestamptz)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
            SELECT p.status, p.signed_content, p.content_hash, p.signature, k.public_key, p.revoked_at,
                   p.esign_signer, p.esign_at
            FROM prescriptions p LEFT JOIN prescriber_keys k ON k.id = p.signer_key_id
            WHERE p.id = p_id AND p.signature IS NOT NULL
        $$""")
    op.execute("REVOKE ALL ON FUNCTION prescription_for_verification(uuid) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION prescription_for_verification(uuid) TO {app_role()}")
    # The ESP's answer comes back through the doctor's browser as a cross-site POST, which carries
    # no session: the transaction id finds the one prescription waiting for it, and nothing else.
    op.execute("""
        CREATE FUNCTION prescription_for_esign(p_txn text)
        RETURNS TABLE (id uuid, tenant_id uuid, content_hash text)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
            SELECT p.id, p.tenant_id, p.content_hash FROM prescriptions p
            WHERE p.esign_txn = p_txn AND p.esign_signature IS NULL AND p.status = 'approved'
        $$""")
    op.execute("REVOKE ALL ON FUNCTION prescription_for_esign(text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION prescription_for_esign(text) TO {app_role()}")


def downgrade() -> None:
    op.execute("DROP FUNCTION prescription_for_esign(text)")
    op.execute("DROP FUNCTION prescription_for_verification(uuid)")
    op.drop_table('prescriber_keys')
    op.drop_table('prescriptions')
