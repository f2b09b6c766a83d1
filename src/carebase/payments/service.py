"""Payments: paying for things through a gateway and the wallet, webhooks, refunds, the wallet,
escrow and payouts. Every amount is integer minor units with its currency.

How money flows (each arrow one balanced journal in the ledger, ``ledger.py``):
* top-up: platform clearing → the patient's wallet, when the gateway says the payment succeeded;
* paying for an order: wallet → the pharmacy's escrow (at once), and/or clearing → escrow (when
  the gateway's webhook says the card or UPI payment succeeded); the order is paid when its escrow
  holds its total;
* delivery with the OTP: escrow → the pharmacy's payable, less the provider's fee (→ provider
  fees); a payout job later moves the payable out (→ clearing), in batches;
* refund: escrow (or, after release, the payable) → back where the money came from: the wallet
  part to the wallet, the gateway part to clearing (and the provider refunds the card).

What a payment is for is a *purpose* another domain registers (``register_purpose``): it says
what is owed (``payable``) and hears when it is paid (``paid``). The pharmacy registers "order";
the wallet top-up is this domain's own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.notifications import service as notifications
from carebase.payments import gateways, ledger
from carebase.payments.models import (
    payment_transactions,
    payments,
    payouts,
    reconciliations,
    refunds,
    webhook_events,
)
from carebase.platform import jobs, realtime
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.db import set_context
from carebase.platform.errors import Conflict, Forbidden, NotFound, ServiceUnavailable, ValidationFailed
from carebase.platform.ids import new_id
from carebase.platform.logging import get_logger
from carebase.platform.money import money
from carebase.settings import get_settings
from carebase.tenants import service as tenants

log = get_logger("carebase.payments")

OPEN = ("created", "processing")


@dataclass(frozen=True)
class Payable:
    """What a purpose says is owed for one of its things."""
    tenant_id: uuid.UUID | None  # the merchant (None: the platform)
    account_id: uuid.UUID  # who pays
    notify_tenant_id: uuid.UUID  # where the payer reads their notices
    total_minor: int
    currency: str
    description: str
    return_url: str


class Purpose(Protocol):
    # Where the money goes: "escrow" (the merchant's, until delivery), "wallet" (the payer's own:
    # a top-up) or "revenue" (the platform's: a pharmacy's subscription).
    credit: str

    async def payable(self, session: AsyncSession, principal: Principal, reference_id: uuid.UUID) -> Payable: ...

    async def paid(self, session: AsyncSession, reference_id: uuid.UUID) -> bool:
        """Hear that it is paid in full; False if the thing was closed meanwhile (it is refunded)."""
        ...

    async def refunded(self, session: AsyncSession, reference_id: uuid.UUID, fully: bool) -> None:
        """Hear that money went back (all of it, or part)."""
        ...


_purposes: dict[str, Purpose] = {}


def register_purpose(name: str, purpose: Purpose) -> None:
    _purposes[name] = purpose


def _purpose(name: str) -> Purpose:
    if name not in _purposes:
        raise ValidationFailed(f"Nothing called {name!r} can be paid for here (use one of "
                               f"{', '.join(sorted(_purposes))}).", code="bad-purpose")
    return _purposes[name]


@dataclass
class Payment:
    id: uuid.UUID
    purpose: str
    reference_id: uuid.UUID
    description: str
    amount_minor: int
    wallet_minor: int
    currency: str
    provider: str
    provider_ref: str | None
    status: str
    captured_minor: int
    refunded_minor: int
    fee_minor: int
    failure_reason: str | None
    checkout_url: str | None
    client_secret: str | None
    return_url: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def total_minor(self) -> int:
        return self.amount_minor + self.wallet_minor


_FIELDS = tuple(Payment.__dataclass_fields__)


def _payment(row) -> Payment:
    m = row._mapping
    return Payment(**{k: m[k] for k in _FIELDS})


async def _record(session: AsyncSession, p, type: str, status: str, amount: int, *, provider: str | None = None,
                  provider_ref: str | None = None, event_id: str | None = None, note: str | None = None) -> None:
    await session.execute(payment_transactions.insert().values(
        payment_id=p.id, tenant_id=p.tenant_id, payer_account_id=p.payer_account_id, type=type, status=status,
        amount_minor=amount, currency=p.currency, provider=provider or p.provider,
        provider_ref=provider_ref or p.provider_ref, event_id=event_id, note=note))


def _type_of(purpose: str) -> str:
    return {"order": "order_payment", "wallet_topup": "wallet_topup"}.get(purpose, f"{purpose}_payment")


async def _escrow(session: AsyncSession, tenant_id: uuid.UUID, currency: str) -> uuid.UUID:
    return await ledger.account(session, ledger.ESCROW, currency, owner_tenant=tenant_id)


async def _platform(session: AsyncSession, kind: str, currency: str) -> uuid.UUID:
    return await ledger.account(session, kind, currency)


async def _wallet(session: AsyncSession, account_id: uuid.UUID, currency: str) -> uuid.UUID:
    return await ledger.account(session, ledger.WALLET, currency, owner_account=account_id)


async def _lock(session: AsyncSession, key: str) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})


# -- paying ---------------------------------------------------------------------------------------


async def create_intent(session: AsyncSession, principal: Principal, *, purpose: str, reference_id: uuid.UUID,
                        use_wallet: bool = False, wallet_minor: int | None = None) -> Payment:
    """Start paying for something: as much as asked from the wallet at once, the rest through the
    gateway (its checkout page, then its webhook). A thing already paid is refused; an open gateway
    payment for the same amount is handed back rather than doubled."""
    handler = _purpose(purpose)
    payable = await handler.payable(session, principal, reference_id)
    if payable.account_id != principal.account_id:
        raise Forbidden("Only the person who owes it pays for it here.", code="not-your-payment")
    ref = str(reference_id)
    await _lock(session, f"pay:{purpose}:{ref}")
    due = payable.total_minor
    if handler.credit == "escrow":
        assert payable.tenant_id is not None
        due -= await ledger.held(session, await _escrow(session, payable.tenant_id, payable.currency), ref)
    if due <= 0:
        raise Conflict(f"{payable.description} is paid already.", code="already-paid")
    wallet_id = await _wallet(session, principal.account_id, payable.currency)
    if wallet_minor is None:
        take = min(due, await ledger.balance(session, wallet_id)) if use_wallet else 0
    else:
        if wallet_minor < 0 or wallet_minor > due:
            raise ValidationFailed(f"wallet_minor is between 0 and what is due ({due}).", code="bad-wallet-amount")
        take = wallet_minor
    if handler.credit != "escrow":
        take = 0  # the wallet pays for medicines; it does not top itself up or pay the platform
    card = due - take
    open_ = (await session.execute(select(payments).where(
        payments.c.purpose == purpose, payments.c.reference_id == reference_id, payments.c.status.in_(OPEN))
        .with_for_update())).all()
    for row in open_:
        if row.amount_minor == card and take == 0:
            return _payment(row)  # the checkout already under way
        await session.execute(update(payments).where(payments.c.id == row.id).values(
            status="cancelled", failure_reason="replaced by a new payment", updated_at=func.now(),
            version=row.version + 1))
        await _record(session, row, _type_of(purpose), "failed", row.amount_minor, note="replaced by a new payment")
    settings = get_settings()
    gw = gateways.gateway(settings) if card else None
    payment_id = new_id()
    values: dict[str, Any] = dict(
        id=payment_id, tenant_id=payable.tenant_id, payer_account_id=principal.account_id,
        payer_tenant_id=payable.notify_tenant_id, purpose=purpose,
        reference_id=reference_id, description=payable.description[:200], owed_minor=payable.total_minor,
        amount_minor=card, wallet_minor=take,
        currency=payable.currency, provider=gw.name if gw else "wallet", status="created", captured_minor=0,
        refunded_minor=0, fee_minor=0, return_url=payable.return_url, version=1)
    await session.execute(payments.insert().values(**values))
    row = (await session.execute(select(payments).where(payments.c.id == payment_id))).one()
    if take:
        await ledger.post(session, "wallet_payment", [(wallet_id, -take),
                                                      (await _escrow(session, payable.tenant_id, payable.currency),
                                                       take)],
                          reference=ref, memo=payable.description[:200])
        await session.execute(update(payments).where(payments.c.id == payment_id).values(captured_minor=take))
        await _record(session, row, "wallet_payment", "success", take, provider="wallet")
    if gw is None:
        await session.execute(update(payments).where(payments.c.id == payment_id).values(status="succeeded"))
        await _tell(session, row, "payment.received", take, f"{payment_id}:received")
        await _settled(session, purpose, reference_id, payable.tenant_id)
    else:
        created = await gw.create(session, gateways.Charge(str(payment_id), card, payable.currency,
                                                           payable.description))
        await session.execute(update(payments).where(payments.c.id == payment_id).values(
            provider_ref=created.ref, checkout_url=created.checkout_url, client_secret=created.client_secret))
        row = (await session.execute(select(payments).where(payments.c.id == payment_id))).one()
        await _record(session, row, _type_of(purpose), "pending", card)
    return await get_payment(session, principal, payment_id)


async def _settled(session: AsyncSession, purpose: str, reference_id: uuid.UUID, tenant_id: uuid.UUID | None) -> None:
    """Everything owed is in: tell the purpose (or refund, when the thing closed meanwhile)."""
    if not await _purpose(purpose).paid(session, reference_id):
        await jobs.defer(session, "payments.refund_reference", purpose=purpose, reference_id=str(reference_id),
                         reason="closed before the payment arrived", tenant_id=str(tenant_id) if tenant_id else None)


async def get_payment(session: AsyncSession, principal: Principal, payment_id: uuid.UUID) -> Payment:
    row = (await session.execute(select(payments).where(payments.c.id == payment_id))).first()
    if row is None or not (row.payer_account_id == principal.account_id or
                           (row.tenant_id is not None and row.tenant_id == principal.tenant_id and principal.is_staff)):
        raise NotFound("No such payment.", code="payment-not-found")
    return _payment(row)


@dataclass
class Transaction:
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


async def transactions(session: AsyncSession, principal: Principal, *, merchant: bool = False,
                       limit: int = 100) -> list[Transaction]:
    """The caller's own payments' history, or (``merchant``) their organization's."""
    stmt = select(payment_transactions)
    if merchant:
        require(principal, "manage:own_orders", "manage:payments")
        stmt = stmt.where(payment_transactions.c.tenant_id == principal.tenant_id)
    else:
        stmt = stmt.where(payment_transactions.c.payer_account_id == principal.account_id)
    rows = (await session.execute(stmt.order_by(payment_transactions.c.id.desc()).limit(limit))).all()
    return [Transaction(r.id, r.payment_id, r.type, r.status, r.amount_minor, r.currency, r.provider,
                        r.provider_ref, r.note, r.at) for r in rows]


