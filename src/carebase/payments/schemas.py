"""Request and response bodies of the payments and wallet API. Money is in minor units (paise,
cents) as integers, with an ISO 4217 currency."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from carebase.platform.fields import Strict

Currency = Field(default="INR", pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. INR")


class IntentIn(Strict):
    purpose: Literal["order"] = Field(default="order", description="What is paid for")
    reference_id: uuid.UUID = Field(description="The order's id")
    use_wallet: bool = Field(default=False, description="Pay as much as the wallet holds from it, the rest by card/UPI")
    wallet_minor: int | None = Field(default=None, ge=0, le=10**12,
                                     description="Exactly this much from the wallet (instead of use_wallet)")


class ConfirmIn(Strict):
    payment_id: uuid.UUID
    razorpay_payment_id: str | None = Field(default=None, max_length=100, description="From Razorpay Checkout")
    razorpay_signature: str | None = Field(default=None, max_length=200, description="From Razorpay Checkout")


class PaymentOut(BaseModel):
    id: uuid.UUID
    purpose: str
    reference_id: uuid.UUID
    description: str
    amount_minor: int = Field(description="Asked of the gateway (card, UPI, netbanking)")
    wallet_minor: int = Field(description="Paid from the wallet")
    total_minor: int
    currency: str
    provider: str
    provider_ref: str | None
    status: Literal["created", "processing", "succeeded", "failed", "cancelled"]
    captured_minor: int
    refunded_minor: int
    failure_reason: str | None
    checkout_url: str | None = Field(description="Send the payer here to pay (the provider's hosted page)")
    client_secret: str | None = Field(default=None, description="Stripe: what Stripe.js confirms the payment with")
    return_url: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, p) -> PaymentOut:
        """From the service's Payment (any domain's routes answer with it this way)."""
        return cls(total_minor=p.total_minor, **{k: getattr(p, k) for k in cls.model_fields if k != "total_minor"})


class RefundIn(Strict):
    payment_id: uuid.UUID
    amount_minor: int | None = Field(default=None, gt=0, le=10**12, description="Omit to refund all that is left")
    reason: str = Field(min_length=1, max_length=300)


class RefundOut(BaseModel):
    id: uuid.UUID
    payment_id: uuid.UUID
    amount_minor: int = Field(description="Back to the card/UPI")
    wallet_minor: int = Field(description="Back to the wallet")
    total_minor: int
    currency: str
    status: str
    provider_ref: str | None
    reason: str
    created_at: datetime


class TransactionOut(BaseModel):
    id: int
    payment_id: uuid.UUID
    type: str
    status: str
    amount_minor: int
    currency: str
    provider: str
    provider_ref: str | None
    note: str | None
    at: datetime


class TopUpIn(Strict):
    amount_minor: int = Field(gt=0, le=10**12)
    currency: str = Currency


class WalletLineOut(BaseModel):
    journal_kind: str
    reference: str | None
    amount_minor: int
    balance_after: int
    memo: str | None
    at: datetime


class WalletOut(BaseModel):
    currency: str
    balance_minor: int
    lines: list[WalletLineOut]


class PayoutOut(BaseModel):
    id: uuid.UUID
    amount_minor: int
    currency: str
    status: str
    created_at: datetime


class MerchantBalanceOut(BaseModel):
    currency: str
    escrow_minor: int = Field(description="Paid for orders not yet delivered")
    payable_minor: int = Field(description="Released to you, waiting for the next payout")
    paid_out_minor: int
    payouts: list[PayoutOut]


class MismatchOut(BaseModel):
    provider_ref: str
    ours: str
    theirs: str


class ReconciliationOut(BaseModel):
    id: uuid.UUID
    provider: str
    since: datetime
    checked: int = Field(description="The provider's payments compared")
    mismatches: list[MismatchOut]
    ran_at: datetime


class RevenueDayOut(BaseModel):
    day: str = Field(description="YYYY-MM-DD in the organization's time zone")
    currency: str
    payments: int
    gross_minor: int = Field(description="Captured for your sales (card, UPI, wallet)")
    refunds_minor: int
    fees_minor: int = Field(description="Kept by the payment provider (charged when an order's escrow is released)")
    net_minor: int
