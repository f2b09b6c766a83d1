"""Razorpay's API as the official SDK speaks to it: HTTP Basic auth (key id, key secret), JSON in
and out; ``POST /v1/orders``, ``POST /v1/payments/{id}/refund``, ``GET /v1/payments``; errors as
``{"error": {"code": "BAD_REQUEST_ERROR", "description"}}``. ``pay`` plays the customer on
Razorpay Checkout: it returns what Checkout hands the browser (``razorpay_payment_id`` and
``razorpay_signature``, HMAC-SHA256 of "order_id|payment_id" under the key secret) and the webhook
Razorpay POSTs (``X-Razorpay-Signature``: HMAC-SHA256 of the body under the webhook secret, and
``X-Razorpay-Event-Id``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.standins.base import Handler, Received, StandIn


def _error(description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": {"code": "BAD_REQUEST_ERROR", "description": description, "source": "business",
                                   "reason": "input_validation_failed"}}, status_code=status)


class RazorpayStandIn(StandIn):
    def __init__(self) -> None:
        self.key_id = f"rzp_test_{secrets.token_hex(7)}"
        self.key_secret = secrets.token_hex(12)
        self.webhook_secret = secrets.token_hex(12)
        self.orders: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        super().__init__()

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/v1/orders", self.create_order), ("POST", "/v1/payments/{payment_id}/refund", self.refund),
                ("GET", "/v1/payments", self.list_payments)]

    def _authorized(self, received: Received) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.key_id}:{self.key_secret}".encode()).decode()
        return received.headers.get("authorization") == expected

    async def create_order(self, request: Request, received: Received) -> Response:
        if not self._authorized(received):
            return _error("The api key provided is invalid", 401)
        body = received.json()
        if not isinstance(body.get("amount"), int) or body["amount"] < 100:
            return _error("The amount must be atleast INR 1.00")
        order_id = f"order_{secrets.token_hex(7)}"
        self.orders[order_id] = {"id": order_id, "entity": "order", "amount": body["amount"], "amount_paid": 0,
                                 "amount_due": body["amount"], "currency": body["currency"],
                                 "receipt": body.get("receipt"), "status": "created", "attempts": 0,
                                 "notes": body.get("notes") or {}, "created_at": int(time.time())}
        return JSONResponse(self.orders[order_id])

    async def refund(self, request: Request, received: Received) -> Response:
        if not self._authorized(received):
            return _error("The api key provided is invalid", 401)
        pay = self.payments.get(request.path_params["payment_id"])
        if pay is None or pay["status"] not in ("captured", "refunded"):
            return _error("The payment has not been captured")
        amount = received.json().get("amount") or pay["amount"] - pay["amount_refunded"]
        if pay["amount_refunded"] + amount > pay["amount"]:
            return _error("The refund amount provided is greater than amount captured")
        pay["amount_refunded"] += amount
        if pay["amount_refunded"] == pay["amount"]:
            pay["status"] = "refunded"
        return JSONResponse({"id": f"rfnd_{secrets.token_hex(7)}", "entity": "refund", "amount": amount,
                             "currency": pay["currency"], "payment_id": pay["id"], "status": "processed",
                             "created_at": int(time.time())})

    async def list_payments(self, request: Request, received: Received) -> Response:
        if not self._authorized(received):
            return _error("The api key provided is invalid", 401)
        since = int(received.query.get("from", 0))
        items = [p for p in self.payments.values() if p["created_at"] >= since]
        skip, count = int(received.query.get("skip", 0)), int(received.query.get("count", 10))
        page = items[skip:skip + count]
        return JSONResponse({"entity": "collection", "count": len(page), "items": page})

    # -- Checkout and what Razorpay sends the merchant -------------------------------------------

    def webhook(self, kind: str, payload: dict[str, Any], *, secret: str | None = None) -> tuple[bytes, dict[str, str]]:
        body = json.dumps({"entity": "event", "account_id": "acc_standin", "event": kind,
                           "contains": list(payload), "payload": payload, "created_at": int(time.time())}).encode()
        signature = hmac.new((secret or self.webhook_secret).encode(), body, hashlib.sha256).hexdigest()
        return body, {"X-Razorpay-Signature": signature, "X-Razorpay-Event-Id": f"evt_{secrets.token_hex(7)}",
                      "Content-Type": "application/json"}

    def pay(self, order_id: str, *, fail: bool = False) -> tuple[dict[str, str], tuple[bytes, dict[str, str]]]:
        """The customer pays on Checkout: (what the browser gets, the webhook Razorpay sends)."""
        order = self.orders[order_id]
        pay_id = f"pay_{secrets.token_hex(7)}"
        self.payments[pay_id] = pay = {
            "id": pay_id, "entity": "payment", "amount": order["amount"], "currency": order["currency"],
            "status": "failed" if fail else "captured", "order_id": order_id, "method": "upi", "captured": not fail,
            "amount_refunded": 0, "error_description": "Payment failed because the UPI PIN was wrong" if fail else None,
            "created_at": int(time.time())}
        order["attempts"] += 1
        if not fail:
            order.update(status="paid", amount_paid=order["amount"], amount_due=0)
        signature = hmac.new(self.key_secret.encode(), f"{order_id}|{pay_id}".encode(), hashlib.sha256).hexdigest()
        checkout = {"razorpay_order_id": order_id, "razorpay_payment_id": pay_id, "razorpay_signature": signature}
        return checkout, self.webhook("payment.failed" if fail else "payment.captured",
                                      {"payment": {"entity": dict(pay)}})
