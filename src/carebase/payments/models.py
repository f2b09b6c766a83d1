"""Money: the double-entry ledger, payments through a gateway, their transactions, refunds,
webhook receipts and payouts.

Who sees what (row-level security, migration 0019):
* A ledger account belongs to a person (a patient's wallet: ``owner_account_id``), to an
  organization (a pharmacy's escrow and payable: ``owner_tenant_id``) or to the platform (the
  gateway clearing account and the provider fees: neither). Owners read their accounts and their
  lines; nobody writes them directly: every movement goes through ``ledger_post`` (a SECURITY
  DEFINER function), which takes a whole balanced journal or nothing.
* Payments, their transactions and refunds belong to the payer (``payer_account_id``) and to the
  merchant organization (``tenant_id``; NULL when the platform itself is paid, as for a wallet
  top-up). Like a pharmacy order, a payer writes them into the merchant's organization: a patient
  of one clinic pays a pharmacy of another.
* Webhook receipts are the platform's: they hold provider ids and event types, no PHI.
"""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from carebase.platform.db import metadata

# patient_wallet | escrow | merchant_payable (never below zero) | platform_clearing | provider_fees
# | platform_revenue (what pharmacies pay the platform: subscriptions)
ACCOUNT_KINDS = ("patient_wallet", "escrow", "merchant_payable", "platform_clearing", "provider_fees",
                 "platform_revenue")
NON_NEGATIVE = ("patient_wallet", "escrow", "merchant_payable")

ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("kind", String(24), nullable=False),
    Column("owner_account_id", UUID(as_uuid=True), nullable=True),
    Column("owner_tenant_id", UUID(as_uuid=True), nullable=True),
    Column("currency", String(3), nullable=False),
    # The sum of the account's lines, kept with each posting (the lines are the truth; the
    # consistency test and `ledger_check` compare the two).
    Column("balance_minor", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN ('patient_wallet', 'escrow', 'merchant_payable', 'platform_clearing', 'provider_fees', "
                    "'platform_revenue')", name="known_kind"),
    CheckConstraint("kind NOT IN ('patient_wallet', 'escrow', 'merchant_payable') OR balance_minor >= 0",
                    name="never_negative"),
    # What RLS and the merchant's balance look up by: one person's wallets, one organization's accounts.
    Index("ix_ledger_accounts_owner_account_id", "owner_account_id"),
    Index("ix_ledger_accounts_owner_tenant_id", "owner_tenant_id"),
)
Index("uq_ledger_accounts_owner", ledger_accounts.c.kind,
      func.coalesce(ledger_accounts.c.owner_account_id, "00000000-0000-0000-0000-000000000000"),
      func.coalesce(ledger_accounts.c.owner_tenant_id, "00000000-0000-0000-0000-000000000000"),
      ledger_accounts.c.currency, unique=True)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("journal_id", UUID(as_uuid=True), nullable=False),
    # topup | order_payment | wallet_payment | refund | escrow_release | payout | subscription_payment
    Column("journal_kind", String(24), nullable=False),
    Column("reference", String(100), nullable=True),  # what the money moved for: an order, a payment, a payout
    Column("ledger_account_id", UUID(as_uuid=True), ForeignKey("ledger_accounts.id"), nullable=False),
    Column("owner_account_id", UUID(as_uuid=True), nullable=True),  # copied from the account, for RLS
    Column("owner_tenant_id", UUID(as_uuid=True), nullable=True),
    Column("amount_minor", BigInteger, nullable=False),  # + adds to the account's balance, - takes from it
    Column("balance_after", BigInteger, nullable=False),  # the seed's balance_after
    Column("currency", String(3), nullable=False),
    Column("memo", String(200), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount_minor <> 0", name="moves_money"),
    Index("ix_ledger_entries_ledger_account_id_id", "ledger_account_id", "id"),
    Index("ix_ledger_entries_journal_id", "journal_id"),
    Index("ix_ledger_entries_reference", "reference"),
)