async def confirm(session: AsyncSession, principal: Principal, payment_id: uuid.UUID, *,
                  provider_payment_ref: str | None = None, signature: str | None = None) -> Payment:
    """Where a payment stands once the payer is back from the provider. With Razorpay Checkout's
    signature (HMAC of "order|payment" under the key secret, checked by the SDK) the payment is
    taken as captured at once, exactly as its webhook would (the later webhook changes nothing)."""
    payment = await get_payment(session, principal, payment_id)
    if signature is None and provider_payment_ref is None:
        return payment
    if payment.provider != "razorpay" or not signature or not provider_payment_ref:
        raise ValidationFailed("Only a Razorpay payment is confirmed with razorpay_payment_id and "
                               "razorpay_signature (both).", code="bad-confirmation")
    gw = gateways.gateway(get_settings(), "razorpay")
    assert isinstance(gw, gateways.RazorpayGateway)
    gw.check_payment_signature(payment.provider_ref or "", provider_payment_ref, signature)
    await _handle_event(session, "razorpay", gateways.WebhookEvent(
        f"checkout:{provider_payment_ref}", "payment.succeeded", payment.provider_ref, payment.amount_minor,
        payment.currency, payment_ref=provider_payment_ref, provider_type="checkout.signature"))
    return await get_payment(session, principal, payment_id)


