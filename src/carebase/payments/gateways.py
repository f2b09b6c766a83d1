"""Payment providers behind one small interface.

* ``stripe``: Stripe's PaymentIntents through the official ``stripe`` SDK (async, over httpx):
  the payer's browser confirms with the intent's ``client_secret`` (Stripe.js); webhooks carry
  ``Stripe-Signature``, checked by the SDK; refunds with the refund's id as idempotency key.
* ``razorpay``: Razorpay orders through the official ``razorpay`` SDK (synchronous: run in a
  thread): Razorpay Checkout pays the order (UPI, cards, netbanking, wallets) and hands the
  browser ``razorpay_payment_id`` and ``razorpay_signature`` (HMAC-SHA256 of "order|payment" under
  the key secret), which ``confirm`` checks; webhooks carry ``X-Razorpay-Signature`` (HMAC-SHA256
  of the body under the webhook secret) and ``X-Razorpay-Event-Id``.

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
from carebase.platform.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
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
    ref: str  # the provider's id for it (PaymentIntent id, Razorpay order id)
    checkout_url: str | None  # where the payer completes it (hosted page), if the provider has one
    client_secret: str | None = None  # what the payer's browser needs (Stripe.js confirms with it)


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

    async def refund(self, session: AsyncSession, ref: str, payment_ref: str | None, amount_minor: int,
                     refund_id: str) -> str: ...

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

    async def refund(self, session: AsyncSession, ref: str, payment_ref: str | None, amount_minor: int,
                     refund_id: str) -> str:
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


# -- Stripe -------------------------------------------------------------------------------------


def _unavailable(provider: str, exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(f"The payment provider ({provider}) could not be reached ({type(exc).__name__}); "
                              "nothing was charged, try again.", code="provider-unavailable")


class StripeGateway:
    name = "stripe"
    SIGNATURE_HEADER = "stripe-signature"

    def __init__(self, settings: Settings):
        import stripe

        if settings.stripe_api_key is None or settings.stripe_webhook_secret is None:
            raise ValueError("payment_provider=stripe needs CAREBASE_STRIPE_API_KEY and CAREBASE_STRIPE_WEBHOOK_SECRET")
        self.stripe = stripe
        base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
        self.client = stripe.StripeClient(settings.stripe_api_key.get_secret_value(), base_addresses=base,
                                          http_client=stripe.HTTPXClient(timeout=settings.payment_timeout_seconds),
                                          max_network_retries=0)
        self.webhook_secret = settings.stripe_webhook_secret.get_secret_value()

    async def create(self, session: AsyncSession, charge: Charge) -> Created:
        try:
            intent = await self.client.v1.payment_intents.create_async(
                params={"amount": charge.amount_minor, "currency": charge.currency.lower(),
                        "description": charge.description[:200], "metadata": {"payment_id": charge.payment_id},
                        "automatic_payment_methods": {"enabled": True}},
                options={"idempotency_key": f"create-{charge.payment_id}"})
        except self.stripe.StripeError as exc:
            raise self._refused(exc) from None
        return Created(intent.id, None, intent.client_secret)

    def _refused(self, exc: Exception) -> Exception:
        if isinstance(exc, self.stripe.APIConnectionError) or getattr(exc, "http_status", 0) in (None, 0) or \
                (getattr(exc, "http_status", 0) or 0) >= 500:
            return _unavailable("Stripe", exc)
        message = getattr(exc, "user_message", None) or "refused"
        return Conflict(f"Stripe refused: {message}", code="provider-refused")

    async def refund(self, session: AsyncSession, ref: str, payment_ref: str | None, amount_minor: int,
                     refund_id: str) -> str:
        try:
            refund = await self.client.v1.refunds.create_async(
                params={"payment_intent": ref, "amount": amount_minor, "metadata": {"refund_id": refund_id}},
                options={"idempotency_key": f"refund-{refund_id}"})
        except self.stripe.StripeError as exc:
            raise self._refused(exc) from None
        return refund.id

    def read_webhook(self, body: bytes, headers: dict[str, str]) -> WebhookEvent:
        try:
            self.stripe.WebhookSignature.verify_header(body.decode("utf-8", "replace"),
                                                       headers.get(self.SIGNATURE_HEADER), self.webhook_secret,
                                                       SIGNATURE_TOLERANCE_SECONDS)
        except self.stripe.SignatureVerificationError:
            raise ValidationFailed("The Stripe-Signature is missing, wrong or too old: this was not sent by Stripe.",
                                   code="bad-signature", status=400) from None
        return read_stripe_event(body)

    async def charges(self, session: AsyncSession, since: datetime) -> list[ProviderCharge]:
        out, after = [], None
        try:
            while True:
                params: dict[str, Any] = {"created": {"gte": int(since.timestamp())}, "limit": 100,
                                          "expand": ["data.latest_charge"]}
                if after:
                    params["starting_after"] = after
                page = await self.client.v1.payment_intents.list_async(params=params)
                for pi in (item.to_dict() for item in page.data):
                    status = {"succeeded": "succeeded", "canceled": "failed"}.get(pi["status"], "pending")
                    charge = pi.get("latest_charge")
                    refunded = int(charge.get("amount_refunded", 0)) if isinstance(charge, dict) else 0
                    out.append(ProviderCharge(pi["id"], status, pi["amount"], refunded, pi["currency"].upper()))
                if not page.has_more or not page.data:
                    return out
                after = page.data[-1].id
        except self.stripe.StripeError as exc:
            raise self._refused(exc) from None


# -- Razorpay -----------------------------------------------------------------------------------

# Razorpay's webhook events -> ours.
_RAZORPAY_TYPES = {"payment.authorized": "payment.processing", "payment.captured": "payment.succeeded",
                   "order.paid": "payment.succeeded", "payment.failed": "payment.failed",
                   "refund.processed": "refund.succeeded", "refund.failed": "refund.failed"}


class RazorpayGateway:
    name = "razorpay"
    SIGNATURE_HEADER = "x-razorpay-signature"

    def __init__(self, settings: Settings):
        import razorpay

        if not settings.razorpay_key_id or settings.razorpay_key_secret is None or \
                settings.razorpay_webhook_secret is None:
            raise ValueError("payment_provider=razorpay needs CAREBASE_RAZORPAY_KEY_ID, CAREBASE_RAZORPAY_KEY_SECRET "
                             "and CAREBASE_RAZORPAY_WEBHOOK_SECRET")
        self.razorpay = razorpay
        options = {"base_url": settings.razorpay_api_base} if settings.razorpay_api_base else {}
        self.client = razorpay.Client(auth=(settings.razorpay_key_id, settings.razorpay_key_secret.get_secret_value()),
                                      **options)
        self.client.set_app_details({"title": "Carebase", "version": "1"})
        self.timeout = settings.payment_timeout_seconds
        self.webhook_secret = settings.razorpay_webhook_secret.get_secret_value()

    async def _call(self, fn, *args):
        """The SDK is synchronous (requests): off the event loop, with the configured timeout."""
        import asyncio

        import requests

        try:
            return await asyncio.to_thread(fn, *args, timeout=self.timeout)
        except (requests.RequestException, self.razorpay.errors.ServerError, self.razorpay.errors.GatewayError) as exc:
            raise _unavailable("Razorpay", exc) from None
        except self.razorpay.errors.BadRequestError as exc:
            raise Conflict(f"Razorpay refused: {exc}", code="provider-refused") from None

    async def create(self, session: AsyncSession, charge: Charge) -> Created:
        order = await self._call(self.client.order.create, {
            "amount": charge.amount_minor, "currency": charge.currency, "receipt": charge.payment_id[:40],
            "notes": {"payment_id": charge.payment_id, "description": charge.description[:200]}})
        return Created(order["id"], None)

    async def refund(self, session: AsyncSession, ref: str, payment_ref: str | None, amount_minor: int,
                     refund_id: str) -> str:
        # Razorpay refunds a payment (pay_…), not an order.
        if not payment_ref:
            raise Conflict("Razorpay has not told us which payment captured this order yet: try the refund later.",
                           code="provider-refused")
        refund = await self._call(self.client.payment.refund, payment_ref, {"amount": amount_minor,
                                                                   "receipt": refund_id[:40],
                                                                   "notes": {"refund_id": refund_id}})
        return refund["id"]

    def check_payment_signature(self, order_ref: str, payment_ref: str, signature: str) -> None:
        try:
            self.client.utility.verify_payment_signature({"razorpay_order_id": order_ref,
                                                          "razorpay_payment_id": payment_ref,
                                                          "razorpay_signature": signature})
        except self.razorpay.errors.SignatureVerificationError:
            raise ValidationFailed("The Razorpay payment signature does not match this order and payment.",
                                   code="bad-signature", status=400) from None

    def read_webhook(self, body: bytes, headers: dict[str, str]) -> WebhookEvent:
        signature = headers.get(self.SIGNATURE_HEADER)
        expected = hmac.new(self.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        if not signature or not hmac.compare_digest(expected, signature.strip()):
            raise ValidationFailed("The X-Razorpay-Signature is missing or wrong: this was not sent by Razorpay.",
                                   code="bad-signature", status=400)
        try:
            event: dict[str, Any] = json.loads(body)
            kind = str(event["event"])
            payload = event.get("payload") or {}
        except (ValueError, KeyError, TypeError):
            raise ValidationFailed("The webhook is not a Razorpay event.", code="bad-webhook", status=400) from None
        event_id = headers.get("x-razorpay-event-id") or hashlib.sha256(body).hexdigest()
        ours = _RAZORPAY_TYPES.get(kind, "other")
        pay = ((payload.get("payment") or {}).get("entity")) or {}
        if ours.startswith("refund."):
            refund = ((payload.get("refund") or {}).get("entity")) or {}
            return WebhookEvent(event_id, ours, pay.get("order_id"), refund.get("amount"), refund.get("currency"),
                                payment_ref=refund.get("payment_id"), refund_ref=refund.get("id"),
                                failure_reason=refund.get("status"), provider_type=kind)
        order = ((payload.get("order") or {}).get("entity")) or {}
        return WebhookEvent(event_id, ours, pay.get("order_id") or order.get("id"),
                            pay.get("amount") if pay else order.get("amount_paid"),
                            (pay.get("currency") or order.get("currency") or "").upper() or None,
                            payment_ref=pay.get("id"), failure_reason=pay.get("error_description"),
                            provider_type=kind)

    async def charges(self, session: AsyncSession, since: datetime) -> list[ProviderCharge]:
        out: dict[str, ProviderCharge] = {}
        skip = 0
        while True:
            page = await self._call(self.client.payment.all, {"from": int(since.timestamp()), "count": 100,
                                                              "skip": skip})
            items = page.get("items") or []
            for p in items:
                status = {"captured": "succeeded", "refunded": "succeeded", "failed": "failed"}.get(p["status"],
                                                                                                  "pending")
                if p.get("order_id") in out and status != "succeeded":
                    continue  # a failed try before the one that went through
                out[p["order_id"]] = ProviderCharge(p["order_id"], status, p["amount"], p.get("amount_refunded", 0),
                                                    p["currency"])
            if len(items) < 100:
                return list(out.values())
            skip += 100


PROVIDERS = ("sandbox", "stripe", "razorpay")


def gateway(settings: Settings, name: str | None = None) -> Gateway:
    name = name or settings.payment_provider
    try:
        if name == "sandbox":
            return SandboxGateway(settings)
        if name == "stripe":
            return StripeGateway(settings)
        if name == "razorpay":
            return RazorpayGateway(settings)
    except ValueError as exc:
        raise ServiceUnavailable(f"That payment provider is not set up on this server: {exc}.",
                                 code="provider-not-configured") from None
    raise NotFound(f"No payment provider {name!r} here (use one of {', '.join(PROVIDERS)}).",
                   code="unknown-provider")
