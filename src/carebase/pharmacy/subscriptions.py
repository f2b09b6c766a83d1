"""A pharmacy's subscription to the marketplace: plans, checkout, renewal, grace, suspension,
reactivation, plan changes with proration, cancellation, and its invoices.

The life of a subscription (``pharmacies.subscription_status``):
* ``trial`` (30 days from the profile) → ``active`` when a plan is paid for (checkout through the
  payment gateway; its invoice is paid by the gateway's webhook);
* ``active``: a day before the period ends the renewal job takes the next period's invoice from
  the pharmacy's payable balance (its released sales). If that does not cover it, ``past_due``:
  the pharmacy keeps selling for ``GRACE_DAYS`` while it is reminded daily to pay (checkout);
* ``past_due`` past its grace, or a trial that ran out unpaid → ``expired``: hidden from search
  and refusing orders with a message that says why, until a checkout pays (``active`` again, a
  period from the payment);
* ``cancelled``: no renewal; the pharmacy sells until the paid period ends.

Every invoice is numbered per pharmacy without gaps (``SUB-<year>-<n>``), carries its tax line
(GST in India, VAT elsewhere) and is kept with how it was paid. Money moves through the ledger:
the gateway's payment into the platform's revenue account, or the pharmacy's payable into it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.notifications import service as notifications
from carebase.payments import service as payments
from carebase.pharmacy.models import pharmacies, subscription_events, subscription_invoices
from carebase.platform import jobs, numbering
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.db import set_context
from carebase.platform.errors import Conflict, NotFound, ValidationFailed
from carebase.platform.ids import new_id
from carebase.platform.money import money
from carebase.tenants import service as tenants

GRACE_DAYS = 7
RENEW_AHEAD = timedelta(days=1)


@dataclass(frozen=True)
class Plan:
    code: str
    name: str
    period_days: int
    prices: dict[str, int]  # currency -> net price per period, minor units
    features: tuple[str, ...]


PLANS = {p.code: p for p in (
    Plan("basic", "Basic", 30, {"INR": 99_900, "EUR": 1_900},
         ("Listed in search and near-me", "Online orders and payments", "Up to 1,000 medicines")),
    Plan("pro", "Pro", 30, {"INR": 249_900, "EUR": 4_900},
         ("Everything in Basic", "Unlimited medicines", "Courier integration", "Priority support")),
)}
# The tax on the platform's fee: India's GST on software services, else the German VAT rate the
# demo's European pharmacy pays (an operator elsewhere sets their own here).
TAX = {"INR": ("GST", 1800), "EUR": ("VAT", 1900)}
STATUS_TEXT = {"trial": "on a free trial", "active": "active", "past_due": "unpaid (grace period)",
               "expired": "suspended: the subscription has lapsed", "cancelled": "cancelled"}


def tax_on(net: int, currency: str) -> tuple[str, int, int]:
    """(tax name, rate in basis points, tax in minor units, half-up)."""
    name, bps = TAX.get(currency, ("Tax", 0))
    return name, bps, (net * bps + 5_000) // 10_000


@dataclass
class Invoice:
    id: uuid.UUID
    tenant_id: uuid.UUID
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


_INVOICE_FIELDS = tuple(Invoice.__dataclass_fields__)


def _invoice(row) -> Invoice:
    m = row._mapping
    return Invoice(**{k: m[k] for k in _INVOICE_FIELDS})


@dataclass
class Subscription:
    status: str
    status_text: str
    plan: str | None
    ends_at: datetime | None
    grace_until: datetime | None
    auto_renew: bool
    credit_minor: int
    currency: str
    live: bool
    plans: list[dict[str, Any]]


async def _row(session: AsyncSession, tenant_id: uuid.UUID, *, lock: bool = False):
    stmt = select(pharmacies).where(pharmacies.c.tenant_id == tenant_id)
    row = (await session.execute(stmt.with_for_update() if lock else stmt)).first()
    if row is None:
        raise NotFound("This organization has no pharmacy profile yet: create one first.", code="no-pharmacy")
    return row


def _live(row, now: datetime) -> bool:
    from carebase.pharmacy.service import subscription_live

    return subscription_live(row.subscription_status, row.subscription_ends_at, now,
                             grace_until=row.subscription_grace_until)


async def status(session: AsyncSession, principal: Principal) -> Subscription:
    require(principal, "manage:own_inventory")
    row = await _row(session, require_tenant(principal))
    plans = [{"code": p.code, "name": p.name, "period_days": p.period_days, "features": list(p.features),
              "price_minor": p.prices.get(row.currency), "tax": TAX.get(row.currency, ("Tax", 0))[0],
              "tax_rate_bps": TAX.get(row.currency, ("Tax", 0))[1]} for p in PLANS.values()
             if row.currency in p.prices]
    return Subscription(row.subscription_status, STATUS_TEXT.get(row.subscription_status, row.subscription_status),
                        row.subscription_plan, row.subscription_ends_at, row.subscription_grace_until,
                        row.subscription_auto_renew, row.subscription_credit_minor, row.currency,
                        _live(row, datetime.now(UTC)), plans)


async def _event(session: AsyncSession, tenant_id: uuid.UUID, kind: str, note: str) -> None:
    await session.execute(subscription_events.insert().values(tenant_id=tenant_id, kind=kind, note=note[:300]))


async def _new_invoice(session: AsyncSession, row, *, kind: str, plan: Plan, start: datetime, end: datetime,
                       net: int, description: str) -> Invoice:
    tax_name, bps, tax = tax_on(net, row.currency)
    n = await numbering.next_number(session, row.tenant_id, "SUB")
    invoice_id = new_id()
    await session.execute(subscription_invoices.insert().values(
        id=invoice_id, tenant_id=row.tenant_id, number=f"SUB-{start:%Y}-{n:05d}", kind=kind, plan=plan.code,
        period_start=start, period_end=end, description=description[:200], net_minor=net, tax_name=tax_name,
        tax_rate_bps=bps, tax_minor=tax, total_minor=net + tax, currency=row.currency, status="open"))
    return _invoice((await session.execute(select(subscription_invoices)
                                           .where(subscription_invoices.c.id == invoice_id))).one())


def _plan(code: str, currency: str) -> Plan:
    plan = PLANS.get(code)
    if plan is None or currency not in plan.prices:
        raise ValidationFailed(f"No plan {code!r} in {currency} (choose one of "
                               f"{', '.join(p.code for p in PLANS.values() if currency in p.prices)}).",
                               code="bad-plan")
    return plan


async def checkout(session: AsyncSession, principal: Principal, plan_code: str) -> tuple[Invoice, payments.Payment]:
    """Pay for a plan through the gateway: a new subscription, a reactivation, or the period after
    the current one. The invoice is paid (and the subscription moved) by the payment's webhook."""
    require(principal, "manage:own_inventory")
    row = await _row(session, require_tenant(principal), lock=True)
    plan = _plan(plan_code, row.currency)
    now = datetime.now(UTC)
    open_ = (await session.execute(select(subscription_invoices).where(
        subscription_invoices.c.tenant_id == row.tenant_id, subscription_invoices.c.status == "open",
        subscription_invoices.c.plan == plan.code, subscription_invoices.c.kind == "checkout"))).first()
    if open_ is not None:
        invoice = _invoice(open_)
    else:
        paid_up = row.subscription_status in ("active", "cancelled") and row.subscription_ends_at and \
            row.subscription_ends_at > now and row.subscription_plan == plan.code
        start = row.subscription_ends_at if paid_up else now
        end = start + timedelta(days=plan.period_days)
        invoice = await _new_invoice(session, row, kind="checkout", plan=plan, start=start, end=end,
                                     net=plan.prices[row.currency],
                                     description=f"{plan.name} plan, {start:%d %b %Y} to {end:%d %b %Y}")
    payment = await payments.create_intent(session, principal, purpose="subscription", reference_id=invoice.id)
    return invoice, payment


