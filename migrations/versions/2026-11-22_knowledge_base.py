"""knowledge base: medicines and conditions shipped with the code, searchable by full text

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from carebase.platform.migrations import grant

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Reference data, the same for every tenant: no tenant_id, no RLS, read-only for the app.
    # Its rows are (re)loaded after every migration run when the shipped files changed
    # (carebase.knowledge.service.load, recorded in reference_data).
    op.create_table('reference_data',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('loaded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_reference_data'))
    )
    op.create_table('kb_entries',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('search', postgresql.TSVECTOR(), sa.Computed(
        "setweight(to_tsvector('english', title), 'A') || setweight(to_tsvector('english', body), 'B')",
        persisted=True), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'key', name=op.f('pk_kb_entries'))
    )
    op.create_index('ix_kb_entries_search', 'kb_entries', ['search'], postgresql_using='gin')
    grant('kb_entries', 'SELECT')
    grant('reference_data', 'SELECT')


def downgrade() -> None:
    op.drop_table('kb_entries')
    op.drop_table('reference_data')
