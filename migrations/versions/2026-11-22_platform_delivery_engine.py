"""platform delivery engine: deliveries along channel chains, every attempt logged

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from carebase.platform.migrations import CURRENT_TENANT, app_role, grant

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def _rls(table: str) -> None:
    # A tenant's rows inside its transactions; platform rows (tenant_id NULL: sign-in codes, resets)
    # only in transactions without a tenant, so no clinic ever sees another's or the platform's.
    cond = f"tenant_id IS NOT DISTINCT FROM {CURRENT_TENANT}"
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({cond}) WITH CHECK ({cond})")


def upgrade() -> None:
    op.create_table('deliveries',
    sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('tenant_id', postgresql.UUID(as_uuid=True), nullable=True),
    sa.Column('account_id', postgresql.UUID(as_uuid=True), nullable=True),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('dedupe_key', sa.String(length=300), nullable=True),
    sa.Column('chain', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('addresses', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('content', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('urgent', sa.Boolean(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_channel', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_deliveries_dedupe_key'))
    )
    op.create_index('ix_deliveries_tenant_id_status_created_at', 'deliveries', ['tenant_id', 'status', 'created_at'])
    op.create_index('ix_deliveries_account_id_created_at', 'deliveries', ['account_id', 'created_at'])
    op.create_table('delivery_attempts',
    sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('delivery_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('tenant_id', postgresql.UUID(as_uuid=True), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('provider_message_id', sa.String(length=200), nullable=True),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=True),
    sa.Column('provider_status', sa.String(length=16), nullable=True),
    sa.Column('provider_status_detail', sa.Text(), nullable=True),
    sa.Column('provider_status_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], name=op.f('fk_delivery_attempts_delivery_id_deliveries'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_attempts'))
    )
    op.create_index('ix_delivery_attempts_delivery_id', 'delivery_attempts', ['delivery_id'])
    op.create_index('ix_delivery_attempts_provider_message', 'delivery_attempts', ['provider', 'provider_message_id'])
    # The request path queues deliveries and, for local channels, walks them inline.
    grant('deliveries', 'SELECT, INSERT, UPDATE')
    grant('delivery_attempts', 'SELECT, INSERT, UPDATE')
    _rls('deliveries')
    _rls('delivery_attempts')
    # Providers' status webhooks carry no tenant: this function may set a status on the attempt a
    # provider message id names, and nothing else (the owner runs it, past row-level security).
    op.execute("""
        CREATE FUNCTION delivery_provider_status(p_provider text, p_message_id text, p_status text, p_detail text)
        RETURNS boolean LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
            -- Providers report out of order: a late "delivered" must not undo "read". Statuses only
            -- move forward (sent < delivered < read); "failed" replaces only sent or nothing.
            WITH found AS (
                SELECT id FROM delivery_attempts WHERE provider = p_provider AND provider_message_id = p_message_id),
            changed AS (
                UPDATE delivery_attempts SET provider_status = p_status, provider_status_detail = p_detail,
                       provider_status_at = now()
                WHERE id IN (SELECT id FROM found)
                  AND CASE p_status WHEN 'failed' THEN coalesce(provider_status, 'sent') = 'sent'
                      ELSE array_position(ARRAY['sent', 'delivered', 'read'], p_status)
                           > coalesce(array_position(ARRAY['sent', 'delivered', 'read'], provider_status), 0)
                      END
                RETURNING 1)
            SELECT EXISTS (SELECT 1 FROM found)
        $$""")
    op.execute("REVOKE ALL ON FUNCTION delivery_provider_status(text, text, text, text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION delivery_provider_status(text, text, text, text) TO {app_role()}")


def downgrade() -> None:
    op.execute("DROP FUNCTION delivery_provider_status(text, text, text, text)")
    op.drop_table('delivery_attempts')
    op.drop_table('deliveries')
