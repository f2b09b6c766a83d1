"""pharmacy marketplace: pharmacies, medicines and stock, carts, orders

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from carebase.platform.migrations import CURRENT_ACCOUNT, CURRENT_TENANT, account_rls, app_role, grant, tenant_rls

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

TABLES = ('pharmacy_stock_events', 'pharmacy_order_items', 'pharmacy_order_events', 'cart_items', 'pharmacy_orders',
          'pharmacy_medicines', 'pharmacies', 'medicine_words')


def _shop_window(table: str) -> None:
    """Every session reads it (the marketplace); only the owning tenant writes it."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY marketplace_read ON {table} FOR SELECT USING (true)")
    own = f"tenant_id = {CURRENT_TENANT}"
    for command in ("INSERT", "UPDATE", "DELETE"):
        check = f"WITH CHECK ({own})" if command != "DELETE" else ""
        using = f"USING ({own})" if command != "INSERT" else ""
        op.execute(f"CREATE POLICY own_{command.lower()} ON {table} FOR {command} {using} {check}")


def _pharmacy_and_patient(table: str) -> None:
    """The pharmacy's tenant and the patient's own account (at any pharmacy) see and write it."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    cond = f"tenant_id = {CURRENT_TENANT} OR patient_account_id = {CURRENT_ACCOUNT}"
    op.execute(f"CREATE POLICY pharmacy_or_patient ON {table} USING ({cond}) WITH CHECK ({cond})")


def upgrade() -> None:
    op.create_table('medicine_words',
    sa.Column('word', sa.String(length=100), nullable=False),
    sa.Column('trigrams', postgresql.ARRAY(sa.Text()), nullable=False),
    sa.PrimaryKeyConstraint('word', name=op.f('pk_medicine_words'))
    )
    op.create_index('ix_medicine_words_trigrams', 'medicine_words', ['trigrams'], unique=False, postgresql_using='gin')
    op.create_table('pharmacies',
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('licence_number', sa.String(length=64), nullable=False),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('address', sa.String(length=500), nullable=False),
    sa.Column('city', sa.String(length=100), nullable=True),
    sa.Column('lat', sa.Float(), nullable=False),
    sa.Column('lon', sa.Float(), nullable=False),
    sa.Column('opening_hours', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('delivery_radius_km', sa.Numeric(precision=5, scale=1), nullable=False),
    sa.Column('delivery_fee_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('listed', sa.Boolean(), nullable=False),
    sa.Column('subscription_status', sa.String(length=16), nullable=False),
    sa.Column('subscription_ends_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', name=op.f('pk_pharmacies'))
    )
    op.create_index('ix_pharmacies_lat_lon', 'pharmacies', ['lat', 'lon'], unique=False)
    op.create_table('pharmacy_medicines',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('generic_name', sa.String(length=200), nullable=True),
    sa.Column('generic_key', sa.String(length=200), nullable=True),
    sa.Column('category', sa.String(length=100), nullable=False),
    sa.Column('manufacturer', sa.String(length=200), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('dosage_form', sa.String(length=50), nullable=True),
    sa.Column('strength', sa.String(length=50), nullable=True),
    sa.Column('pack_size', sa.Integer(), nullable=True),
    sa.Column('mrp_minor', sa.BigInteger(), nullable=False),
    sa.Column('price_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('stock', sa.Integer(), nullable=False),
    sa.Column('reserved', sa.Integer(), nullable=False),
    sa.Column('low_stock_threshold', sa.Integer(), nullable=False),
    sa.Column('requires_prescription', sa.Boolean(), nullable=False),
    sa.Column('controlled_schedule', sa.String(length=16), nullable=True),
    sa.Column('image_url', sa.String(length=500), nullable=True),
    sa.Column('is_available', sa.Boolean(), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('search', postgresql.TSVECTOR(), sa.Computed("setweight(to_tsvector('simple', name), 'A') || setweight(to_tsvector('simple', coalesce(generic_name, '')), 'B')", persisted=True), nullable=False),
    sa.CheckConstraint('price_minor >= 0 AND price_minor <= mrp_minor', name=op.f('ck_pharmacy_medicines_price_within_mrp')),
    sa.CheckConstraint('reserved >= 0 AND reserved <= stock', name=op.f('ck_pharmacy_medicines_stock_covers_reserved')),
    sa.ForeignKeyConstraint(['tenant_id'], ['pharmacies.tenant_id'], name=op.f('fk_pharmacy_medicines_tenant_id_pharmacies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pharmacy_medicines'))
    )
    op.create_index('ix_pharmacy_medicines_generic_key', 'pharmacy_medicines', ['generic_key', 'strength'], unique=False)
    op.create_index('ix_pharmacy_medicines_search', 'pharmacy_medicines', ['search'], unique=False, postgresql_using='gin')
    op.create_index('ix_pharmacy_medicines_tenant_id_name', 'pharmacy_medicines', ['tenant_id', 'name'], unique=False)
    op.create_table('pharmacy_orders',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('number', sa.String(length=32), nullable=False),
    sa.Column('patient_account_id', sa.UUID(), nullable=False),
    sa.Column('patient_tenant_id', sa.UUID(), nullable=False),
    sa.Column('contact_name', sa.String(length=200), nullable=False),
    sa.Column('contact_phone', sa.String(length=32), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('fulfilment', sa.String(length=10), nullable=False),
    sa.Column('delivery_address', sa.String(length=500), nullable=True),
    sa.Column('prescription_id', sa.UUID(), nullable=True),
    sa.Column('subtotal_minor', sa.BigInteger(), nullable=False),
    sa.Column('discount_minor', sa.BigInteger(), nullable=False),
    sa.Column('delivery_fee_minor', sa.BigInteger(), nullable=False),
    sa.Column('total_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('payment_method', sa.String(length=10), nullable=False),
    sa.Column('payment_status', sa.String(length=10), nullable=False),
    sa.Column('stock_held', sa.Boolean(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('notes', sa.String(length=500), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('courier', sa.String(length=32), nullable=True),
    sa.Column('courier_ref', sa.String(length=100), nullable=True),
    sa.Column('tracking_url', sa.String(length=500), nullable=True),
    sa.Column('placed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['pharmacies.tenant_id'], name=op.f('fk_pharmacy_orders_tenant_id_pharmacies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pharmacy_orders')),
    sa.UniqueConstraint('number', name=op.f('uq_pharmacy_orders_number'))
    )
    op.create_index('ix_pharmacy_orders_patient_account_id_placed_at', 'pharmacy_orders', ['patient_account_id', 'placed_at'], unique=False)
    op.create_index('ix_pharmacy_orders_prescription_id', 'pharmacy_orders', ['prescription_id'], unique=False)
    op.create_index('ix_pharmacy_orders_tenant_id_status_placed_at', 'pharmacy_orders', ['tenant_id', 'status', 'placed_at'], unique=False)
    op.create_table('cart_items',
    sa.Column('account_id', sa.UUID(), nullable=False),
    sa.Column('medicine_id', sa.UUID(), nullable=False),
    sa.Column('pharmacy_id', sa.UUID(), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('prescription_id', sa.UUID(), nullable=True),
    sa.Column('added_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('quantity > 0', name=op.f('ck_cart_items_quantity_positive')),
    sa.ForeignKeyConstraint(['medicine_id'], ['pharmacy_medicines.id'], name=op.f('fk_cart_items_medicine_id_pharmacy_medicines')),
    sa.PrimaryKeyConstraint('account_id', 'medicine_id', name=op.f('pk_cart_items'))
    )
    op.create_table('pharmacy_order_events',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('order_id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('patient_account_id', sa.UUID(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('note', sa.String(length=500), nullable=True),
    sa.Column('actor', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['pharmacy_orders.id'], name=op.f('fk_pharmacy_order_events_order_id_pharmacy_orders')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pharmacy_order_events'))
    )
    op.create_index(op.f('ix_pharmacy_order_events_order_id'), 'pharmacy_order_events', ['order_id'], unique=False)
    op.create_table('pharmacy_order_items',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('order_id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('patient_account_id', sa.UUID(), nullable=False),
    sa.Column('medicine_id', sa.UUID(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('strength', sa.String(length=50), nullable=True),
    sa.Column('generic_key', sa.String(length=200), nullable=True),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('unit_price_minor', sa.BigInteger(), nullable=False),
    sa.Column('mrp_minor', sa.BigInteger(), nullable=False),
    sa.Column('total_minor', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('quantity > 0', name=op.f('ck_pharmacy_order_items_quantity_positive')),
    sa.ForeignKeyConstraint(['medicine_id'], ['pharmacy_medicines.id'], name=op.f('fk_pharmacy_order_items_medicine_id_pharmacy_medicines')),
    sa.ForeignKeyConstraint(['order_id'], ['pharmacy_orders.id'], name=op.f('fk_pharmacy_order_items_order_id_pharmacy_orders')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pharmacy_order_items'))
    )
    op.create_index(op.f('ix_pharmacy_order_items_order_id'), 'pharmacy_order_items', ['order_id'], unique=False)
    op.create_table('pharmacy_stock_events',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('medicine_id', sa.UUID(), nullable=False),
    sa.Column('change', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=16), nullable=False),
    sa.Column('stock_after', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.UUID(), nullable=True),
    sa.Column('note', sa.String(length=500), nullable=True),
    sa.Column('actor_id', sa.UUID(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['medicine_id'], ['pharmacy_medicines.id'], name=op.f('fk_pharmacy_stock_events_medicine_id_pharmacy_medicines')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pharmacy_stock_events'))
    )
    op.create_index('ix_pharmacy_stock_events_medicine_id_at', 'pharmacy_stock_events', ['medicine_id', 'at'], unique=False)

    op.execute("CREATE SEQUENCE pharmacy_order_numbers")
    grant('medicine_words', 'SELECT, INSERT')
    for table in ('pharmacies', 'pharmacy_medicines'):
        grant(table, 'SELECT, INSERT, UPDATE')
        _shop_window(table)
    grant('pharmacy_stock_events', 'SELECT, INSERT')
    tenant_rls('pharmacy_stock_events')
    grant('cart_items')
    account_rls('cart_items')
    grant('pharmacy_orders', 'SELECT, INSERT, UPDATE')
    grant('pharmacy_order_items', 'SELECT, INSERT')
    grant('pharmacy_order_events', 'SELECT, INSERT')
    for table in ('pharmacy_orders', 'pharmacy_order_items', 'pharmacy_order_events'):
        _pharmacy_and_patient(table)
    # A patient's checkout holds stock in another tenant's shelf, which the patient may not write:
    # these functions do exactly that for one order of the caller's (or of the caller's pharmacy)
    # and nothing else. Lines are taken in medicine order, so two checkouts never deadlock; a
    # line short of stock is returned (nothing held for any line: the caller rolls back).
    op.execute(f"""
        CREATE FUNCTION pharmacy_reserve(p_order uuid)
        RETURNS TABLE (medicine_id uuid, name text, available integer, wanted integer)
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
        DECLARE
            line record;
        BEGIN
            PERFORM 1 FROM pharmacy_orders o WHERE o.id = p_order AND o.status = 'placed' AND NOT o.stock_held
                AND (o.patient_account_id = {CURRENT_ACCOUNT} OR o.tenant_id = {CURRENT_TENANT}) FOR UPDATE;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'no placed order % of yours holds no stock', p_order USING ERRCODE = 'P0002';
            END IF;
            FOR line IN SELECT i.medicine_id AS id, sum(i.quantity)::integer AS quantity FROM pharmacy_order_items i
                        WHERE i.order_id = p_order GROUP BY i.medicine_id ORDER BY i.medicine_id LOOP
                UPDATE pharmacy_medicines m SET reserved = m.reserved + line.quantity
                WHERE m.id = line.id AND m.deleted_at IS NULL AND m.is_available
                  AND m.stock - m.reserved >= line.quantity;
                IF NOT FOUND THEN
                    RETURN QUERY SELECT m.id, m.name::text, greatest(m.stock - m.reserved, 0), line.quantity
                                 FROM pharmacy_medicines m WHERE m.id = line.id;
                    RETURN;
                END IF;
            END LOOP;
            UPDATE pharmacy_orders SET stock_held = true WHERE id = p_order;
        END $$""")
    op.execute(f"""
        CREATE FUNCTION pharmacy_release(p_order uuid) RETURNS boolean
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
        DECLARE
            line record;
        BEGIN
            PERFORM 1 FROM pharmacy_orders o WHERE o.id = p_order AND o.stock_held
                AND (o.patient_account_id = {CURRENT_ACCOUNT} OR o.tenant_id = {CURRENT_TENANT}) FOR UPDATE;
            IF NOT FOUND THEN
                RETURN false;
            END IF;
            FOR line IN SELECT i.medicine_id AS id, sum(i.quantity)::integer AS quantity FROM pharmacy_order_items i
                        WHERE i.order_id = p_order GROUP BY i.medicine_id ORDER BY i.medicine_id LOOP
                UPDATE pharmacy_medicines SET reserved = reserved - line.quantity WHERE id = line.id;
            END LOOP;
            UPDATE pharmacy_orders SET stock_held = false WHERE id = p_order;
            RETURN true;
        END $$""")
    for fn in ('pharmacy_reserve(uuid)', 'pharmacy_release(uuid)'):
        op.execute(f"REVOKE ALL ON FUNCTION {fn} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {fn} TO {app_role()}")


def downgrade() -> None:
    op.execute("DROP FUNCTION pharmacy_release(uuid)")
    op.execute("DROP FUNCTION pharmacy_reserve(uuid)")
    for table in TABLES:
        op.drop_table(table)
    op.execute("DROP SEQUENCE pharmacy_order_numbers")
