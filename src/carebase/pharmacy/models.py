"""The pharmacy marketplace: pharmacies, their medicines and stock, carts, orders.

Who sees what (row-level security, migration 0017):
* ``pharmacies`` and ``pharmacy_medicines`` are the marketplace's shop windows: every signed-in
  session reads them; only the pharmacy's own tenant writes them.
* ``pharmacy_orders`` (and their items and events) belong to the pharmacy's tenant and to the
  patient's account: the pharmacy sees its orders, a patient sees their own at every pharmacy.
* ``cart_items`` belong to an account alone.
* Stock held for a patient's order is changed only through two SECURITY DEFINER functions
  (``pharmacy_reserve``, ``pharmacy_release``) that act on that one order's lines.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,

    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID

from carebase.platform.db import metadata

pharmacies = Table(
    "pharmacies",
    metadata,
    # One per tenant. No foreign key to tenants: that is a projection, truncated and rebuilt from
    # the event log (``carebase rebuild-projections``).
    Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("licence_number", String(64), nullable=False),
    Column("phone", String(32), nullable=True),
    Column("address", String(500), nullable=False),
    Column("city", String(100), nullable=True),
    Column("lat", Float, nullable=False),
    Column("lon", Float, nullable=False),
    # {"mon": [["09:00", "21:00"]], ...}: local times in the tenant's time zone; a missing day is closed
    Column("opening_hours", JSONB, nullable=False),
    Column("delivery_radius_km", Numeric(5, 1), nullable=False),
    Column("delivery_fee_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("listed", Boolean, nullable=False),  # the pharmacy's own switch; the subscription decides too
    # trial | active | past_due | expired | cancelled (pharmacy/subscriptions.py): trial, active and
    # cancelled until subscription_ends_at, and past_due until its grace ends, are listed and take orders.
    Column("subscription_status", String(16), nullable=False),
    Column("subscription_ends_at", DateTime(timezone=True), nullable=True),
    # pharmacy/subscriptions.py: the plan paid for, whether it renews, the grace period of an
    # unpaid renewal, and credit left by a downgrade (taken off the next renewal).
    Column("subscription_plan", String(16), nullable=True),
    Column("subscription_auto_renew", Boolean, nullable=False, server_default="true"),
    Column("subscription_grace_until", DateTime(timezone=True), nullable=True),
    Column("subscription_credit_minor", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("version", Integer, nullable=False),
    Index("ix_pharmacies_lat_lon", "lat", "lon"),
)

pharmacy_medicines = Table(
    "pharmacy_medicines",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("pharmacies.tenant_id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("generic_name", String(200), nullable=True),
    Column("generic_key", String(200), nullable=True),  # the knowledge base's generic: prescriptions and alternatives
    Column("category", String(100), nullable=False),
    Column("manufacturer", String(200), nullable=True),
    Column("description", Text, nullable=True),
    Column("dosage_form", String(50), nullable=True),
    Column("strength", String(50), nullable=True),
    Column("pack_size", Integer, nullable=True),  # units per pack; prices and stock are per pack
    Column("mrp_minor", BigInteger, nullable=False),  # maximum retail price, minor units
    Column("price_minor", BigInteger, nullable=False),  # selling price, minor units
    Column("currency", String(3), nullable=False),
    Column("stock", Integer, nullable=False),  # packs on the shelf
    Column("reserved", Integer, nullable=False),  # of those, held by open orders
    Column("low_stock_threshold", Integer, nullable=False),
    Column("requires_prescription", Boolean, nullable=False),
    Column("controlled_schedule", String(16), nullable=True),  # e.g. H1, X, II..V; None: not controlled
    Column("image_url", String(500), nullable=True),
    Column("is_available", Boolean, nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),  # orders keep pointing at it
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("version", Integer, nullable=False),
    Column("search", TSVECTOR, Computed(
        "setweight(to_tsvector('simple', name), 'A') || "
        "setweight(to_tsvector('simple', coalesce(generic_name, '')), 'B')", persisted=True), nullable=False),
    CheckConstraint("reserved >= 0 AND reserved <= stock", name="stock_covers_reserved"),
    CheckConstraint("price_minor >= 0 AND price_minor <= mrp_minor", name="price_within_mrp"),
    Index("ix_pharmacy_medicines_search", "search", postgresql_using="gin"),
    Index("ix_pharmacy_medicines_tenant_id_name", "tenant_id", "name"),
    Index("ix_pharmacy_medicines_generic_key", "generic_key", "strength"),
)

# One product once per catalogue (what a CSV re-import finds again): name, strength, form and maker.
IDENTITY = (func.lower(pharmacy_medicines.c.name), func.lower(func.coalesce(pharmacy_medicines.c.strength, "")),
            func.lower(func.coalesce(pharmacy_medicines.c.dosage_form, "")),
            func.lower(func.coalesce(pharmacy_medicines.c.manufacturer, "")))
Index("uq_pharmacy_medicines_identity", pharmacy_medicines.c.tenant_id, *IDENTITY, unique=True,
      postgresql_where=pharmacy_medicines.c.deleted_at.is_(None))

# Every word of every medicine name: the vocabulary that typo-tolerant search corrects against (far
# smaller than the catalogue, since 500 pharmacies sell mostly the same products).
medicine_words = Table(
    "medicine_words",
    metadata,
    Column("word", String(100), primary_key=True),
    Column("trigrams", ARRAY(Text), nullable=False),
    Index("ix_medicine_words_trigrams", "trigrams", postgresql_using="gin"),
)

stock_events = Table(
    "pharmacy_stock_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("medicine_id", UUID(as_uuid=True), ForeignKey("pharmacy_medicines.id"), nullable=False),
    Column("change", Integer, nullable=False),
    Column("reason", String(16), nullable=False),  # received | sold | returned | expired | adjusted
    Column("stock_after", Integer, nullable=False),
    Column("order_id", UUID(as_uuid=True), nullable=True),
    Column("note", String(500), nullable=True),
    Column("actor_id", UUID(as_uuid=True), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_pharmacy_stock_events_medicine_id_at", "medicine_id", "at"),
)

cart_items = Table(
    "cart_items",
    metadata,
    Column("account_id", UUID(as_uuid=True), primary_key=True),
    Column("medicine_id", UUID(as_uuid=True), ForeignKey("pharmacy_medicines.id"), primary_key=True),
    Column("pharmacy_id", UUID(as_uuid=True), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("prescription_id", UUID(as_uuid=True), nullable=True),  # filled from this prescription
    Column("added_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("quantity > 0", name="quantity_positive"),
)

orders = Table(
    "pharmacy_orders",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("pharmacies.tenant_id"), nullable=False),
    Column("number", String(32), nullable=False, unique=True),
    Column("patient_account_id", UUID(as_uuid=True), nullable=False),
    # The organization the patient ordered from (their clinic): where their in-app notices live.
    Column("patient_tenant_id", UUID(as_uuid=True), nullable=False),
    Column("contact_name", String(200), nullable=False),
    Column("contact_phone", String(32), nullable=True),
    # placed | confirmed | packed | shipped | out_for_delivery | delivered | completed
    # | rejected | cancelled | expired (service.TRANSITIONS)
    Column("status", String(20), nullable=False),
    Column("fulfilment", String(10), nullable=False),  # delivery | pickup
    Column("delivery_address", String(500), nullable=True),
    Column("prescription_id", UUID(as_uuid=True), nullable=True),
    Column("subtotal_minor", BigInteger, nullable=False),
    Column("discount_minor", BigInteger, nullable=False),  # MRP minus selling price, for the receipt
    Column("delivery_fee_minor", BigInteger, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_method", String(10), nullable=False),  # cod (cash on delivery or pickup) | online
    Column("payment_status", String(10), nullable=False),  # pending | paid | refunded
    Column("stock_held", Boolean, nullable=False),  # its lines' units are reserved
    Column("expires_at", DateTime(timezone=True), nullable=True),  # an unpaid online order lets go then
    Column("notes", String(500), nullable=True),
    Column("reason", String(500), nullable=True),  # why rejected or cancelled
    Column("courier", String(32), nullable=True),
    Column("courier_ref", String(100), nullable=True),
    Column("tracking_url", String(500), nullable=True),
    Column("placed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    # The sale's receipt, issued at completion: numbered per pharmacy without gaps (RCT-<year>-<n>).
    Column("receipt_number", String(32), nullable=True),
    Column("version", Integer, nullable=False),
    Index("ix_pharmacy_orders_tenant_id_status_placed_at", "tenant_id", "status", "placed_at"),
    Index("uq_pharmacy_orders_tenant_id_receipt_number", "tenant_id", "receipt_number", unique=True),
    Index("ix_pharmacy_orders_patient_account_id_placed_at", "patient_account_id", "placed_at"),
    Index("ix_pharmacy_orders_prescription_id", "prescription_id"),
    Index("ix_pharmacy_orders_courier_courier_ref", "courier", "courier_ref"),
)

order_items = Table(
    "pharmacy_order_items",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("order_id", UUID(as_uuid=True), ForeignKey("pharmacy_orders.id"), nullable=False, index=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("patient_account_id", UUID(as_uuid=True), nullable=False),
    Column("medicine_id", UUID(as_uuid=True), ForeignKey("pharmacy_medicines.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("strength", String(50), nullable=True),
    Column("generic_key", String(200), nullable=True),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
    Column("mrp_minor", BigInteger, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    CheckConstraint("quantity > 0", name="quantity_positive"),
)

order_events = Table(
    "pharmacy_order_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("order_id", UUID(as_uuid=True), ForeignKey("pharmacy_orders.id"), nullable=False, index=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("patient_account_id", UUID(as_uuid=True), nullable=False),
    Column("status", String(20), nullable=False),
    Column("note", String(500), nullable=True),
    Column("actor", String(16), nullable=False),  # patient | pharmacy | courier | system
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

ORDER_NUMBERS = "pharmacy_order_numbers"  # a sequence: ORD-<year>-<n>

# A CSV import between its preview and its commit: the rows that passed, and what did not.
medicine_imports = Table(
    "pharmacy_medicine_imports",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("pharmacies.tenant_id"), nullable=False),
    Column("created_by", UUID(as_uuid=True), nullable=False),
    Column("filename", String(200), nullable=True),
    Column("sha256", String(64), nullable=False),
    Column("total_rows", Integer, nullable=False),
    Column("rows", JSONB, nullable=False),  # [{"line": n, "values": {...}}] of the valid rows
    Column("errors", JSONB, nullable=False),  # [{"line": n, "column": c, "message": m}]
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("committed_at", DateTime(timezone=True), nullable=True),
    Column("result", JSONB, nullable=True),  # {"created": n, "updated": n, "unchanged": n, "skipped": n}
)

# The code the patient gives the courier at the door (OTP on delivery): kept as an HMAC, never
# in clear; a few tries, an expiry, and a cool-down between resends.
delivery_otps = Table(
    "pharmacy_delivery_otps",
    metadata,
    Column("order_id", UUID(as_uuid=True), ForeignKey("pharmacy_orders.id"), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("patient_account_id", UUID(as_uuid=True), nullable=False),
    Column("code_hash", LargeBinary, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("sends", Integer, nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=False),
    Column("verified_at", DateTime(timezone=True), nullable=True),
)

# A pharmacy's subscription invoices: numbered per pharmacy without gaps (platform/numbering.py).
subscription_invoices = Table(
    "pharmacy_subscription_invoices",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("pharmacies.tenant_id"), nullable=False),
    Column("number", String(32), nullable=False),
    Column("kind", String(12), nullable=False),  # checkout | renewal | change
    Column("plan", String(16), nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("description", String(200), nullable=False),
    Column("net_minor", BigInteger, nullable=False),
    Column("tax_name", String(16), nullable=False),
    Column("tax_rate_bps", Integer, nullable=False),
    Column("tax_minor", BigInteger, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(8), nullable=False),  # open | paid | void
    Column("paid_via", String(8), nullable=True),  # gateway | payable
    Column("paid_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("total_minor = net_minor + tax_minor AND net_minor >= 0", name="adds_up"),
    Index("uq_pharmacy_subscription_invoices_tenant_id_number", "tenant_id", "number", unique=True),
    Index("ix_pharmacy_subscription_invoices_tenant_id_created_at", "tenant_id", "created_at"),
)

subscription_events = Table(
    "pharmacy_subscription_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # paid | renewal_failed | suspended | cancelled | plan_changed
    Column("note", String(300), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