# -- webhooks -------------------------------------------------------------------------------------


async def handle_webhook(session: AsyncSession, provider: str, body: bytes, headers: dict[str, str]) -> str:
    """A provider's event: signature first (400 and nothing written when it is wrong), then once
    per event id (a replay is answered and changes nothing), then applied if it still moves the
    payment forward (a late 'failed' after 'succeeded' is recorded and ignored)."""
    try:
        gw = gateways.gateway(get_settings(), provider)
    except ServiceUnavailable:
        # 404, not 503: a provider would retry a 503 for days against an install that never meant to use it.
        raise NotFound(f"{provider} webhooks are not enabled here: set CAREBASE_PAYMENT_PROVIDER and its keys.",
                       code="webhook-not-configured") from None
    event = gw.read_webhook(body, {k.lower(): v for k, v in headers.items()})
    return await _handle_event(session, provider, event)


async def _handle_event(session: AsyncSession, provider: str, event: gateways.WebhookEvent) -> str:
    fresh = await session.execute(insert(webhook_events).values(
        provider=provider, event_id=event.id, type=event.provider_type[:60] or event.type, outcome="received")
        .on_conflict_do_nothing().returning(webhook_events.c.event_id))
    if fresh.first() is None:
        return "duplicate"
    outcome, payment_id = await _apply(session, provider, event)
    await session.execute(update(webhook_events).where(
        webhook_events.c.provider == provider, webhook_events.c.event_id == event.id).values(
        outcome=outcome[:200], payment_id=payment_id))
    log.info("payment_webhook", provider=provider, type=event.type, outcome=outcome)
    return outcome


async def _apply(session: AsyncSession, provider: str, event: gateways.WebhookEvent) -> tuple[str, uuid.UUID | None]:
    if event.type == "other":
        return f"ignored: {event.provider_type or event.type}", None
    if event.type.startswith("refund."):
        # A refund names the refund (Razorpay's does not name the order): found by its own id.
        found = (await session.execute(text("SELECT * FROM payment_for_refund(:p, :r)"),
                                       {"p": provider, "r": event.refund_ref})).first() if event.refund_ref else None
    else:
        found = (await session.execute(text("SELECT * FROM payment_for_provider(:p, :r)"),
                                       {"p": provider, "r": event.ref})).first() if event.ref else None
    if found is None:
        return "unknown payment", None
    # The merchant's organization (the payer's own, when the platform was paid: a top-up, a pharmacy's
    # subscription), so that what the payment is for can be written.
    await set_context(session, found.tenant_id or found.payer_tenant_id, found.account_id)
    row = (await session.execute(select(payments).where(payments.c.id == found.id).with_for_update())).one()
    if event.type.startswith("refund."):
        return await _refund_news(session, row, event), row.id
    if event.type == "payment.processing":
        if row.status != "created":
            return f"ignored: payment is {row.status}", row.id
        await _set(session, row, status="processing")
        await _record(session, row, _type_of(row.purpose), "pending", row.amount_minor, event_id=event.id,
                      note="processing")
        return "processing", row.id
    if event.type == "payment.failed":
        if row.status not in OPEN:
            return f"ignored: payment is {row.status}", row.id
        reason = (event.failure_reason or "declined")[:300]
        await _set(session, row, status="failed", failure_reason=reason)
        await _record(session, row, _type_of(row.purpose), "failed", row.amount_minor, event_id=event.id, note=reason)
        await _tell(session, row, "payment.failed", row.amount_minor, f"{row.id}:failed:{event.id}", reason=reason)
        return "failed", row.id
    # payment.succeeded
    if row.status == "succeeded":
        return "ignored: already succeeded", row.id
    if event.amount_minor != row.amount_minor or (event.currency and event.currency != row.currency):
        await _record(session, row, _type_of(row.purpose), "failed", event.amount_minor or 0, event_id=event.id,
                      note=f"amount mismatch: provider says {event.amount_minor} {event.currency}")
        return "amount mismatch: left for reconciliation", row.id
    # A payment replaced or given up on may still be paid by a slow payer: the money is real, so
    # it is taken (and refunded below if nothing is owed any more).
    fee = row.amount_minor * get_settings().payment_fee_bps // 10_000
    await _set(session, row, status="succeeded", captured_minor=row.captured_minor + row.amount_minor, fee_minor=fee,
               provider_payment_ref=event.payment_ref, failure_reason=None)
    clearing = await _platform(session, ledger.CLEARING, row.currency)
    handler = _purpose(row.purpose)
    reference = str(row.reference_id)
    if handler.credit == "escrow":
        target = await _escrow(session, row.tenant_id, row.currency)
    elif handler.credit == "revenue":
        target = await _platform(session, ledger.REVENUE, row.currency)
    else:
        target = await _wallet(session, row.payer_account_id, row.currency)
        reference = str(row.id)
    await ledger.post(session, row.purpose if row.purpose != "order" else "order_payment",
                      [(clearing, -row.amount_minor), (target, row.amount_minor)], reference=reference,
                      memo=row.description)
    await _record(session, row, _type_of(row.purpose), "success", row.amount_minor, event_id=event.id,
                  provider_ref=event.payment_ref or row.provider_ref)
    await _tell(session, row, "payment.received", row.amount_minor + row.wallet_minor, f"{row.id}:received")
    await realtime.publish(session, f"account:{row.payer_account_id}", {"type": "payment:succeeded", "id": str(row.id)})
    if handler.credit == "escrow":
        held = await ledger.held(session, target, reference)
        if held > row.owed_minor:
            # Paid more than once (a second checkout tab, a replaced payment paid late): the excess
            # goes back from this payment.
            await jobs.defer(session, "payments.refund_payment", payment_id=str(row.id),
                             amount_minor=min(held - row.owed_minor, row.captured_minor + row.amount_minor),
                             reason="paid twice: the excess is returned", tenant_id=str(row.tenant_id))
        if held >= row.owed_minor:
            await _settled(session, row.purpose, row.reference_id, row.tenant_id)
    elif handler.credit == "revenue":
        await _settled(session, row.purpose, row.reference_id, row.tenant_id)
    return "succeeded", row.id