class _InvoicePurpose:
    """What payments needs of a subscription invoice: who owes what, and what paying it does."""

    credit = "revenue"

    async def payable(self, session: AsyncSession, principal: Principal, reference_id: uuid.UUID) -> payments.Payable:
        require(principal, "manage:own_inventory")
        inv = (await session.execute(select(subscription_invoices).where(
            subscription_invoices.c.id == reference_id,
            subscription_invoices.c.tenant_id == require_tenant(principal)))).first()
        if inv is None:
            raise NotFound("No such invoice.", code="invoice-not-found")
        if inv.status != "open":
            raise Conflict(f"Invoice {inv.number} is {inv.status}.", code="already-paid")
        return payments.Payable(tenant_id=None, account_id=principal.account_id, notify_tenant_id=inv.tenant_id,
                                total_minor=inv.total_minor, currency=inv.currency,
                                description=f"Carebase subscription, invoice {inv.number}",
                                return_url="/portal/pharmacy/subscription")

    async def paid(self, session: AsyncSession, reference_id: uuid.UUID) -> bool:
        inv = (await session.execute(select(subscription_invoices).where(subscription_invoices.c.id == reference_id)
                                     .with_for_update())).first()
        if inv is None or inv.status == "void":
            return False
        if inv.status == "paid":
            return True
        await _settle(session, inv, via="gateway")
        return True

    async def refunded(self, session: AsyncSession, reference_id: uuid.UUID, fully: bool) -> None:
        return None


