"""pharmacy: CSV imports of the catalogue, one product once per catalogue, courier callbacks

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from carebase.platform.migrations import app_role, grant, tenant_rls

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pharmacy_medicine_imports',
    sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('tenant_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('created_by', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('filename', sa.String(length=200), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('total_rows', sa.Integer(), nullable=False),
    sa.Column('rows', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('errors', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('committed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['pharmacies.tenant_id'],
                            name=op.f('fk_pharmacy_medicine_imports_tenant_id_pharmacies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pharmacy_medicine_imports'))
    )
    grant('pharmacy_medicine_imports', 'SELECT, INSERT, UPDATE')
    tenant_rls('pharmacy_medicine_imports')
    op.execute("CREATE UNIQUE INDEX uq_pharmacy_medicines_identity ON pharmacy_medicines (tenant_id, lower(name), "
               "lower(coalesce(strength, '')), lower(coalesce(dosage_form, '')), lower(coalesce(manufacturer, ''))) "
               "WHERE deleted_at IS NULL")
    op.create_index('ix_pharmacy_orders_courier_courier_ref', 'pharmacy_orders', ['courier', 'courier_ref'])
    # A courier's status callback carries its own booking id and no tenant (it is checked by its
    # signature first): this finds the one order booked under that id, and nothing else.
    op.execute("""
        CREATE FUNCTION pharmacy_order_for_courier(p_courier text, p_ref text)
        RETURNS TABLE (id uuid, tenant_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
            SELECT o.id, o.tenant_id FROM pharmacy_orders o WHERE o.courier = p_courier AND o.courier_ref = p_ref
        $$""")
    op.execute("REVOKE ALL ON FUNCTION pharmacy_order_for_courier(text, text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION pharmacy_order_for_courier(text, text) TO {app_role()}")


def downgrade() -> None:
    op.execute("DROP FUNCTION pharmacy_order_for_courier(text, text)")
    op.drop_index('ix_pharmacy_orders_courier_courier_ref', table_name='pharmacy_orders')
    op.execute("DROP INDEX uq_pharmacy_medicines_identity")
    op.drop_table('pharmacy_medicine_imports')