async def _set(session: AsyncSession, row, **values: Any) -> None:
    await session.execute(update(payments).where(payments.c.id == row.id).values(
        **values, updated_at=func.now(), version=row.version + 1))


async def _tell(session: AsyncSession, row, type: str, amount: int, event_key: str, **extra: str) -> None:
    """The payer's notice, by a job in the organization where they read them (this transaction
    may be the merchant's, which cannot write another organization's notices)."""
    data = {"amount": money(amount, row.currency), "purpose": row.description,
            "reference": row.provider_ref or str(row.id), **extra}
    await jobs.defer(session, "payments.tell_payer", tenant_id=str(row.payer_tenant_id),
                     account_id=str(row.payer_account_id), type=type, data=data, event_key=event_key)


@jobs.job("payments.tell_payer")
async def _tell_payer_job(db, tenant_id: str, account_id: str, type: str, data: dict[str, Any],
                          event_key: str) -> None:
    async with db.transaction(uuid.UUID(tenant_id), None) as session:
        await notifications.notify(session, tenant_id=uuid.UUID(tenant_id), account_id=uuid.UUID(account_id),
                                   type=type, data=data, event_key=event_key, link="/portal/wallet")


# -- refunds --------------------------------------------------------------------------------------


@dataclass
class Refund:
    id: uuid.UUID
    payment_id: uuid.UUID
    amount_minor: int
    wallet_minor: int
    currency: str
    status: str
    provider_ref: str | None
    reason: str
    created_at: datetime

    @property
    def total_minor(self) -> int:
        return self.amount_minor + self.wallet_minor


async def refund(session: AsyncSession, principal: Principal | None, payment_id: uuid.UUID, *,
                 amount_minor: int | None = None, reason: str) -> Refund:
    """Give back part or all of what a payment captured (never more): the wallet part to the
    wallet at once, the gateway part through the provider. ``principal`` None: the system (a
    cancelled order). The money comes out of the merchant's escrow, or its payable once released."""
    row = (await session.execute(select(payments).where(payments.c.id == payment_id).with_for_update())).first()
    if row is None:
        raise NotFound("No such payment.", code="payment-not-found")
    if principal is not None:
        if not (row.tenant_id is not None and row.tenant_id == principal.tenant_id
                and (principal.can("manage:own_orders") or principal.can("manage:payments"))):
            if row.payer_account_id == principal.account_id or row.tenant_id == principal.tenant_id:
                raise Forbidden("Refunds are made by the merchant's staff.", code="forbidden")
            raise NotFound("No such payment.", code="payment-not-found")
    if row.tenant_id is None:
        raise Conflict("Payments to the platform are not refunded here: a wallet top-up stays in the wallet, to "
                       "pay with; a subscription is ended by cancelling it.", code="not-refundable")
    if not (reason or "").strip():
        raise ValidationFailed("Say why the money goes back: the payer reads it.", code="reason-required")
    left = row.captured_minor - row.refunded_minor
    amount = left if amount_minor is None else amount_minor
    if amount <= 0 and amount_minor is None:
        raise Conflict("Nothing is left to refund on this payment.", code="nothing-to-refund")
    if amount <= 0:
        raise ValidationFailed("amount_minor is a positive number of minor units.", code="bad-amount")
    if amount > left:
        raise Conflict(f"Only {money(left, row.currency)} of this payment is left to refund, not "
                       f"{money(amount, row.currency)}.", code="refund-exceeds-capture", refundable_minor=left)
    done = (await session.execute(select(func.coalesce(func.sum(refunds.c.wallet_minor), 0)).where(
        refunds.c.payment_id == payment_id, refunds.c.status != "failed"))).scalar()
    to_wallet = min(amount, row.wallet_minor - int(done))
    to_card = amount - to_wallet
    escrow = await _escrow(session, row.tenant_id, row.currency)
    source = escrow
    if await ledger.held(session, escrow, str(row.reference_id)) < amount:
        source = await ledger.account(session, ledger.PAYABLE, row.currency, owner_tenant=row.tenant_id)
    refund_id = new_id()
    lines_ = [(source, -amount)]
    if to_wallet:
        lines_.append((await _wallet(session, row.payer_account_id, row.currency), to_wallet))
    if to_card:
        lines_.append((await _platform(session, ledger.CLEARING, row.currency), to_card))
    await ledger.post(session, "refund", lines_, reference=str(row.reference_id), memo=reason.strip()[:200])
    provider_ref = None
    if to_card:
        provider_ref = await gateways.gateway(get_settings(), row.provider).refund(
            session, row.provider_ref, row.provider_payment_ref, to_card, str(refund_id))
    await session.execute(refunds.insert().values(
        id=refund_id, payment_id=payment_id, tenant_id=row.tenant_id, payer_account_id=row.payer_account_id,
        amount_minor=to_card, wallet_minor=to_wallet, currency=row.currency, status="succeeded",
        provider_ref=provider_ref, reason=reason.strip()[:300],
        created_by=principal.account_id if principal else None, finished_at=func.now()))
    await _set(session, row, refunded_minor=row.refunded_minor + amount)
    await _record(session, row, "refund", "success", amount, provider_ref=provider_ref, note=reason.strip()[:300])
    await _tell(session, row, "payment.refunded", amount, f"{refund_id}", reason=reason.strip()[:300])
    # "Fully": nothing paid for the thing is kept any more, by any of its payments.
    kept = await session.scalar(select(func.coalesce(func.sum(payments.c.captured_minor - payments.c.refunded_minor),
                                                     0)).where(payments.c.purpose == row.purpose,
                                                               payments.c.reference_id == row.reference_id))
    await _purpose(row.purpose).refunded(session, row.reference_id, int(kept) == 0)
    return Refund(refund_id, payment_id, to_card, to_wallet, row.currency, "succeeded", provider_ref,
                  reason.strip(), datetime.now(UTC))


