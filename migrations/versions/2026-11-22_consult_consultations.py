"""consult consultations: AI-assisted intake conversations, their turns and summaries

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from carebase.platform.migrations import grant, tenant_rls

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('consultations',
    sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('tenant_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('patient_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('account_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('urgency', sa.SmallInteger(), nullable=False),
    sa.Column('engine', sa.String(length=80), nullable=False),
    sa.Column('emergency', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('summary', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('phi_tokens', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('handled_by', postgresql.UUID(as_uuid=True), nullable=True),
    sa.Column('handled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('handled_note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consultations'))
    )
    op.create_index('ix_consultations_tenant_id_status_urgency', 'consultations', ['tenant_id', 'status', 'urgency'])
    op.create_index('ix_consultations_patient_id_started_at', 'consultations', ['patient_id', 'started_at'])
    op.create_table('consultation_turns',
    sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('consultation_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('tenant_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('model_text', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['consultation_id'], ['consultations.id'],
                            name=op.f('fk_consultation_turns_consultation_id_consultations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consultation_turns')),
    sa.UniqueConstraint('consultation_id', 'seq', name=op.f('uq_consultation_turns_consultation_id_seq'))
    )
    for table in ('consultations', 'consultation_turns'):
        grant(table, 'SELECT, INSERT, UPDATE')
        tenant_rls(table)


def downgrade() -> None:
    op.drop_table('consultation_turns')
    op.drop_table('consultations')
