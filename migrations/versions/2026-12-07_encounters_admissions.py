"""encounters: admitted stays (in progress until discharged) with the admitting system's visit number

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('encounters', sa.Column('status', sa.String(length=16), server_default='finished', nullable=False))
    op.add_column('encounters', sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('encounters', sa.Column('visit_number', sa.String(length=64), nullable=True))
    op.create_index('ix_encounters_tenant_id_visit_number', 'encounters', ['tenant_id', 'visit_number'])


def downgrade() -> None:
    op.drop_index('ix_encounters_tenant_id_visit_number', table_name='encounters')
    op.drop_column('encounters', 'visit_number')
    op.drop_column('encounters', 'ended_at')
    op.drop_column('encounters', 'status')