async def _refund_news(session: AsyncSession, row, event: gateways.WebhookEvent) -> str:
    """A provider's word on a refund we made: a failure puts the money back in escrow for a person
    to sort out (it is rare, and needs one)."""
    found = (await session.execute(select(refunds).where(refunds.c.provider_ref == event.refund_ref)
                                   .with_for_update())).first() if event.refund_ref else None
    if found is None:
        return "unknown refund"
    if event.type == "refund.succeeded" or found.status == "failed":
        return f"refund is {found.status}"
    await session.execute(update(refunds).where(refunds.c.id == found.id).values(status="failed",
                                                                                 finished_at=func.now()))
    await ledger.post(session, "refund_failed", [(await _platform(session, ledger.CLEARING, row.currency),
                                                  -found.amount_minor),
                                                 (await _escrow(session, row.tenant_id, row.currency),
                                                  found.amount_minor)],
                      reference=str(row.reference_id), memo="the provider could not refund")
    await _set(session, row, refunded_minor=row.refunded_minor - found.amount_minor)
    await _record(session, row, "refund", "failed", found.amount_minor, provider_ref=found.provider_ref,
                  event_id=event.id, note=(event.failure_reason or "refund failed")[:300])
    return "refund failed: money back in escrow"


async def refund_reference(session: AsyncSession, purpose: str, reference_id: uuid.UUID, reason: str) -> int:
    """Refund everything still captured for one thing (a cancelled order): safe to run twice."""
    total = 0
    rows = (await session.execute(select(payments.c.id).where(
        payments.c.purpose == purpose, payments.c.reference_id == reference_id,
        payments.c.captured_minor > payments.c.refunded_minor).order_by(payments.c.created_at))).all()
    for r in rows:
        total += (await refund(session, None, r.id, reason=reason)).total_minor
    # Gateway payments still open can no longer be paid into something closed.
    for r in (await session.execute(select(payments).where(
            payments.c.purpose == purpose, payments.c.reference_id == reference_id,
            payments.c.status.in_(OPEN)).with_for_update())).all():
        await _set(session, r, status="cancelled", failure_reason=reason[:300])
        await _record(session, r, _type_of(purpose), "failed", r.amount_minor, note=reason[:300])
    return total


@jobs.job("payments.refund_reference")
async def _refund_reference_job(db, purpose: str, reference_id: str, reason: str, tenant_id: str | None) -> None:
    async with db.transaction(uuid.UUID(tenant_id) if tenant_id else None, None) as session:
        await refund_reference(session, purpose, uuid.UUID(reference_id), reason)


async def refund_excess(session: AsyncSession, payment_id: uuid.UUID, amount_minor: int, reason: str) -> int:
    """Give back what a thing was paid beyond its price, from the payment that overpaid (the job's
    work, in the merchant's organization): only what its escrow still holds beyond the price, so
    running it twice returns nothing more."""
    row = (await session.execute(select(payments).where(payments.c.id == payment_id))).first()
    if row is None or row.tenant_id is None:
        return 0
    held = await ledger.held(session, await _escrow(session, row.tenant_id, row.currency), str(row.reference_id))
    amount = min(amount_minor, held - row.owed_minor, row.captured_minor - row.refunded_minor)
    if amount <= 0:
        return 0
    return (await refund(session, None, payment_id, amount_minor=amount, reason=reason)).total_minor


@jobs.job("payments.refund_payment")
async def _refund_payment_job(db, payment_id: str, amount_minor: int, reason: str, tenant_id: str) -> None:
    async with db.transaction(uuid.UUID(tenant_id), None) as session:
        await refund_excess(session, uuid.UUID(payment_id), amount_minor, reason)


