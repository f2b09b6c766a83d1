"""hl7v2: the inbox of received HL7 v2 messages and their acknowledgements

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

from carebase.platform.migrations import grant, tenant_rls

revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('hl7_messages',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('api_key_id', sa.UUID(), nullable=True),
    sa.Column('via', sa.String(length=8), nullable=False),
    sa.Column('control_id', sa.String(length=199), nullable=True),
    sa.Column('sender', sa.String(length=200), nullable=True),
    sa.Column('message_type', sa.String(length=20), nullable=True),
    sa.Column('sealed_body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('ack_code', sa.String(length=2), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('patient_id', sa.UUID(), nullable=True),
    sa.Column('encounter_id', sa.UUID(), nullable=True),
    sa.Column('replay_of', sa.UUID(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='1', nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hl7_messages'))
    )
    op.create_index('uq_hl7_messages_processed', 'hl7_messages', ['tenant_id', 'sender', 'control_id'], unique=True,
                    postgresql_where=sa.text("status = 'processed'"))
    op.create_index('ix_hl7_messages_tenant_id_received_at', 'hl7_messages', ['tenant_id', 'received_at'])
    grant('hl7_messages', 'SELECT, INSERT, UPDATE')
    tenant_rls('hl7_messages')


def downgrade() -> None:
    op.drop_index('ix_hl7_messages_tenant_id_received_at', table_name='hl7_messages')
    op.drop_index('uq_hl7_messages_processed', table_name='hl7_messages')
    op.drop_table('hl7_messages')
