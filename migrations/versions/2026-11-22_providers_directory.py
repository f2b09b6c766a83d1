"""providers directory: the provider register (NPI, licence, specialty, languages, education,
certifications, verification), tenant-isolated

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from carebase.platform.migrations import grant, tenant_rls

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('providers',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('account_id', sa.UUID(), nullable=True),
    sa.Column('npi', sa.String(length=10), nullable=False),
    sa.Column('license_number', sa.String(length=50), nullable=True),
    sa.Column('given_name', sa.String(length=100), nullable=False),
    sa.Column('family_name', sa.String(length=100), nullable=False),
    sa.Column('specialty', sa.String(length=100), nullable=False),
    sa.Column('sub_specialty', sa.String(length=100), nullable=True),
    sa.Column('practice_name', sa.String(length=200), nullable=True),
    sa.Column('country', sa.String(length=2), nullable=False),
    sa.Column('state_province', sa.String(length=100), nullable=True),
    sa.Column('city', sa.String(length=100), nullable=True),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('phone', sa.String(length=20), nullable=True),
    sa.Column('languages', postgresql.ARRAY(sa.String(length=3)), nullable=False),
    sa.Column('education', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('certifications', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('accepts_new_patients', sa.Boolean(), nullable=False),
    sa.Column('telemedicine_enabled', sa.Boolean(), nullable=False),
    sa.Column('verified', sa.Boolean(), nullable=False),
    sa.Column('verified_by', sa.UUID(), nullable=True),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_providers')),
    sa.UniqueConstraint('tenant_id', 'npi', name=op.f('uq_providers_tenant_id_npi')),
    sa.UniqueConstraint('tenant_id', 'account_id', name=op.f('uq_providers_tenant_id_account_id')),
    )
    op.create_index('ix_providers_languages', 'providers', ['languages'], unique=False, postgresql_using='gin')
    op.create_index('ix_providers_tenant_id_name', 'providers',
                    ['tenant_id', sa.text('lower(family_name)'), sa.text('lower(given_name)'), 'id'], unique=False)
    grant("providers")
    tenant_rls("providers")


def downgrade() -> None:
    op.drop_index('ix_providers_tenant_id_name', table_name='providers')
    op.drop_index('ix_providers_languages', table_name='providers')
    op.drop_table('providers')
