"""Stripe's API as the official SDK speaks to it, for PaymentIntents and refunds: form-encoded
requests (``metadata[payment_id]=…``) with ``Authorization: Bearer sk_…`` and ``Idempotency-Key``,
JSON objects out (``{"id": "pi_…", "object": "payment_intent", …}``), errors as
``{"error": {"type", "message"}}``. ``pay``/``decline`` play the customer on Stripe.js and return
what Stripe then POSTs to the webhook endpoint: a JSON event signed with ``Stripe-Signature:
t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` under the endpoint's secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.standins.base import Handler, Received, StandIn


def _form(body: bytes) -> dict[str, Any]:
    """Stripe's bracket notation back into nested dicts (one level is all the adapter sends)."""
    out: dict[str, Any] = {}
    for k, v in parse_qsl(body.decode(), keep_blank_values=True):
        if "[" in k:
            outer, inner = k.split("[", 1)
            out.setdefault(outer, {})[inner.rstrip("]")] = v
        else:
            out[k] = v
    return out


class StripeStandIn(StandIn):
    def __init__(self) -> None:
        self.api_key = f"sk_test_{secrets.token_hex(12)}"
        self.webhook_secret = f"whsec_{secrets.token_hex(16)}"
        self.intents: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self._idempotent: dict[str, Any] = {}
        super().__init__()

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/v1/payment_intents", self.create_intent), ("GET", "/v1/payment_intents", self.list_intents),
                ("POST", "/v1/refunds", self.create_refund)]

    def _authorized(self, received: Received) -> Response | None:
        if received.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}},
                                status_code=401)
        return None

    def _once(self, received: Received, make) -> Response:
        key = received.headers.get("idempotency-key")
        if key and key in self._idempotent:
            return JSONResponse(self._idempotent[key])
        obj = make()
        if isinstance(obj, Response):
            return obj
        if key:
            self._idempotent[key] = obj
        return JSONResponse(obj)

    async def create_intent(self, request: Request, received: Received) -> Response:
        if (refused := self._authorized(received)) is not None:
            return refused
        form = _form(received.body)

        def make():
            if not form.get("amount", "").isdigit() or int(form["amount"]) < 1:
                return JSONResponse({"error": {"type": "invalid_request_error", "param": "amount",
                                               "message": "Invalid positive integer"}}, status_code=400)
            pi = f"pi_{secrets.token_hex(12)}"
            self.intents[pi] = {"id": pi, "object": "payment_intent", "amount": int(form["amount"]),
                                "amount_received": 0, "currency": form["currency"], "status": "requires_payment_method",
                                "client_secret": f"{pi}_secret_{secrets.token_hex(8)}",
                                "metadata": form.get("metadata", {}), "description": form.get("description"),
                                "latest_charge": None, "created": int(time.time()), "livemode": False}
            return self.intents[pi]

        return self._once(received, make)

    async def list_intents(self, request: Request, received: Received) -> Response:
        if (refused := self._authorized(received)) is not None:
            return refused
        gte = int(received.query.get("created[gte]", 0))
        expand = "data.latest_charge" in [v for k, v in request.query_params.multi_items() if k.startswith("expand")]
        data = []
        for pi in self.intents.values():
            if pi["created"] >= gte:
                item = dict(pi)
                if expand and pi["latest_charge"]:
                    item["latest_charge"] = {"id": pi["latest_charge"], "object": "charge",
                                             "amount_refunded": pi.get("amount_refunded", 0)}
                data.append(item)
        return JSONResponse({"object": "list", "url": "/v1/payment_intents", "has_more": False, "data": data})

    async def create_refund(self, request: Request, received: Received) -> Response:
        if (refused := self._authorized(received)) is not None:
            return refused
        form = _form(received.body)

        def make():
            pi = self.intents.get(form.get("payment_intent", ""))
            if pi is None or pi["status"] != "succeeded":
                return JSONResponse({"error": {"type": "invalid_request_error",
                                               "message": "This PaymentIntent has no successful charge to refund."}},
                                    status_code=400)
            amount = int(form.get("amount") or pi["amount"] - pi.get("amount_refunded", 0))
            if pi.get("amount_refunded", 0) + amount > pi["amount"]:
                return JSONResponse({"error": {"type": "invalid_request_error", "code": "amount_too_large",
                                               "message": "Refund amount is greater than unrefunded amount"}},
                                    status_code=400)
            pi["amount_refunded"] = pi.get("amount_refunded", 0) + amount
            re_id = f"re_{secrets.token_hex(12)}"
            self.refunds[re_id] = {"id": re_id, "object": "refund", "amount": amount, "currency": pi["currency"],
                                   "payment_intent": pi["id"], "charge": pi["latest_charge"], "status": "succeeded",
                                   "metadata": form.get("metadata", {})}
            return self.refunds[re_id]

        return self._once(received, make)

    # -- what Stripe sends the merchant ---------------------------------------------------------

    def event(self, type_: str, obj: dict[str, Any], *, secret: str | None = None,
              at: int | None = None) -> tuple[bytes, dict[str, str]]:
        body = json.dumps({"id": f"evt_{secrets.token_hex(12)}", "object": "event", "api_version": "2024-06-20",
                           "created": int(time.time()), "type": type_, "livemode": False,
                           "data": {"object": obj}}).encode()
        t = int(time.time()) if at is None else at
        mac = hmac.new((secret or self.webhook_secret).encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return body, {"Stripe-Signature": f"t={t},v1={mac}", "Content-Type": "application/json"}

    def pay(self, pi: str) -> tuple[bytes, dict[str, str]]:
        intent = self.intents[pi]
        intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=f"ch_{secrets.token_hex(10)}")
        return self.event("payment_intent.succeeded", dict(intent))

    def decline(self, pi: str) -> tuple[bytes, dict[str, str]]:
        intent = self.intents[pi]
        intent.update(status="requires_payment_method",
                      last_payment_error={"code": "card_declined", "message": "Your card was declined."})
        return self.event("payment_intent.payment_failed", dict(intent))