payments.register_purpose("subscription", _InvoicePurpose())


async def _settle(session: AsyncSession, inv, *, via: str) -> None:
    """An invoice is paid: the subscription runs on to its period's end on its plan."""
    row = await _row(session, inv.tenant_id, lock=True)
    now = datetime.now(UTC)
    await session.execute(update(subscription_invoices).where(subscription_invoices.c.id == inv.id).values(
        status="paid", paid_via=via, paid_at=now))
    ends = inv.period_end
    if inv.kind == "change":
        ends = row.subscription_ends_at or inv.period_end  # a plan change keeps the period's end
    elif inv.period_start < now - timedelta(minutes=5) and row.subscription_status in ("expired", "past_due"):
        # Paid after lapsing: the period runs from the payment, not from the old invoice's date.
        ends = now + (inv.period_end - inv.period_start)
    renews = row.subscription_auto_renew or inv.kind == "checkout"  # buying a plan again undoes a cancel
    await session.execute(update(pharmacies).where(pharmacies.c.tenant_id == inv.tenant_id).values(
        subscription_status="active", subscription_plan=inv.plan, subscription_ends_at=ends,
        subscription_grace_until=None, subscription_auto_renew=renews, updated_at=now, version=row.version + 1))
    was = row.subscription_status
    await _event(session, inv.tenant_id, "paid", f"invoice {inv.number} paid ({via}); "
                                                 f"{'reactivated' if was in ('expired', 'past_due') else 'active'} "
                                                 f"until {ends:%d %b %Y}")
    await _tell(session, inv.tenant_id, "active", f"Invoice {inv.number} is paid: your {PLANS[inv.plan].name} plan "
                                                 f"runs until {ends:%d %b %Y}.", key=str(inv.id))


async def change_plan(session: AsyncSession, principal: Principal, plan_code: str) -> tuple[Invoice | None, int]:
    """Move an active subscription to another plan now, prorated by the days left: the difference
    is invoiced (an upgrade, paid through checkout of the change invoice) or kept as credit for
    the next renewal (a downgrade). Returns the invoice (or None) and the credit given."""
    require(principal, "manage:own_inventory")
    row = await _row(session, require_tenant(principal), lock=True)
    new = _plan(plan_code, row.currency)
    now = datetime.now(UTC)
    if row.subscription_status != "active" or not row.subscription_plan or not row.subscription_ends_at:
        raise Conflict("Only an active subscription changes plan; start one with a checkout.", code="not-active")
    if row.subscription_plan == new.code:
        raise Conflict(f"You are on the {new.name} plan already.", code="same-plan")
    old = PLANS[row.subscription_plan]
    left = max(row.subscription_ends_at - now, timedelta(0))
    period = timedelta(days=old.period_days)
    unused = round(old.prices[row.currency] * (left / period))
    owed = round(new.prices[row.currency] * (left / period))
    difference = owed - unused
    await _event(session, row.tenant_id, "plan_changed", f"{old.name} → {new.name} with {left.days} day(s) left: "
                                                         f"{money(difference, row.currency)} net")
    if difference <= 0:
        await session.execute(update(pharmacies).where(pharmacies.c.tenant_id == row.tenant_id).values(
            subscription_plan=new.code, subscription_credit_minor=row.subscription_credit_minor - difference,
            updated_at=now, version=row.version + 1))
        return None, -difference
    invoice = await _new_invoice(session, row, kind="change", plan=new, start=now, end=row.subscription_ends_at,
                                 net=difference, description=f"Change to {new.name} for the {left.days} day(s) left "
                                                             f"of this period (prorated)")
    return invoice, 0


async def pay_invoice(session: AsyncSession, principal: Principal, invoice_id: uuid.UUID) -> payments.Payment:
    """Pay an open invoice (a plan change's difference, a renewal that failed) through the gateway."""
    return await payments.create_intent(session, principal, purpose="subscription", reference_id=invoice_id)


