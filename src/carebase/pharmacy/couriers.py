"""Delivery partners: who carries a packed order to the patient.

* ``local``: the built-in courier (demo, small pharmacies with their own rider). Booking is
  immediate; the order is then moved on by itself, shipped → out for delivery → delivered, one
  step every ``local_courier_step_seconds`` (a job), or by the pharmacy through the API.
* ``borzo``: Borzo's business API (same-day couriers in India): ``POST {base}/create-order``
  with the ``X-DV-Auth-Token`` header; status callbacks are POSTed to
  ``/api/v1/couriers/borzo/callback`` with ``X-DV-Signature``, the HMAC-SHA256 (hex) of the raw
  body under the callback secret. Tested against a local stand-in that speaks this format.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from carebase.platform.errors import Conflict, Forbidden, NotFound, ServiceUnavailable, ValidationFailed
from carebase.settings import Settings

PROVIDERS = ("local", "borzo")


@dataclass(frozen=True)
class Parcel:
    """What a courier needs: where from, where to, whom to call, what to collect."""
    reference: str  # the order number
    pickup_name: str
    pickup_address: str
    pickup_phone: str | None
    drop_name: str
    drop_address: str
    drop_phone: str | None
    cash_to_collect_minor: int
    currency: str
    description: str


@dataclass(frozen=True)
class Booking:
    ref: str
    tracking_url: str | None


class Courier(Protocol):
    name: str

    async def book(self, parcel: Parcel) -> Booking: ...


class LocalCourier:
    name = "local"

    async def book(self, parcel: Parcel) -> Booking:
        return Booking(f"LOCAL-{parcel.reference}", None)


# Borzo's delivery statuses (a point's "delivery" in the callback) -> our order status.
BORZO_STATUS = {"parcel_picked_up": "shipped", "courier_departed": "shipped", "active": "out_for_delivery",
                "courier_arrived": "out_for_delivery", "finished": "delivered"}


def _money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


class BorzoCourier:
    name = "borzo"

    def __init__(self, settings: Settings):
        if not settings.courier_base_url or not settings.courier_api_token:
            raise ValueError("courier_provider=borzo needs CAREBASE_COURIER_BASE_URL and CAREBASE_COURIER_API_TOKEN")
        self.base = settings.courier_base_url.rstrip("/")
        self.token = settings.courier_api_token.get_secret_value()
        self.timeout = settings.courier_timeout_seconds

    async def book(self, parcel: Parcel) -> Booking:
        body = {"matter": parcel.description[:200], "payment_method": "cash",
                "points": [{"address": parcel.pickup_address,
                            "contact_person": {"name": parcel.pickup_name, "phone": parcel.pickup_phone or ""}},
                           {"address": parcel.drop_address, "client_order_id": parcel.reference,
                            "contact_person": {"name": parcel.drop_name, "phone": parcel.drop_phone or ""},
                            "taking_amount": _money(parcel.cash_to_collect_minor)}]}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                r = await client.post(f"{self.base}/create-order", json=body, headers={"X-DV-Auth-Token": self.token})
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"The courier could not be reached ({type(exc).__name__}); try again.",
                                     code="courier-unavailable") from None
        try:
            answer = r.json()
        except ValueError:
            answer = {}
        if r.status_code >= 500 or not isinstance(answer, dict):
            raise ServiceUnavailable(f"The courier answered {r.status_code}; try again.", code="courier-unavailable")
        if not answer.get("is_successful"):
            problems = ", ".join(map(str, answer.get("errors") or [])) or f"HTTP {r.status_code}"
            raise Conflict(f"The courier refused the booking: {problems}.", code="courier-refused")
        order = answer.get("order") or {}
        points = order.get("points") or [{}, {}]
        return Booking(str(order.get("order_id")), (points[-1] or {}).get("tracking_url"))


def courier(settings: Settings) -> Courier:
    if settings.courier_provider == "local":
        return LocalCourier()
    if settings.courier_provider == "borzo":
        try:
            return BorzoCourier(settings)
        except ValueError as exc:
            raise ServiceUnavailable(f"The courier is not set up on this server: {exc}.",
                                     code="courier-not-configured") from None
    raise ValueError(f"unknown courier_provider {settings.courier_provider!r}: use one of {', '.join(PROVIDERS)}")


@dataclass(frozen=True)
class CourierUpdate:
    ref: str
    status: str | None  # our order status, or None when the courier's news moves nothing
    courier_status: str


def borzo_callback(settings: Settings, body: bytes, signature: str | None) -> CourierUpdate:
    """Check a callback's signature, then read which booking it is about and where it stands."""
    secret = settings.courier_callback_secret
    if secret is None or settings.courier_provider != "borzo":
        # 404, not 503: a courier would retry a 503 for days against an install that never meant to use it.
        raise NotFound("Borzo callbacks are not enabled here: set CAREBASE_COURIER_PROVIDER=borzo and "
                       "CAREBASE_COURIER_CALLBACK_SECRET.", code="webhook-not-configured")
    expected = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
    if not signature or not hmac.compare_digest(expected, signature.strip().lower()):
        raise Forbidden("The X-DV-Signature is missing or does not match: this request was not sent by the courier.",
                        code="bad-signature")
    try:
        payload: dict[str, Any] = json.loads(body)
        order = payload["order"]
        ref = str(order["order_id"])
    except (ValueError, KeyError, TypeError):
        raise ValidationFailed("A callback names its order: {\"order\": {\"order_id\": ...}}.",
                               code="bad-callback") from None
    delivery = payload.get("delivery") or {}
    status = str(delivery.get("status") or order.get("status") or "")
    return CourierUpdate(ref, BORZO_STATUS.get(status), status)