async def refund_later(session: AsyncSession, purpose: str, reference_id: uuid.UUID, tenant_id: uuid.UUID,
                       reason: str) -> None:
    """Queue ``refund_reference`` in the merchant's organization (whose escrow it debits): the
    caller may be the payer, whose transaction cannot take money out of the merchant's escrow."""
    await jobs.defer(session, "payments.refund_reference", purpose=purpose, reference_id=str(reference_id),
                     reason=reason, tenant_id=str(tenant_id))


# -- escrow release and payouts --------------------------------------------------------------------


async def pay_from_payable(session: AsyncSession, tenant_id: uuid.UUID, currency: str, amount_minor: int,
                           reference: str, *, memo: str) -> bool:
    """The merchant pays the platform from what it is owed (a subscription renewal), in its own
    organization's transaction; False, and nothing moved, when the payable does not cover it."""
    payable = await ledger.account(session, ledger.PAYABLE, currency, owner_tenant=tenant_id)
    revenue = await _platform(session, ledger.REVENUE, currency)
    if amount_minor <= 0:
        return True
    try:
        async with session.begin_nested():  # a payout draining it meanwhile fails only this
            await ledger.post(session, "subscription_payment", [(payable, -amount_minor), (revenue, amount_minor)],
                              reference=reference, memo=memo)
    except Conflict:
        return False
    return True


async def release_escrow(session: AsyncSession, tenant_id: uuid.UUID, currency: str, reference_id: uuid.UUID,
                         purpose: str = "order") -> int:
    """Move what the escrow holds for this thing to the merchant's payable, less the provider's
    fees on it (in the merchant's own transaction); a payout job is queued for the batch."""
    escrow = await _escrow(session, tenant_id, currency)
    reference = str(reference_id)
    held = await ledger.held(session, escrow, reference)
    if held <= 0:
        return 0
    fee = int(await session.scalar(select(func.coalesce(func.sum(payments.c.fee_minor), 0)).where(
        payments.c.purpose == purpose, payments.c.reference_id == reference_id, payments.c.status == "succeeded")))
    fee = min(fee, held)
    payable = await ledger.account(session, ledger.PAYABLE, currency, owner_tenant=tenant_id)
    await ledger.post(session, "escrow_release", [(escrow, -held), (payable, held - fee),
                                                  (await _platform(session, ledger.FEES, currency), fee)],
                      reference=reference, memo="delivered: released to the merchant")
    await jobs.defer_once(session, "payments.payout", delay_seconds=get_settings().payout_batch_seconds,
                          queueing_lock=f"payout:{tenant_id}", tenant_id=str(tenant_id))
    return held - fee


@dataclass
class Payout:
    id: uuid.UUID
    amount_minor: int
    currency: str
    status: str
    created_at: datetime


async def payout(session: AsyncSession, tenant_id: uuid.UUID) -> list[Payout]:
    """Pay the merchant everything its payable holds, one payout per currency (the job's work)."""
    out = []
    rows = (await session.execute(text(
        "SELECT id, currency, balance_minor FROM ledger_accounts WHERE kind = :k AND owner_tenant_id = :t "
        "AND balance_minor > 0 ORDER BY currency"), {"k": ledger.PAYABLE, "t": tenant_id})).all()
    for r in rows:
        payout_id = new_id()
        await ledger.post(session, "payout", [(r.id, -r.balance_minor),
                                              (await _platform(session, ledger.CLEARING, r.currency), r.balance_minor)],
                          reference=str(payout_id), memo="payout to the merchant's bank account")
        await session.execute(payouts.insert().values(id=payout_id, tenant_id=tenant_id, amount_minor=r.balance_minor,
                                                      currency=r.currency, status="paid"))
        out.append(Payout(payout_id, r.balance_minor, r.currency, "paid", datetime.now(UTC)))
    return out


@jobs.job("payments.payout")
async def _payout_job(db, tenant_id: str) -> None:
    async with db.transaction(uuid.UUID(tenant_id), None) as session:
        await payout(session, uuid.UUID(tenant_id))


@dataclass
class MerchantBalance:
    currency: str
    escrow_minor: int
    payable_minor: int
    paid_out_minor: int
    payouts: list[Payout]


async def merchant_balance(session: AsyncSession, principal: Principal) -> list[MerchantBalance]:
    require(principal, "manage:own_orders", "manage:payments")
    tenant = principal.tenant_id
    rows = (await session.execute(text(
        "SELECT currency, sum(balance_minor) FILTER (WHERE kind = 'escrow') AS escrow, "
        "sum(balance_minor) FILTER (WHERE kind = 'merchant_payable') AS payable FROM ledger_accounts "
        "WHERE owner_tenant_id = :t GROUP BY currency ORDER BY currency"), {"t": tenant})).all()
    paid = (await session.execute(select(payouts).where(payouts.c.tenant_id == tenant)
                                  .order_by(payouts.c.created_at.desc()).limit(50))).all()
    out = []
    for r in rows:
        mine = [Payout(p.id, p.amount_minor, p.currency, p.status, p.created_at) for p in paid
                if p.currency == r.currency]
        out.append(MerchantBalance(r.currency, int(r.escrow or 0), int(r.payable or 0),
                                   sum(p.amount_minor for p in mine), mine))
    return out


# -- the revenue report -----------------------------------------------------------------------------


