"""pharmacy subscriptions: plan, renewal, grace and credit on the profile; invoices and their
events; gapless document numbers per organization; order receipts

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

from carebase.platform.migrations import grant, tenant_rls

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('pharmacies', sa.Column('subscription_plan', sa.String(length=16), nullable=True))
    op.add_column('pharmacies', sa.Column('subscription_auto_renew', sa.Boolean(), server_default='true',
                                          nullable=False))
    op.add_column('pharmacies', sa.Column('subscription_grace_until', sa.DateTime(timezone=True), nullable=True))
    op.add_column('pharmacies', sa.Column('subscription_credit_minor', sa.BigInteger(), server_default='0',
                                          nullable=False))
    op.create_table('pharmacy_subscription_invoices',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('number', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('plan', sa.String(length=16), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('description', sa.String(length=200), nullable=False),
    sa.Column('net_minor', sa.BigInteger(), nullable=False),
    sa.Column('tax_name', sa.String(length=16), nullable=False),
    sa.Column('tax_rate_bps', sa.Integer(), nullable=False),
    sa.Column('tax_minor', sa.BigInteger(), nullable=False),
    sa.Column('total_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('paid_via', sa.String(length=8), nullable=True),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('total_minor = net_minor + tax_minor AND net_minor >= 0',
                       name=op.f('ck_pharmacy_subscription_invoices_adds_up')),
    sa.ForeignKeyConstraint(['tenant_id'], ['pharmacies.tenant_id'],
                            name=op.f('fk_pharmacy_subscription_invoices_tenant_id_pharmacies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pharmacy_subscription_invoices'))
    )
    op.create_index('uq_pharmacy_subscription_invoices_tenant_id_number', 'pharmacy_subscription_invoices',
                    ['tenant_id', 'number'], unique=True)
    op.create_index('ix_pharmacy_subscription_invoices_tenant_id_created_at', 'pharmacy_subscription_invoices',
                    ['tenant_id', 'created_at'])
    op.create_table('pharmacy_subscription_events',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('note', sa.String(length=300), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pharmacy_subscription_events'))
    )
    op.create_index(op.f('ix_pharmacy_subscription_events_tenant_id'), 'pharmacy_subscription_events', ['tenant_id'])
    op.create_table('document_numbers',
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('series', sa.String(length=16), nullable=False),
    sa.Column('last', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'series', name=op.f('pk_document_numbers'))
    )
    op.add_column('pharmacy_orders', sa.Column('receipt_number', sa.String(length=32), nullable=True))
    op.create_index('uq_pharmacy_orders_tenant_id_receipt_number', 'pharmacy_orders', ['tenant_id', 'receipt_number'],
                    unique=True)
    grant('pharmacy_subscription_invoices', 'SELECT, INSERT, UPDATE')
    grant('pharmacy_subscription_events', 'SELECT, INSERT')
    grant('document_numbers', 'SELECT, INSERT, UPDATE')
    for table in ('pharmacy_subscription_invoices', 'pharmacy_subscription_events', 'document_numbers'):
        tenant_rls(table)


def downgrade() -> None:
    op.drop_index('uq_pharmacy_orders_tenant_id_receipt_number', table_name='pharmacy_orders')
    op.drop_column('pharmacy_orders', 'receipt_number')
    for table in ('document_numbers', 'pharmacy_subscription_events', 'pharmacy_subscription_invoices'):
        op.drop_table(table)
    for column in ('subscription_credit_minor', 'subscription_grace_until', 'subscription_auto_renew',
                   'subscription_plan'):
        op.drop_column('pharmacies', column)