payments = Table(
    "payments",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=True),  # the merchant; NULL: the platform (wallet top-up)
    Column("payer_account_id", UUID(as_uuid=True), nullable=False),
    Column("payer_tenant_id", UUID(as_uuid=True), nullable=False),  # where the payer reads their notices
    Column("purpose", String(24), nullable=False),  # order | wallet_topup | subscription
    Column("reference_id", UUID(as_uuid=True), nullable=False),  # the order, the wallet account, the subscription
    Column("description", String(200), nullable=False),
    Column("owed_minor", BigInteger, nullable=False),  # what the thing costs in all (paid when its escrow holds it)
    Column("amount_minor", BigInteger, nullable=False),  # what the gateway is asked for
    Column("wallet_minor", BigInteger, nullable=False),  # paid from the wallet beside it (split payment)
    Column("currency", String(3), nullable=False),
    Column("provider", String(16), nullable=False),  # sandbox | stripe | razorpay | wallet
    Column("provider_ref", String(100), nullable=True),  # the PaymentIntent / Razorpay order id
    Column("provider_payment_ref", String(100), nullable=True),  # the charge / Razorpay payment id
    # created | processing | succeeded | failed | cancelled
    Column("status", String(12), nullable=False),
    Column("captured_minor", BigInteger, nullable=False),
    Column("refunded_minor", BigInteger, nullable=False),
    Column("fee_minor", BigInteger, nullable=False),  # what the provider kept
    Column("failure_reason", String(300), nullable=True),
    Column("checkout_url", String(500), nullable=True),
    Column("client_secret", String(300), nullable=True),  # Stripe's, for the payer's browser (Stripe.js)
    Column("return_url", String(500), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("version", Integer, nullable=False),
    CheckConstraint("amount_minor >= 0 AND wallet_minor >= 0", name="amounts_not_negative"),
    CheckConstraint("refunded_minor >= 0 AND refunded_minor <= captured_minor", name="refund_within_capture"),
    Index("uq_payments_provider_provider_ref", "provider", "provider_ref", unique=True),
    Index("ix_payments_payer_account_id_created_at", "payer_account_id", "created_at"),
    Index("ix_payments_purpose_reference_id", "purpose", "reference_id"),
    Index("ix_payments_tenant_id_created_at", "tenant_id", "created_at"),
)

# The seed's Transaction: one row per thing that happened to a payment, with the provider's ids.
payment_transactions = Table(
    "payment_transactions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("payment_id", UUID(as_uuid=True), ForeignKey("payments.id"), nullable=False),
    Column("tenant_id", UUID(as_uuid=True), nullable=True),
    Column("payer_account_id", UUID(as_uuid=True), nullable=False),
    # ORDER_PAYMENT | WALLET_TOPUP | SUBSCRIPTION_PAYMENT | WALLET_PAYMENT | REFUND (the seed's types, lower case)
    Column("type", String(24), nullable=False),
    Column("status", String(12), nullable=False),  # pending | success | failed | refunded
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("provider", String(16), nullable=False),
    Column("provider_ref", String(100), nullable=True),
    Column("event_id", String(100), nullable=True),  # the webhook event that said so
    Column("note", String(300), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_payment_transactions_payment_id", "payment_id"),
    Index("ix_payment_transactions_payer_account_id_at", "payer_account_id", "at"),
    Index("ix_payment_transactions_tenant_id_at", "tenant_id", "at"),
)

refunds = Table(
    "payment_refunds",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("payment_id", UUID(as_uuid=True), ForeignKey("payments.id"), nullable=False, index=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=True),
    Column("payer_account_id", UUID(as_uuid=True), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),  # of the gateway part
    Column("wallet_minor", BigInteger, nullable=False),  # of the wallet part (back to the wallet at once)
    Column("currency", String(3), nullable=False),
    Column("status", String(12), nullable=False),  # pending | succeeded | failed
    Column("provider_ref", String(100), nullable=True),
    Column("reason", String(300), nullable=False),
    Column("created_by", UUID(as_uuid=True), nullable=True),  # None: the system (a cancelled order)
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("amount_minor >= 0 AND wallet_minor >= 0 AND amount_minor + wallet_minor > 0",
                    name="refunds_something"),
    Index("ix_payment_refunds_provider_ref", "provider_ref"),
)

webhook_events = Table(
    "payment_webhook_events",
    metadata,
    Column("provider", String(16), primary_key=True),
    Column("event_id", String(100), primary_key=True),  # the provider's: a replay finds it here
    Column("type", String(60), nullable=False),
    Column("payment_id", UUID(as_uuid=True), nullable=True),
    Column("outcome", String(200), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

payouts = Table(
    "payment_payouts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(12), nullable=False),  # paid (the local bank) | pending (a real transfer)
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount_minor > 0", name="pays_something"),
    Index("ix_payment_payouts_tenant_id_created_at", "tenant_id", "created_at"),
)

# The built-in sandbox gateway's own books: what "the provider" knows (reconciliation compares
# them with ours, as it would Stripe's list of PaymentIntents).
sandbox_charges = Table(
    "sandbox_gateway_charges",
    metadata,
    Column("ref", String(100), primary_key=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(20), nullable=False),  # requires_payment | succeeded | failed
    Column("refunded_minor", BigInteger, nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# What each reconciliation run found (the platform's: superadmins read it).
reconciliations = Table(
    "payment_reconciliations",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("provider", String(16), nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
    Column("checked", Integer, nullable=False),  # the provider's payments compared
    Column("mismatches", JSONB, nullable=False),  # [{"provider_ref", "ours", "theirs"}]
    Column("ran_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