@dataclass
class RevenueDay:
    day: str  # YYYY-MM-DD in the organization's time zone
    currency: str
    payments: int
    gross_minor: int  # captured for the organization's sales (card, UPI, wallet)
    refunds_minor: int
    fees_minor: int  # kept by the payment provider, charged at release
    net_minor: int


async def revenue(session: AsyncSession, principal: Principal, *, days: int = 30) -> list[RevenueDay]:
    """The organization's takings per day (in its own time zone), newest first: what customers
    paid, what went back, what the provider kept, and the net."""
    require(principal, "manage:payments", "manage:own_orders")
    if not 1 <= days <= 366:
        raise ValidationFailed("days is between 1 and 366.", code="bad-days")
    tenant = await tenants.get_tenant(session, require_tenant(principal))
    zone = tenant.timezone if tenant and tenant.timezone else "UTC"
    rows = (await session.execute(text("""
        WITH t AS (
            SELECT (at AT TIME ZONE :zone)::date AS day, currency, type, amount_minor, payment_id
            FROM payment_transactions
            WHERE tenant_id = :tenant AND status = 'success' AND at >= now() - make_interval(days => :days)
              AND type IN ('order_payment', 'wallet_payment', 'refund'))
        SELECT day, currency,
               count(DISTINCT payment_id) FILTER (WHERE type <> 'refund') AS payments,
               coalesce(sum(amount_minor) FILTER (WHERE type <> 'refund'), 0) AS gross,
               coalesce(sum(amount_minor) FILTER (WHERE type = 'refund'), 0) AS refunds
        FROM t GROUP BY day, currency ORDER BY day DESC, currency"""),
        {"zone": zone, "tenant": principal.tenant_id, "days": days})).all()
    # What the provider kept, charged when an order's escrow is released: the escrow's line less the
    # payable's line of each release journal (the fee account itself is the platform's, not shown here).
    fees = {(r.day, r.currency): int(r.fee) for r in (await session.execute(text("""
        SELECT (e.at AT TIME ZONE :zone)::date AS day, e.currency, sum(-e.amount_minor - p.amount_minor) AS fee
        FROM ledger_entries e
        JOIN ledger_entries p ON p.journal_id = e.journal_id AND p.owner_tenant_id = e.owner_tenant_id
             AND p.amount_minor > 0
        WHERE e.owner_tenant_id = :tenant AND e.journal_kind = 'escrow_release' AND e.amount_minor < 0
          AND e.at >= now() - make_interval(days => :days) GROUP BY 1, 2"""),
        {"zone": zone, "tenant": principal.tenant_id, "days": days})).all()}
    taken = {(r.day, r.currency): r for r in rows}
    out = []
    for day, currency in sorted(set(taken) | set(fees), reverse=True):
        r = taken.get((day, currency))
        gross, refunded = (int(r.gross), int(r.refunds)) if r else (0, 0)
        fee = fees.get((day, currency), 0)
        out.append(RevenueDay(day.isoformat(), currency, int(r.payments) if r else 0, gross, refunded, fee,
                              gross - refunded - fee))
    return out


# -- the wallet -----------------------------------------------------------------------------------


@dataclass
class Wallet:
    currency: str
    balance_minor: int
    lines: list[ledger.Line]


async def wallet(session: AsyncSession, principal: Principal, currency: str = "INR", *, limit: int = 50) -> Wallet:
    require(principal, "manage:own_wallet")
    account_id = await _wallet(session, principal.account_id, currency)
    return Wallet(currency, await ledger.balance(session, account_id), await ledger.lines(session, account_id,
                                                                                           limit=limit))


class _TopUp:
    """Adding money to one's own wallet: paid to the platform, credited when the gateway says so."""

    credit = "wallet"

    async def payable(self, session: AsyncSession, principal: Principal, reference_id: uuid.UUID) -> Payable:
        raise ValidationFailed("Top up with POST /api/v1/wallet/top-up.", code="bad-purpose")

    async def paid(self, session: AsyncSession, reference_id: uuid.UUID) -> bool:
        return True

    async def refunded(self, session: AsyncSession, reference_id: uuid.UUID, fully: bool) -> None:
        return None


register_purpose("wallet_topup", _TopUp())
TOP_UP_MAX_MINOR = 10_000_000  # 1 lakh rupees: the RBI's cap on a small prepaid wallet


async def top_up(session: AsyncSession, principal: Principal, *, amount_minor: int, currency: str = "INR") -> Payment:
    """Add money through the gateway; the wallet is credited by the webhook."""
    require(principal, "manage:own_wallet")
    if amount_minor <= 0 or amount_minor > TOP_UP_MAX_MINOR:
        raise ValidationFailed(f"A top-up is between {money(1, currency)} and {money(TOP_UP_MAX_MINOR, currency)}.",
                               code="bad-amount")
    account_id = await _wallet(session, principal.account_id, currency)
    gw = gateways.gateway(get_settings())
    payment_id = new_id()
    description = f"Wallet top-up {money(amount_minor, currency)}"
    await session.execute(payments.insert().values(
        id=payment_id, tenant_id=None, payer_account_id=principal.account_id,
        payer_tenant_id=require_tenant(principal), purpose="wallet_topup",
        reference_id=account_id, description=description, owed_minor=amount_minor, amount_minor=amount_minor,
        wallet_minor=0,
        currency=currency, provider=gw.name, status="created", captured_minor=0, refunded_minor=0, fee_minor=0,
        return_url="/portal/wallet", version=1))
    created = await gw.create(session, gateways.Charge(str(payment_id), amount_minor, currency, description))
    await session.execute(update(payments).where(payments.c.id == payment_id).values(
        provider_ref=created.ref, checkout_url=created.checkout_url, client_secret=created.client_secret))
    row = (await session.execute(select(payments).where(payments.c.id == payment_id))).one()
    await _record(session, row, "wallet_topup", "pending", amount_minor)
    return _payment(row)