async def cancel(session: AsyncSession, principal: Principal) -> Subscription:
    """No renewal: the pharmacy sells until the paid period ends."""
    require(principal, "manage:own_inventory")
    row = await _row(session, require_tenant(principal), lock=True)
    if row.subscription_status not in ("active", "past_due", "trial"):
        raise Conflict(f"The subscription is {STATUS_TEXT[row.subscription_status]}: there is nothing to cancel.",
                       code="not-active")
    await session.execute(update(pharmacies).where(pharmacies.c.tenant_id == row.tenant_id).values(
        subscription_status="cancelled", subscription_auto_renew=False, subscription_grace_until=None,
        updated_at=datetime.now(UTC), version=row.version + 1))
    await _event(session, row.tenant_id, "cancelled", "cancelled: no renewal; open until "
                 + (f"{row.subscription_ends_at:%d %b %Y}" if row.subscription_ends_at else "now"))
    return await status(session, principal)


@dataclass
class Event:
    kind: str
    note: str
    at: datetime


async def history(session: AsyncSession, principal: Principal) -> tuple[list[Invoice], list[Event]]:
    require(principal, "manage:own_inventory")
    tenant = require_tenant(principal)
    invoices = (await session.execute(select(subscription_invoices).where(subscription_invoices.c.tenant_id == tenant)
                                      .order_by(subscription_invoices.c.created_at.desc()).limit(100))).all()
    events = (await session.execute(select(subscription_events).where(subscription_events.c.tenant_id == tenant)
                                    .order_by(subscription_events.c.id.desc()).limit(100))).all()
    return [_invoice(r) for r in invoices], [Event(e.kind, e.note, e.at) for e in events]


async def get_invoice(session: AsyncSession, principal: Principal, invoice_id: uuid.UUID) -> Invoice:
    require(principal, "manage:own_inventory")
    row = (await session.execute(select(subscription_invoices).where(
        subscription_invoices.c.id == invoice_id, subscription_invoices.c.tenant_id == require_tenant(principal)))
    ).first()
    if row is None:
        raise NotFound("No such invoice.", code="invoice-not-found")
    return _invoice(row)


async def invoice_pdf(session: AsyncSession, principal: Principal, invoice_id: uuid.UUID) -> tuple[str, bytes]:
    """The invoice (or, once paid, the receipt) as a PDF: seller, buyer, period, net, tax, total."""
    invoice = await get_invoice(session, principal, invoice_id)
    row = await _row(session, require_tenant(principal))
    kind = "Receipt" if invoice.status == "paid" else "Invoice"
    return f"{invoice.number}.pdf", _render_invoice(invoice, row, kind)


def _render_invoice(inv: Invoice, pharmacy, kind: str) -> bytes:
    from carebase.platform.money import plain
    from carebase.platform.pdf import render_statement

    paid = f"; paid {inv.paid_at:%d %b %Y} ({inv.paid_via})" if inv.paid_at else "; due now"
    return render_statement(
        f"{kind} {inv.number}",
        [(f"Carebase: {kind.lower()} {inv.number}", 15, "B"), (f"Issued {inv.created_at:%d %b %Y}{paid}", 9, ""),
         ("", 4, ""), ("Billed to", 9, "B"), (f"{pharmacy.name}, licence {pharmacy.licence_number}", 10, ""),
         (pharmacy.address, 10, "")],
        [("Description", "Amount"), (inv.description, plain(inv.net_minor, inv.currency)),
         (f"{inv.tax_name} {inv.tax_rate_bps / 100:g} %", plain(inv.tax_minor, inv.currency)),
         ("Total", plain(inv.total_minor, inv.currency))],
        (70, 22),
        [(f"Plan: {PLANS[inv.plan].name if inv.plan in PLANS else inv.plan}; period {inv.period_start:%d %b %Y} to "
          f"{inv.period_end:%d %b %Y}. Amounts in {inv.currency}; numbered per pharmacy without gaps.", 8.5, "")])


# -- the renewal job ------------------------------------------------------------------------------


async def _tell(session: AsyncSession, tenant_id: uuid.UUID, status_: str, detail: str, *, key: str) -> None:
    for account in await tenants.accounts_with_role(session, tenant_id, "pharmacist"):
        await notifications.notify(session, tenant_id=tenant_id, account_id=account, type="subscription.status",
                                   event_key=f"{tenant_id}:{status_}:{key}",
                                   data={"status_text": STATUS_TEXT[status_], "detail": detail},
                                   link="/portal/pharmacy/subscription")


