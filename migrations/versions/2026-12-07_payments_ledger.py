"""payments: double-entry ledger, payments and their transactions, refunds, webhook receipts,
payouts, the sandbox gateway's books; pharmacy delivery OTPs

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from carebase.platform.migrations import CURRENT_ACCOUNT, CURRENT_TENANT, app_role, grant

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

TABLES = ('payment_reconciliations', 'pharmacy_delivery_otps', 'sandbox_gateway_charges', 'payment_payouts', 'payment_webhook_events',
          'payment_refunds', 'payment_transactions', 'payments', 'ledger_entries', 'ledger_accounts')
ZERO = "'00000000-0000-0000-0000-000000000000'::uuid"
FUNCTIONS = ('ledger_post(uuid, text, text, text, jsonb)', 'ledger_account(text, uuid, uuid, text)',
             'ledger_held(uuid, text)', 'payment_for_provider(text, text)', 'payment_for_refund(text, text)')


def _payer_or_merchant(table: str) -> None:
    """The payer's own account (anywhere) and the merchant organization see and write it."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    cond = f"payer_account_id = {CURRENT_ACCOUNT} OR tenant_id = {CURRENT_TENANT}"
    op.execute(f"CREATE POLICY payer_or_merchant ON {table} USING ({cond}) WITH CHECK ({cond})")


