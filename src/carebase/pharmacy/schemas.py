"""Request and response bodies of the pharmacy marketplace API. Money is in minor units (paise,
cents) as integers, with an ISO 4217 currency."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from carebase.payments.schemas import PaymentOut
from carebase.platform.fields import Phone, Strict

Money = Field(ge=0, le=10**12, description="Minor units (paise, cents)")
Currency = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. INR")
Hours = dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
             list[tuple[str, str]]]


class PharmacyIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    licence_number: str = Field(min_length=1, max_length=64, description="Drug licence number")
    phone: Phone | None = None
    address: str = Field(min_length=1, max_length=500)
    city: str | None = Field(default=None, max_length=100)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    opening_hours: Hours = Field(default_factory=dict, description='{"mon": [["09:00", "21:00"]], ...}; '
                                                                     "a missing day is closed")
    delivery_radius_km: float = Field(default=5, ge=0, le=100)
    delivery_fee_minor: int = Money
    currency: str = Currency
    listed: bool = Field(default=True, description="Shown to patients and taking orders (with a live subscription)")


class PharmacyOut(BaseModel):
    id: uuid.UUID
    name: str
    licence_number: str
    phone: str | None
    address: str
    city: str | None
    lat: float
    lon: float
    opening_hours: dict[str, list[list[str]]]
    delivery_radius_km: float
    delivery_fee_minor: int
    currency: str
    listed: bool
    subscription_status: str
    subscription_ends_at: datetime | None
    taking_orders: bool
    distance_km: float | None = None
    version: int


class MedicineIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    generic_name: str | None = Field(default=None, max_length=200)
    category: str = Field(min_length=1, max_length=100, description="e.g. Antibiotic, Painkiller")
    manufacturer: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    dosage_form: str | None = Field(default=None, max_length=50, description="Tablet, Syrup, Injection...")
    strength: str | None = Field(default=None, max_length=50, description="e.g. 500 mg")
    pack_size: int | None = Field(default=None, gt=0, le=10000, description="Units per pack")
    mrp_minor: int = Money
    price_minor: int = Money
    currency: str = Currency
    low_stock_threshold: int = Field(default=10, ge=0, le=100000)
    requires_prescription: bool = True
    controlled_schedule: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,16}$",
                                            description="Controlled-substance schedule (H1, X, II...), if any")
    image_url: str | None = Field(default=None, max_length=500, pattern=r"^(https?://|/)")
    is_available: bool = True


class NewMedicineIn(MedicineIn):
    stock: int = Field(default=0, ge=0, le=10**7, description="Opening stock in packs (a 'received' stock event)")


class MedicineOut(BaseModel):
    id: uuid.UUID
    pharmacy_id: uuid.UUID
    pharmacy_name: str | None = None
    name: str
    generic_name: str | None
    category: str
    manufacturer: str | None
    description: str | None
    dosage_form: str | None
    strength: str | None
    pack_size: int | None
    mrp_minor: int
    price_minor: int
    discount_minor: int
    currency: str
    stock: int
    reserved: int
    available: int
    low_stock_threshold: int
    requires_prescription: bool
    controlled_schedule: str | None
    image_url: str | None
    is_available: bool
    distance_km: float | None = None
    version: int


class MedicinePage(BaseModel):
    items: list[MedicineOut]
    corrected_query: str | None = Field(default=None, description="The query as searched, when a typo was corrected")


class StockIn(Strict):
    reason: Literal["received", "sold", "returned", "expired", "adjusted"]
    change: int | None = Field(default=None, ge=-10**7, le=10**7, description="Packs added (+) or taken (-)")
    set_to: int | None = Field(default=None, ge=0, le=10**7, description="A counted quantity (reason: adjusted)")
    note: str | None = Field(default=None, max_length=500)


class StockEventOut(BaseModel):
    id: int
    change: int
    reason: str
    stock_after: int
    order_id: uuid.UUID | None
    note: str | None
    actor_id: uuid.UUID | None
    at: datetime


class CartItemIn(Strict):
    medicine_id: uuid.UUID
    quantity: int = Field(default=1, ge=1, le=1000, description="Packs")


class CartQuantityIn(Strict):
    quantity: int = Field(ge=1, le=1000)


class FromPrescriptionIn(Strict):
    prescription_id: uuid.UUID
    pharmacy_id: uuid.UUID


class CartLineOut(BaseModel):
    medicine: MedicineOut
    quantity: int
    total_minor: int
    prescription_id: uuid.UUID | None
    problem: str | None = Field(description="Why it cannot be bought as it is, if so")


class CartOut(BaseModel):
    lines: list[CartLineOut]
    not_found: list[str] = Field(default_factory=list, description="Prescribed medicines this pharmacy does not sell")


class CheckoutIn(Strict):
    pharmacy_id: uuid.UUID
    fulfilment: Literal["delivery", "pickup"]
    contact_name: str = Field(min_length=1, max_length=200)
    contact_phone: Phone | None = None
    delivery_address: str | None = Field(default=None, max_length=500)
    delivery_lat: float | None = Field(default=None, ge=-90, le=90)
    delivery_lon: float | None = Field(default=None, ge=-180, le=180)
    prescription_id: uuid.UUID | None = Field(default=None, description="Needed for prescription-only medicines")
    payment_method: Literal["cod", "online"] = "cod"
    notes: str | None = Field(default=None, max_length=500)


class StatusIn(Strict):
    status: Literal["confirmed", "packed", "shipped", "out_for_delivery", "delivered", "completed", "rejected"]
    note: str | None = Field(default=None, max_length=500)


class ReasonIn(Strict):
    reason: str = Field(min_length=1, max_length=500)


class DeliveryCodeIn(Strict):
    code: str = Field(pattern=r"^\s*\d{6}\s*$", description="The 6 digits the patient reads out at the door")


class CancelIn(Strict):
    reason: str | None = Field(default=None, max_length=500)


class OrderItemOut(BaseModel):
    medicine_id: uuid.UUID
    name: str
    strength: str | None
    quantity: int
    unit_price_minor: int
    mrp_minor: int
    total_minor: int


class OrderEventOut(BaseModel):
    status: str
    note: str | None
    actor: str
    at: datetime


class OrderOut(BaseModel):
    id: uuid.UUID
    number: str
    pharmacy_id: uuid.UUID
    pharmacy_name: str
    contact_name: str
    contact_phone: str | None
    status: str
    status_text: str
    next_statuses: list[str]
    fulfilment: str
    delivery_address: str | None
    prescription_id: uuid.UUID | None
    subtotal_minor: int
    discount_minor: int
    delivery_fee_minor: int
    total_minor: int
    currency: str
    payment_method: str
    payment_status: str
    expires_at: datetime | None
    notes: str | None
    reason: str | None
    courier: str | None
    tracking_url: str | None
    placed_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    receipt_number: str | None = Field(description="Issued at completion; the PDF is at …/receipt.pdf")
    version: int
    items: list[OrderItemOut]
    events: list[OrderEventOut]


class RowErrorOut(BaseModel):
    line: int = Field(description="Line of the file (the header is line 1)")
    column: str
    message: str


class ImportOut(BaseModel):
    id: uuid.UUID
    filename: str | None
    total_rows: int
    valid_rows: int
    creates: int = Field(description="New products (after a commit: created)")
    updates: int = Field(description="Products already in the catalogue (after a commit: updated)")
    errors: list[RowErrorOut]
    ignored_columns: list[str]
    committed_at: datetime | None
    result: dict[str, int] | None = Field(description="After a commit: created, updated, unchanged, skipped")


# -- subscriptions -------------------------------------------------------------------------------


class PlanIn(Strict):
    plan: Literal["basic", "pro"]


class PlanOut(BaseModel):
    code: str
    name: str
    period_days: int
    features: list[str]
    price_minor: int | None = Field(description="Net, per period, in the pharmacy's currency")
    tax: str
    tax_rate_bps: int


class SubscriptionOut(BaseModel):
    status: Literal["trial", "active", "past_due", "expired", "cancelled"]
    status_text: str
    plan: str | None
    ends_at: datetime | None = Field(description="The paid period (or the trial) ends then")
    grace_until: datetime | None = Field(description="past_due: pay by then or the pharmacy is suspended")
    auto_renew: bool
    credit_minor: int = Field(description="Left by a downgrade: taken off the next renewal")
    currency: str
    live: bool = Field(description="Listed and taking orders")
    plans: list[PlanOut]


class InvoiceOut(BaseModel):
    id: uuid.UUID
    number: str
    kind: str
    plan: str
    period_start: datetime
    period_end: datetime
    description: str
    net_minor: int
    tax_name: str
    tax_rate_bps: int
    tax_minor: int
    total_minor: int
    currency: str
    status: str
    paid_via: str | None
    paid_at: datetime | None
    created_at: datetime


class SubscriptionEventOut(BaseModel):
    kind: str
    note: str
    at: datetime


class SubscriptionHistoryOut(BaseModel):
    invoices: list[InvoiceOut]
    events: list[SubscriptionEventOut]


class CheckoutOut(BaseModel):
    invoice: InvoiceOut
    payment: PaymentOut = Field(description="Send the payer to its checkout_url")


class PlanChangeOut(BaseModel):
    invoice: InvoiceOut | None = Field(description="An upgrade's prorated difference, to pay")
    credit_minor: int = Field(description="A downgrade's prorated difference, kept for the next renewal")