async def renew_one(session: AsyncSession, tenant_id: uuid.UUID, now: datetime | None = None) -> str:
    """Move one pharmacy's subscription on in time (in its own organization's transaction):
    renew from the payable, or fall into grace, or lapse. Safe to run as often as you like."""
    await set_context(session, tenant_id, None)
    now = now or datetime.now(UTC)
    row = await _row(session, tenant_id, lock=True)
    status_, ends, grace = row.subscription_status, row.subscription_ends_at, row.subscription_grace_until
    if status_ == "trial" and ends and ends <= now:
        await _lapse(session, row, now, "the free trial ended unpaid")
        return "expired"
    if status_ == "past_due" and grace and grace <= now:
        await _lapse(session, row, now, f"unpaid {GRACE_DAYS} days after the period ended")
        return "expired"
    due = status_ == "active" and ends is not None and ends - RENEW_AHEAD <= now and row.subscription_auto_renew
    if not (due or status_ == "past_due"):
        return "nothing due"
    plan = PLANS.get(row.subscription_plan or "")
    if plan is None or row.currency not in plan.prices:
        await _lapse(session, row, now, "no plan to renew")
        return "expired"
    invoice = (await session.execute(select(subscription_invoices).where(
        subscription_invoices.c.tenant_id == tenant_id, subscription_invoices.c.kind == "renewal",
        subscription_invoices.c.period_start == ends))).first()
    if invoice is None:
        credit = min(row.subscription_credit_minor, plan.prices[row.currency])
        invoice = await _new_invoice(
            session, row, kind="renewal", plan=plan, start=ends, end=ends + timedelta(days=plan.period_days),
            net=plan.prices[row.currency] - credit,
            description=f"{plan.name} plan, {ends:%d %b %Y} to {ends + timedelta(days=plan.period_days):%d %b %Y}"
                        + (f" (less {money(credit, row.currency)} credit)" if credit else ""))
        if credit:
            await session.execute(update(pharmacies).where(pharmacies.c.tenant_id == tenant_id).values(
                subscription_credit_minor=row.subscription_credit_minor - credit))
    elif invoice.status == "paid":
        return "renewed already"
    if await payments.pay_from_payable(session, tenant_id, invoice.currency, invoice.total_minor, str(invoice.id),
                                       memo=f"subscription invoice {invoice.number}"):
        await _settle(session, invoice, via="payable")
        return "renewed"
    if status_ == "active":
        grace_until = ends + timedelta(days=GRACE_DAYS)
        await session.execute(update(pharmacies).where(pharmacies.c.tenant_id == tenant_id).values(
            subscription_status="past_due", subscription_grace_until=grace_until, updated_at=now,
            version=row.version + 1))
        await _event(session, tenant_id, "renewal_failed", f"invoice {invoice.number}: the payable balance does not "
                                                           f"cover {money(invoice.total_minor, invoice.currency)}")
    grace_until = grace or ends + timedelta(days=GRACE_DAYS)
    await _tell(session, tenant_id, "past_due",
                f"Invoice {invoice.number} ({money(invoice.total_minor, invoice.currency)}) is unpaid. Pay it by "
                f"{grace_until:%d %b %Y} or the pharmacy is suspended from the marketplace.", key=f"{now:%Y-%m-%d}")
    return "past due"


async def _lapse(session: AsyncSession, row, now: datetime, why: str) -> None:
    await session.execute(update(pharmacies).where(pharmacies.c.tenant_id == row.tenant_id).values(
        subscription_status="expired", subscription_grace_until=None, updated_at=now, version=row.version + 1))
    await _event(session, row.tenant_id, "suspended", why)
    await _tell(session, row.tenant_id, "expired", f"The pharmacy is hidden from patients and takes no orders: {why}. "
                                                   "Pay for a plan to reopen at once.", key=f"{now:%Y-%m-%d}")


async def due_pharmacies(session: AsyncSession, now: datetime | None = None) -> list[uuid.UUID]:
    """Pharmacies whose subscription needs the renewal job's attention (as the owner)."""
    now = now or datetime.now(UTC)
    rows = (await session.execute(select(pharmacies.c.tenant_id).where(
        ((pharmacies.c.subscription_status.in_(("active", "trial")))
         & (pharmacies.c.subscription_ends_at <= now + RENEW_AHEAD))
        | (pharmacies.c.subscription_status == "past_due")))).all()
    return [r.tenant_id for r in rows]


@jobs.job("pharmacy.renew_subscriptions")
async def _renew_job(db) -> None:
    async with db.transaction(owner=True) as session:
        due = await due_pharmacies(session)
    for tenant_id in due:  # each in its own organization's transaction: one failure stops no other
        async with db.transaction(tenant_id, None) as session:
            await renew_one(session, tenant_id)


jobs.recurring("pharmacy.renew_subscriptions", 3600)
