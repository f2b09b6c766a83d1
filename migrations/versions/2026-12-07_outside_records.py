"""outside_records: clinical and directory resources received from other systems

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from carebase.platform.migrations import grant, tenant_rls

revision = '0026'
down_revision = '0025'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('outside_records',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.UUID(), nullable=True),
    sa.Column('tokens', postgresql.ARRAY(sa.String()), nullable=False),
    sa.Column('refs', postgresql.ARRAY(sa.String()), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resource', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('received_by', sa.UUID(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outside_records'))
    )
    op.create_index('ix_outside_records_patient', 'outside_records',
                    ['tenant_id', 'patient_id', 'resource_type', 'occurred_at'])
    op.create_index('ix_outside_records_type', 'outside_records', ['tenant_id', 'resource_type', 'occurred_at'])
    op.create_index('ix_outside_records_tokens', 'outside_records', ['tokens'], postgresql_using='gin')
    op.create_index('ix_outside_records_refs', 'outside_records', ['refs'], postgresql_using='gin')
    grant('outside_records')
    tenant_rls('outside_records')


def downgrade() -> None:
    op.drop_table('outside_records')
