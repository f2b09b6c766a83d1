"""MSG91's Flow API (v5) and its SMS delivery reports, as Carebase's adapter assumes them (see
src/carebase/platform/channels/msg91.py for the assumptions).

A number ending in ``0000`` is refused with HTTP 400, one ending in ``0001`` with HTTP 200 and
``"type": "error"`` (MSG91 does both); a wrong ``authkey`` gets 401.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from datetime import UTC, datetime

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.standins.base import Handler, Received, StandIn

REJECTED = {"0000": (400, "Invalid mobile number"), "0001": (200, "Mobile number is in the blocked list")}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"type": "error", "message": message}, status_code=status)


class Msg91StandIn(StandIn):
    def __init__(self) -> None:
        self.auth_key = secrets.token_hex(12)
        self.template_id = secrets.token_hex(12)
        self.requests_by_id: dict[str, dict] = {}  # request id -> the JSON it was created with
        super().__init__()

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/api/v5/flow/", self.flow)]

    async def flow(self, request: Request, received: Received) -> Response:
        if not hmac.compare_digest(received.headers.get("authkey", ""), self.auth_key):
            return error(401, "AuthenticationFailure")
        try:
            body = received.json()
        except ValueError:
            return error(400, "Invalid JSON")
        if body.get("template_id") != self.template_id:
            return error(400, "Template ID Missing or Invalid Template")
        recipients = body.get("recipients")
        if not isinstance(recipients, list) or not recipients:
            return error(400, "Mobile Number(s) missing")
        for r in recipients:
            mobiles = r.get("mobiles", "") if isinstance(r, dict) else ""
            if not re.fullmatch(r"[1-9]\d{7,14}", mobiles):
                return error(400, "Invalid mobile number")
            if mobiles[-4:] in REJECTED:
                return error(*REJECTED[mobiles[-4:]])
        request_id = secrets.token_hex(12)
        self.requests_by_id[request_id] = body
        return JSONResponse({"type": "success", "message": request_id})

    def send_report(self, request_id: str, *, url: str, token: str | None, status: str = "1",
                    desc: str = "DELIVERED", version: str = "v3", failed_reason: str = "") -> httpx.Response:
        """MSG91's delivery report for one request, in webhook version ``v3`` (one JSON object per
        number) or ``v2`` (a form whose ``data`` is a JSON list), to ``url`` with ``?token=``."""
        number = self.requests_by_id[request_id]["recipients"][0]["mobiles"]
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        params = {"token": token} if token is not None else {}
        if version == "v3":
            return httpx.post(url, params=params, timeout=30, json={
                "date": now, "number": number, "senderId": "CRBASE", "amount": "0.01", "requestId": request_id,
                "INMSID": "0", "CRQID": "0", "credit": "1", "userId": "271828", "campaignName": "API",
                "status": status, "desc": desc})
        report = [{"senderId": "CRBASE", "requestId": request_id, "userId": "271828", "campaignName": "API",
                   "report": [{"date": now, "number": number, "status": status, "desc": desc,
                               "failedReason": failed_reason, "credit": "1", "amount": "0.01"}]}]
        return httpx.post(url, params=params, timeout=30, data={"data": json.dumps(report)})
