"""fhir: Bulk Data $export requests, their progress and output files

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from carebase.platform.migrations import grant, tenant_rls

revision = '0025'
down_revision = '0024'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('fhir_exports',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('account_id', sa.UUID(), nullable=False),
    sa.Column('roles', sa.String(length=200), nullable=False),
    sa.Column('scope', sa.String(length=500), nullable=True),
    sa.Column('request_url', sa.Text(), nullable=False),
    sa.Column('level', sa.String(length=8), nullable=False),
    sa.Column('group_id', sa.UUID(), nullable=True),
    sa.Column('types', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('progress', sa.String(length=200), nullable=True),
    sa.Column('output', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('rows', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('transaction_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fhir_exports'))
    )
    op.create_index(op.f('ix_fhir_exports_tenant_id'), 'fhir_exports', ['tenant_id'])
    grant('fhir_exports', 'SELECT, INSERT, UPDATE')
    tenant_rls('fhir_exports')


def downgrade() -> None:
    op.drop_index(op.f('ix_fhir_exports_tenant_id'), table_name='fhir_exports')
    op.drop_table('fhir_exports')