def _owner_reads(table: str) -> None:
    """Owners read; the platform's own accounts are read by nobody on the request path (operators
    use the owner role); writes only through ledger_post."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY owner_reads ON {table} FOR SELECT USING (owner_account_id = {CURRENT_ACCOUNT} "
               f"OR owner_tenant_id = {CURRENT_TENANT})")


def upgrade() -> None:
    op.create_table('ledger_accounts',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('owner_account_id', sa.UUID(), nullable=True),
    sa.Column('owner_tenant_id', sa.UUID(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('balance_minor', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("kind IN ('patient_wallet', 'escrow', 'merchant_payable', 'platform_clearing', "
                       "'provider_fees', 'platform_revenue')", name=op.f('ck_ledger_accounts_known_kind')),
    sa.CheckConstraint("kind NOT IN ('patient_wallet', 'escrow', 'merchant_payable') OR balance_minor >= 0",
                       name=op.f('ck_ledger_accounts_never_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_accounts'))
    )
    op.create_index('ix_ledger_accounts_owner_account_id', 'ledger_accounts', ['owner_account_id'])
    op.create_index('ix_ledger_accounts_owner_tenant_id', 'ledger_accounts', ['owner_tenant_id'])
    op.execute(f"CREATE UNIQUE INDEX uq_ledger_accounts_owner ON ledger_accounts (kind, "
               f"coalesce(owner_account_id, {ZERO}), coalesce(owner_tenant_id, {ZERO}), currency)")
    op.create_table('ledger_entries',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('journal_id', sa.UUID(), nullable=False),
    sa.Column('journal_kind', sa.String(length=24), nullable=False),
    sa.Column('reference', sa.String(length=100), nullable=True),
    sa.Column('ledger_account_id', sa.UUID(), nullable=False),
    sa.Column('owner_account_id', sa.UUID(), nullable=True),
    sa.Column('owner_tenant_id', sa.UUID(), nullable=True),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('balance_after', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('memo', sa.String(length=200), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('amount_minor <> 0', name=op.f('ck_ledger_entries_moves_money')),
    sa.ForeignKeyConstraint(['ledger_account_id'], ['ledger_accounts.id'],
                            name=op.f('fk_ledger_entries_ledger_account_id_ledger_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_entries'))
    )
    op.create_index('ix_ledger_entries_ledger_account_id_id', 'ledger_entries', ['ledger_account_id', 'id'])
    op.create_index('ix_ledger_entries_journal_id', 'ledger_entries', ['journal_id'])
    op.create_index('ix_ledger_entries_reference', 'ledger_entries', ['reference'])
    op.create_table('payments',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=True),
    sa.Column('payer_account_id', sa.UUID(), nullable=False),
    sa.Column('payer_tenant_id', sa.UUID(), nullable=False),
    sa.Column('purpose', sa.String(length=24), nullable=False),
    sa.Column('reference_id', sa.UUID(), nullable=False),
    sa.Column('description', sa.String(length=200), nullable=False),
    sa.Column('owed_minor', sa.BigInteger(), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('wallet_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('provider_ref', sa.String(length=100), nullable=True),
    sa.Column('provider_payment_ref', sa.String(length=100), nullable=True),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('captured_minor', sa.BigInteger(), nullable=False),
    sa.Column('refunded_minor', sa.BigInteger(), nullable=False),
    sa.Column('fee_minor', sa.BigInteger(), nullable=False),
    sa.Column('failure_reason', sa.String(length=300), nullable=True),
    sa.Column('checkout_url', sa.String(length=500), nullable=True),
    sa.Column('client_secret', sa.String(length=300), nullable=True),
    sa.Column('return_url', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint('amount_minor >= 0 AND wallet_minor >= 0', name=op.f('ck_payments_amounts_not_negative')),
    sa.CheckConstraint('refunded_minor >= 0 AND refunded_minor <= captured_minor',
                       name=op.f('ck_payments_refund_within_capture')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payments'))
    )
    op.create_index('uq_payments_provider_provider_ref', 'payments', ['provider', 'provider_ref'], unique=True)
    op.create_index('ix_payments_payer_account_id_created_at', 'payments', ['payer_account_id', 'created_at'])
    op.create_index('ix_payments_purpose_reference_id', 'payments', ['purpose', 'reference_id'])
    op.create_index('ix_payments_tenant_id_created_at', 'payments', ['tenant_id', 'created_at'])
    op.create_table('payment_transactions',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('payment_id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=True),
    sa.Column('payer_account_id', sa.UUID(), nullable=False),
    sa.Column('type', sa.String(length=24), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('provider_ref', sa.String(length=100), nullable=True),
    sa.Column('event_id', sa.String(length=100), nullable=True),
    sa.Column('note', sa.String(length=300), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], name=op.f('fk_payment_transactions_payment_id_payments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_transactions'))
    )
    op.create_index('ix_payment_transactions_payment_id', 'payment_transactions', ['payment_id'])
    op.create_index('ix_payment_transactions_payer_account_id_at', 'payment_transactions', ['payer_account_id', 'at'])
    op.create_index('ix_payment_transactions_tenant_id_at', 'payment_transactions', ['tenant_id', 'at'])
    op.create_table('payment_refunds',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('payment_id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=True),
    sa.Column('payer_account_id', sa.UUID(), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('wallet_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('provider_ref', sa.String(length=100), nullable=True),
    sa.Column('reason', sa.String(length=300), nullable=False),
    sa.Column('created_by', sa.UUID(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('amount_minor >= 0 AND wallet_minor >= 0 AND amount_minor + wallet_minor > 0',
                       name=op.f('ck_payment_refunds_refunds_something')),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], name=op.f('fk_payment_refunds_payment_id_payments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_refunds'))
    )
    op.create_index(op.f('ix_payment_refunds_payment_id'), 'payment_refunds', ['payment_id'])
    op.create_table('payment_webhook_events',
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('event_id', sa.String(length=100), nullable=False),
    sa.Column('type', sa.String(length=60), nullable=False),
    sa.Column('payment_id', sa.UUID(), nullable=True),
    sa.Column('outcome', sa.String(length=200), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('provider', 'event_id', name=op.f('pk_payment_webhook_events'))
    )
    op.create_table('payment_payouts',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('amount_minor > 0', name=op.f('ck_payment_payouts_pays_something')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_payouts'))
    )
    op.create_index('ix_payment_payouts_tenant_id_created_at', 'payment_payouts', ['tenant_id', 'created_at'])
    op.create_table('sandbox_gateway_charges',
    sa.Column('ref', sa.String(length=100), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('refunded_minor', sa.BigInteger(), nullable=False),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('ref', name=op.f('pk_sandbox_gateway_charges'))
    )
    op.create_table('payment_reconciliations',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.Column('checked', sa.Integer(), nullable=False),
    sa.Column('mismatches', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('ran_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_reconciliations'))
    )
    op.create_table('pharmacy_delivery_otps',
    sa.Column('order_id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('patient_account_id', sa.UUID(), nullable=False),
    sa.Column('code_hash', sa.LargeBinary(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('sends', sa.Integer(), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['order_id'], ['pharmacy_orders.id'],
                            name=op.f('fk_pharmacy_delivery_otps_order_id_pharmacy_orders')),
    sa.PrimaryKeyConstraint('order_id', name=op.f('pk_pharmacy_delivery_otps'))
    )

    grant('ledger_accounts', 'SELECT')
    grant('ledger_entries', 'SELECT')
    for table in ('ledger_accounts', 'ledger_entries'):
        _owner_reads(table)
    grant('payments', 'SELECT, INSERT, UPDATE')
    grant('payment_transactions', 'SELECT, INSERT')
    grant('payment_refunds', 'SELECT, INSERT, UPDATE')
    for table in ('payments', 'payment_transactions', 'payment_refunds'):
        _payer_or_merchant(table)
    # Platform tables: provider ids and amounts, no PHI; a webhook arrives with no tenant at all.
    grant('payment_webhook_events', 'SELECT, INSERT, UPDATE')
    grant('sandbox_gateway_charges', 'SELECT, INSERT, UPDATE')
    grant('payment_payouts', 'SELECT, INSERT')
    grant('payment_reconciliations', 'SELECT')  # written by the job as the owner
    op.execute("ALTER TABLE payment_payouts ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON payment_payouts USING (tenant_id = {CURRENT_TENANT}) "
               f"WITH CHECK (tenant_id = {CURRENT_TENANT})")
    grant('pharmacy_delivery_otps', 'SELECT, INSERT, UPDATE')
    op.execute("ALTER TABLE pharmacy_delivery_otps ENABLE ROW LEVEL SECURITY")
    cond = f"tenant_id = {CURRENT_TENANT} OR patient_account_id = {CURRENT_ACCOUNT}"
    op.execute(f"CREATE POLICY pharmacy_or_patient ON pharmacy_delivery_otps USING ({cond}) WITH CHECK ({cond})")

    # The one way money moves. A journal is a set of lines that sum to zero in one currency; the
    # accounts are locked in id order (two journals never deadlock), and an account that must not
    # go below zero (a wallet, an escrow, a payable) refuses the whole journal if it would. Money
    # is taken only from the caller's own accounts (their wallet, their organization's escrow and
    # payable) or the platform's; it may be added to anyone's.
    op.execute(f"""
        CREATE FUNCTION ledger_post(p_journal uuid, p_kind text, p_reference text, p_memo text, p_lines jsonb)
        RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
        DECLARE
            line record;
            acct record;
            total numeric;
            cur text;
            after bigint;
        BEGIN
            SELECT coalesce(sum((l->>'amount')::bigint), 0) INTO total FROM jsonb_array_elements(p_lines) l;
            IF total <> 0 OR jsonb_array_length(p_lines) < 2 THEN
                RAISE EXCEPTION 'journal % does not balance (lines sum to %)', p_journal, total
                    USING ERRCODE = '22023';
            END IF;
            FOR line IN SELECT (l->>'account')::uuid AS account, sum((l->>'amount')::bigint)::bigint AS amount
                        FROM jsonb_array_elements(p_lines) l GROUP BY 1 ORDER BY 1 LOOP
                SELECT * INTO acct FROM ledger_accounts a WHERE a.id = line.account FOR UPDATE;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'no ledger account %', line.account USING ERRCODE = '22023';
                END IF;
                IF cur IS NULL THEN
                    cur := acct.currency;
                ELSIF cur <> acct.currency THEN
                    RAISE EXCEPTION 'journal % mixes % and %', p_journal, cur, acct.currency USING ERRCODE = '22023';
                END IF;
                CONTINUE WHEN line.amount = 0;
                IF line.amount < 0 AND NOT ((acct.owner_account_id IS NULL AND acct.owner_tenant_id IS NULL)
                        OR coalesce(acct.owner_account_id = {CURRENT_ACCOUNT}, false)
                        OR coalesce(acct.owner_tenant_id = {CURRENT_TENANT}, false)) THEN
                    RAISE EXCEPTION 'money can only be taken from your own accounts (% %)', acct.kind, acct.id
                        USING ERRCODE = '42501';
                END IF;
                after := acct.balance_minor + line.amount;
                IF after < 0 AND acct.kind IN ('patient_wallet', 'escrow', 'merchant_payable') THEN
                    RAISE EXCEPTION 'insufficient funds' USING ERRCODE = 'P0001',
                        DETAIL = acct.kind || ':' || acct.balance_minor || ':' || (-line.amount) || ':' || acct.currency;
                END IF;
                UPDATE ledger_accounts SET balance_minor = after WHERE id = acct.id;
                INSERT INTO ledger_entries (journal_id, journal_kind, reference, ledger_account_id, owner_account_id,
                                            owner_tenant_id, amount_minor, balance_after, currency, memo)
                VALUES (p_journal, p_kind, p_reference, acct.id, acct.owner_account_id, acct.owner_tenant_id,
                        line.amount, after, acct.currency, p_memo);
            END LOOP;
        END $$""")
    # An account is found, or opened at zero, by its owner and kind (anyone may name another's
    # account to pay into it; only ledger_post moves money).
    op.execute(f"""
        CREATE FUNCTION ledger_account(p_kind text, p_account uuid, p_tenant uuid, p_currency text)
        RETURNS uuid LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
        DECLARE
            found uuid;
        BEGIN
            SELECT id INTO found FROM ledger_accounts WHERE kind = p_kind
                AND coalesce(owner_account_id, {ZERO}) = coalesce(p_account, {ZERO})
                AND coalesce(owner_tenant_id, {ZERO}) = coalesce(p_tenant, {ZERO}) AND currency = p_currency;
            IF found IS NULL THEN
                INSERT INTO ledger_accounts (id, kind, owner_account_id, owner_tenant_id, currency, balance_minor)
                VALUES (gen_random_uuid(), p_kind, p_account, p_tenant, p_currency, 0)
                ON CONFLICT DO NOTHING RETURNING id INTO found;
                IF found IS NULL THEN  -- opened by a concurrent caller just now
                    SELECT id INTO found FROM ledger_accounts WHERE kind = p_kind
                        AND coalesce(owner_account_id, {ZERO}) = coalesce(p_account, {ZERO})
                        AND coalesce(owner_tenant_id, {ZERO}) = coalesce(p_tenant, {ZERO}) AND currency = p_currency;
                END IF;
            END IF;
            RETURN found;
        END $$""")
    # What an order (or any reference) holds in an escrow account: the refund and the release
    # need it whoever asks (the patient's own cancel, the courier's OTP), and it is one number.
    op.execute("""
        CREATE FUNCTION ledger_held(p_account uuid, p_reference text) RETURNS bigint
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
            SELECT coalesce(sum(amount_minor), 0)::bigint FROM ledger_entries
            WHERE ledger_account_id = p_account AND reference = p_reference
        $$""")
    # A webhook names the provider's id and nothing else: this finds that one payment.
    op.execute("""
        CREATE FUNCTION payment_for_provider(p_provider text, p_ref text)
        RETURNS TABLE (id uuid, tenant_id uuid, account_id uuid, payer_tenant_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
            SELECT p.id, p.tenant_id, p.payer_account_id, p.payer_tenant_id FROM payments p
            WHERE p.provider = p_provider AND p.provider_ref = p_ref
        $$""")
    op.execute("""
        CREATE FUNCTION payment_for_refund(p_provider text, p_refund_ref text)
        RETURNS TABLE (id uuid, tenant_id uuid, account_id uuid, payer_tenant_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
            SELECT p.id, p.tenant_id, p.payer_account_id, p.payer_tenant_id
            FROM payment_refunds r JOIN payments p ON p.id = r.payment_id
            WHERE p.provider = p_provider AND r.provider_ref = p_refund_ref
        $$""")
    op.create_index('ix_payment_refunds_provider_ref', 'payment_refunds', ['provider_ref'])
    for fn in FUNCTIONS:
        op.execute(f"REVOKE ALL ON FUNCTION {fn} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {fn} TO {app_role()}")


def downgrade() -> None:
    for fn in FUNCTIONS:
        op.execute(f"DROP FUNCTION {fn}")
    for table in TABLES:
        op.drop_table(table)
