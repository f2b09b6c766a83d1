"""encounters chart: signed encounters with amendments (the chart's read model)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from carebase.platform.migrations import grant, tenant_rls

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    _uuid = postgresql.UUID(as_uuid=True)
    _ts = sa.DateTime(timezone=True)
    op.create_table('encounters',
    sa.Column('id', _uuid, nullable=False),
    sa.Column('tenant_id', _uuid, nullable=False),
    sa.Column('patient_id', _uuid, nullable=False),
    sa.Column('provider_id', _uuid, nullable=False),
    sa.Column('appointment_id', _uuid, nullable=True),
    sa.Column('type', sa.String(length=20), nullable=False),
    sa.Column('occurred_at', _ts, nullable=False),
    sa.Column('chief_complaint', sa.Text(), nullable=True),
    *[sa.Column(name, postgresql.JSONB(), nullable=False)
      for name in ('diagnoses', 'procedures', 'vitals', 'allergies', 'problems', 'medications', 'lab_results')],
    sa.Column('treatment_plan', sa.Text(), nullable=True),
    sa.Column('follow_up_instructions', sa.Text(), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('signed_by', _uuid, nullable=False),
    sa.Column('signed_at', _ts, nullable=False),
    sa.Column('amendments', postgresql.JSONB(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_encounters'))
    )
    op.create_index('ix_encounters_patient_id_occurred_at', 'encounters', ['patient_id', 'occurred_at'])
    grant('encounters')
    tenant_rls('encounters')


def downgrade() -> None:
    op.drop_table('encounters')
