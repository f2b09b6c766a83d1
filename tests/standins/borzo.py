"""Borzo's business API as Carebase's courier adapter speaks to it: ``POST /create-order`` with
the ``X-DV-Auth-Token`` header, a pickup and a drop point in, ``{"is_successful": true,
"order": {"order_id", "status", "points": [..., {"tracking_url"}]}}`` out, and
``{"is_successful": false, "errors": [...]}`` on a bad token or order. ``callback`` sends what
Borzo sends back: a JSON status event signed with ``X-DV-Signature`` (HMAC-SHA256, hex, of the
raw body under the callback secret).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.standins.base import Handler, Received, StandIn


class BorzoStandIn(StandIn):
    def __init__(self) -> None:
        self.token = secrets.token_hex(16)
        self.callback_secret = secrets.token_hex(16)
        self._ids = itertools.count(700_001)
        super().__init__()

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/api/business/1.6/create-order", self.create_order)]

    @property
    def base_url(self) -> str:
        return f"{self.url}/api/business/1.6"

    async def create_order(self, request: Request, received: Received) -> Response:
        if received.headers.get("x-dv-auth-token") != self.token:
            return JSONResponse({"is_successful": False, "errors": ["invalid_auth_token"]}, status_code=401)
        body = received.json()
        points = body.get("points")
        if not isinstance(points, list) or len(points) < 2 or not all(p.get("address") for p in points):
            return JSONResponse({"is_successful": False, "errors": ["invalid_parameters"],
                                 "parameter_errors": {"points": ["required"]}}, status_code=400)
        order_id = next(self._ids)
        return JSONResponse({"is_successful": True, "order": {
            "order_id": order_id, "status": "new",
            "points": [{"address": p["address"], "tracking_url": f"{self.url}/track/{order_id}/{i}"}
                       for i, p in enumerate(points)]}})

    def callback(self, carebase_url: str, order_id: str, delivery_status: str, *, secret: str | None = None
                 ) -> httpx.Response:
        body = json.dumps({"event_datetime": "2026-11-22T10:00:00+05:30", "event_type": "delivery_changed",
                           "order": {"order_id": int(order_id), "status": "active"},
                           "delivery": {"status": delivery_status}}).encode()
        signature = hmac.new((secret or self.callback_secret).encode(), body, hashlib.sha256).hexdigest()
        return httpx.post(f"{carebase_url}/api/v1/couriers/borzo/callback", content=body,
                          headers={"X-DV-Signature": signature, "Content-Type": "application/json"})
