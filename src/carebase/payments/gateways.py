"""Payment providers behind one small interface.

* ``sandbox`` (built in): a hosted checkout page at ``/pay/sandbox/<ref>`` where the payer pays or
  fails; its outcome comes back as a webhook signed the way Stripe signs them
  (``Sandbox-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``) with Stripe's
  event shapes (``payment_intent.succeeded`` …). It keeps its own books
  (``sandbox_gateway_charges``), which reconciliation compares with ours as it would a real
  provider's list.

A gateway creates a charge (returns its id and where the payer goes), refunds part or all of one,
reads its webhooks (signature first) and lists its charges for reconciliation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.payments.models import sandbox_charges
from carebase.platform import crypto
from carebase.platform.errors import NotFound, ValidationFailed
from carebase.settings import Settings

SIGNATURE_TOLERANCE_SECONDS = 300  # Stripe's default: an older signed event is a replay


@dataclass(frozen=True)
class Charge:
    """What the gateway is asked to collect."""
    payment_id: str
    amount_minor: int
    currency: str
    description: str


@dataclass(frozen=True)
class Created:
    ref: str  # the provider's id for it (PaymentIntent id)
    checkout_url: str | None  # where the payer completes it (hosted page), if the provider has one


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    type: str  # payment.processing | payment.succeeded | payment.failed | refund.succeeded | refund.failed | other
    ref: str | None  # the payment's provider ref
    amount_minor: int | None
    currency: str | None
    payment_ref: str | None = None  # the charge that captured it
    refund_ref: str | None = None
    failure_reason: str | None = None
    provider_type: str = ""


@dataclass(frozen=True)
class ProviderCharge:
    ref: str
    status: str  # succeeded | failed | pending
    amount_minor: int
    refunded_minor: int
    currency: str


class Gateway(Protocol):
    name: str

    async def create(self, session: AsyncSession, charge: Charge) -> Created: ...

    async def refund(self, session: AsyncSession, ref: str, amount_minor: int, refund_id: str) -> str: ...

    def read_webhook(self, body: bytes, headers: dict[str, str]) -> WebhookEvent: ...

    async def charges(self, session: AsyncSession, since: datetime) -> list[ProviderCharge]: ...


# -- Stripe's webhook signature scheme ----------------------------------------------------------


def stripe_style_signature(secret: bytes, body: bytes, at: int | None = None) -> str:
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def check_stripe_style_signature(secret: bytes, body: bytes, header: str | None,
                                 tolerance: int = SIGNATURE_TOLERANCE_SECONDS) -> None:
    """Refuse (400) a missing, malformed, wrong or stale signature; nothing is read before this."""
    if not header:
        raise ValidationFailed("The webhook has no signature header.", code="bad-signature", status=400)
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        k, _, v = item.strip().partition("=")
        parts.setdefault(k, []).append(v)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        raise ValidationFailed("The webhook signature has no timestamp.", code="bad-signature", status=400) from None
    if abs(time.time() - t) > tolerance:
        raise ValidationFailed("The webhook signature is too old (a replay?).", code="stale-signature", status=400)
    expected = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, v) for v in parts.get("v1", [])):
        raise ValidationFailed("The webhook signature does not match: it was not sent by the payment provider.",
                               code="bad-signature", status=400)


# Stripe's event types -> ours.
_STRIPE_TYPES = {"payment_intent.processing": "payment.processing", "payment_intent.succeeded": "payment.succeeded",
                 "payment_intent.payment_failed": "payment.failed", "payment_intent.canceled": "payment.failed",
                 "refund.updated": "refund.updated", "charge.refund.updated": "refund.updated"}


def read_stripe_event(body: bytes) -> WebhookEvent:
    try:
        event: dict[str, Any] = json.loads(body)
        obj = event["data"]["object"]
        event_id, provider_type = str(event["id"]), str(event["type"])
    except (ValueError, KeyError, TypeError):
        raise ValidationFailed("The webhook is not an event: {\"id\", \"type\", \"data\": {\"object\"}}.",
                               code="bad-webhook", status=400) from None
    kind = _STRIPE_TYPES.get(provider_type, "other")
    if kind == "refund.updated":
        status = obj.get("status")
        kind = {"succeeded": "refund.succeeded", "failed": "refund.failed"}.get(status, "other")
        return WebhookEvent(event_id, kind, obj.get("payment_intent"), obj.get("amount"),
                            (obj.get("currency") or "").upper() or None, refund_ref=obj.get("id"),
                            failure_reason=obj.get("failure_reason"), provider_type=provider_type)
    error = obj.get("last_payment_error") or {}
    return WebhookEvent(event_id, kind, obj.get("id"), obj.get("amount_received") or obj.get("amount"),
                        (obj.get("currency") or "").upper() or None, payment_ref=obj.get("latest_charge"),
                        failure_reason=error.get("message") or obj.get("cancellation_reason"),
                        provider_type=provider_type)


# -- the sandbox --------------------------------------------------------------------------------


def webhook_secret(settings: Settings) -> bytes:
    if settings.payment_webhook_secret is not None:
        return settings.payment_webhook_secret.get_secret_value().encode()
    return crypto.keyring().derive("payment-webhooks")


class SandboxGateway:
    """The built-in provider: its books are a table in the same database, its checkout a page of
    this server, its webhooks signed like Stripe's."""

    name = "sandbox"
    SIGNATURE_HEADER = "sandbox-signature"

    def __init__(self, settings: Settings):
        self.secret = webhook_secret(settings)

    async def create(self, session: AsyncSession, charge: Charge) -> Created:
        ref = f"sbx_pi_{secrets.token_urlsafe(18)}"
        await session.execute(sandbox_charges.insert().values(
            ref=ref, amount_minor=charge.amount_minor, currency=charge.currency, status="requires_payment",
            refunded_minor=0, metadata={"payment_id": charge.payment_id, "description": charge.description}))
        return Created(ref, f"/pay/sandbox/{ref}")

    async def refund(self, session: AsyncSession, ref: str, amount_minor: int, refund_id: str) -> str:
        row = (await session.execute(select(sandbox_charges).where(sandbox_charges.c.ref == ref)
                                     .with_for_update())).first()
        if row is None or row.status != "succeeded" or row.refunded_minor + amount_minor > row.amount_minor:
            raise ValidationFailed("The sandbox gateway refuses this refund: more than was captured.",
                                   code="provider-refused-refund", status=409)
        await session.execute(update(sandbox_charges).where(sandbox_charges.c.ref == ref).values(
            refunded_minor=row.refunded_minor + amount_minor))
        return f"sbx_re_{refund_id.replace('-', '')[:24]}"

    def read_webhook(self, body: bytes, headers: dict[str, str]) -> WebhookEvent:
        check_stripe_style_signature(self.secret, body, headers.get(self.SIGNATURE_HEADER))
        return read_stripe_event(body)

    async def charges(self, session: AsyncSession, since: datetime) -> list[ProviderCharge]:
        rows = (await session.execute(select(sandbox_charges).where(sandbox_charges.c.created_at >= since))).all()
        return [ProviderCharge(r.ref, {"requires_payment": "pending"}.get(r.status, r.status), r.amount_minor,
                               r.refunded_minor, r.currency) for r in rows]

    # The hosted page's side: what the payer did, and the signed event that tells the merchant.
    async def charge(self, session: AsyncSession, ref: str) -> Any:
        row = (await session.execute(select(sandbox_charges).where(sandbox_charges.c.ref == ref))).first()
        if row is None:
            raise NotFound("No such sandbox payment.", code="payment-not-found")
        return row

    async def settle(self, session: AsyncSession, ref: str, outcome: str) -> tuple[bytes, dict[str, str]] | None:
        """The payer paid (``pay``) or the card was declined (``fail``): update the sandbox's books
        and return the signed webhook (body, headers), or None when it was settled already."""
        row = (await session.execute(select(sandbox_charges).where(sandbox_charges.c.ref == ref)
                                     .with_for_update())).first()
        if row is None:
            raise NotFound("No such sandbox payment.", code="payment-not-found")
        if row.status == "succeeded":
            return None
        status = "succeeded" if outcome == "pay" else "failed"
        await session.execute(update(sandbox_charges).where(sandbox_charges.c.ref == ref).values(status=status))
        obj: dict[str, Any] = {"id": ref, "object": "payment_intent", "amount": row.amount_minor,
                               "currency": row.currency.lower(), "status": status,
                               "metadata": row.metadata}
        if status == "succeeded":
            obj.update(amount_received=row.amount_minor, latest_charge=f"sbx_ch_{secrets.token_urlsafe(12)}")
        else:
            obj.update(amount_received=0, last_payment_error={"code": "card_declined",
                                                              "message": "The card was declined (sandbox)."})
        body = json.dumps({"id": f"evt_{secrets.token_urlsafe(16)}", "object": "event", "created": int(time.time()),
                           "type": "payment_intent.succeeded" if status == "succeeded"
                           else "payment_intent.payment_failed", "data": {"object": obj}}).encode()
        return body, {self.SIGNATURE_HEADER: stripe_style_signature(self.secret, body)}


PROVIDERS = ("sandbox",)


def gateway(settings: Settings, name: str | None = None) -> Gateway:
    name = name or settings.payment_provider
    if name == "sandbox":
        return SandboxGateway(settings)
    raise NotFound(f"No payment provider {name!r} here (use one of {', '.join(PROVIDERS)}).",
                   code="unknown-provider")