# -- the sandbox's hosted page --------------------------------------------------------------------


async def sandbox_checkout(session: AsyncSession, ref: str) -> tuple[Any, Payment | None]:
    """What the sandbox's hosted page shows: its charge and our payment (no sign-in: the page is
    the provider's, reached by its unguessable id)."""
    gw = gateways.SandboxGateway(get_settings())
    charge = await gw.charge(session, ref)
    found = (await session.execute(text("SELECT * FROM payment_for_provider('sandbox', :r)"), {"r": ref})).first()
    if found is None:
        return charge, None
    await set_context(session, found.tenant_id or found.payer_tenant_id, found.account_id)
    row = (await session.execute(select(payments).where(payments.c.id == found.id))).first()
    return charge, _payment(row) if row else None


async def sandbox_settle(session: AsyncSession, ref: str, outcome: str) -> str:
    """The payer's choice on the sandbox page; its signed webhook is then handled exactly as one
    arriving over HTTP (signature included)."""
    if outcome not in ("pay", "fail"):
        raise ValidationFailed("outcome is pay or fail.", code="bad-outcome")
    gw = gateways.SandboxGateway(get_settings())
    signed = await gw.settle(session, ref, outcome)
    if signed is None:
        return "already paid"
    body, headers = signed
    return await handle_webhook(session, "sandbox", body, headers)


# -- reconciliation -------------------------------------------------------------------------------


@dataclass
class Mismatch:
    provider_ref: str
    ours: str
    theirs: str


RECONCILE_EVERY_SECONDS = 24 * 3600


@dataclass
class Reconciliation:
    id: uuid.UUID
    provider: str
    since: datetime
    checked: int
    mismatches: list[Mismatch]
    ran_at: datetime


async def run_reconciliation(session: AsyncSession, *, provider: str | None = None,
                             since: datetime | None = None) -> Reconciliation:
    """Reconcile and keep the report (as the owner: it reads every organization's payments)."""
    name = provider or get_settings().payment_provider
    since = since or datetime.now(UTC) - timedelta(seconds=2 * RECONCILE_EVERY_SECONDS)
    found, checked = await _reconcile(session, since=since, provider=name)
    report_id = new_id()
    await session.execute(reconciliations.insert().values(
        id=report_id, provider=name, since=since, checked=checked, mismatches=[vars(m) for m in found]))
    if found:
        log.warning("payment_reconciliation_mismatches", provider=name, mismatches=len(found))
    return Reconciliation(report_id, name, since, checked, found, datetime.now(UTC))


@jobs.job("payments.reconcile")
async def _reconcile_job(db) -> None:
    async with db.transaction(owner=True) as session:
        await run_reconciliation(session)


jobs.recurring("payments.reconcile", RECONCILE_EVERY_SECONDS)


async def reconciliation_reports(session: AsyncSession, principal: Principal, *, limit: int = 30
                                 ) -> list[Reconciliation]:
    """The latest reports, newest first (the platform's operators)."""
    require(principal, "reconcile:payments")
    rows = (await session.execute(select(reconciliations).order_by(reconciliations.c.ran_at.desc())
                                  .limit(limit))).all()
    return [Reconciliation(r.id, r.provider, r.since, r.checked, [Mismatch(**m) for m in r.mismatches], r.ran_at)
            for r in rows]


async def reconcile(session: AsyncSession, *, since: datetime | None = None,
                    provider: str | None = None) -> list[Mismatch]:
    """Compare our payments with the provider's list (the owner's job: it reads every tenant)."""
    return (await _reconcile(session, since=since, provider=provider))[0]


async def _reconcile(session: AsyncSession, *, since: datetime | None = None,
                     provider: str | None = None) -> tuple[list[Mismatch], int]:
    gw = gateways.gateway(get_settings(), provider)
    since = since or datetime.now(UTC) - timedelta(days=2)
    theirs = {c.ref: c for c in await gw.charges(session, since)}
    ours = {r.provider_ref: r for r in (await session.execute(select(payments).where(
        payments.c.provider == gw.name, payments.c.created_at >= since - timedelta(hours=1)))).all()}
    out = []
    for ref, c in theirs.items():
        p = ours.get(ref)
        if p is None:
            out.append(Mismatch(ref, "no payment", f"{c.status} {c.amount_minor} {c.currency}"))
            continue
        card_refunded = int(await session.scalar(select(func.coalesce(func.sum(refunds.c.amount_minor), 0)).where(
            refunds.c.payment_id == p.id, refunds.c.status == "succeeded")))
        # Only money counts: a declined try that the provider keeps open for another card is, for
        # us, a failed payment, and both agree nothing was taken.
        theirs_paid, ours_paid = c.status == "succeeded", p.status == "succeeded"
        if theirs_paid != ours_paid or (theirs_paid and (c.amount_minor != p.amount_minor
                                                         or c.refunded_minor != card_refunded)):
            out.append(Mismatch(ref, f"{p.status} {p.amount_minor} refunded {card_refunded}",
                                f"{c.status} {c.amount_minor} refunded {c.refunded_minor}"))
    for ref, p in ours.items():
        if ref and ref not in theirs and p.status == "succeeded" and p.created_at >= since:
            out.append(Mismatch(ref, f"{p.status} {p.amount_minor}", "unknown to the provider"))
    return out, len(theirs)
