"""Meta's WhatsApp Cloud API (Graph API): send a text message, and later post its statuses to the
app's webhook signed with ``X-Hub-Signature-256``; also Meta's subscription handshake.

A ``to`` ending in one of ``REJECTED`` gets that Graph API error (code, HTTP status, wording as
Meta documents them); everything else is accepted with a ``wamid``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.standins.base import Handler, Received, StandIn

REJECTED = {
    "0000": (400, 131026, "Message undeliverable"),
    "0001": (400, 131047, "Re-engagement message"),
    "0002": (400, 130429, "Rate limit hit"),  # a rate limit reported with a 400, as Meta does
    "0003": (500, 131000, "Something went wrong"),
}


def graph_error(status: int, code: int, message: str, type_: str = "OAuthException") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "code": code,
                                   "fbtrace_id": secrets.token_urlsafe(12)}}, status_code=status)


class WhatsAppStandIn(StandIn):
    def __init__(self) -> None:
        self.token = "EAAG" + secrets.token_urlsafe(24)
        self.phone_number_id = str(100000000000000 + secrets.randbelow(10**14))
        self.app_secret = secrets.token_hex(16)
        self.messages: dict[str, dict] = {}  # wamid -> the JSON it was sent with
        super().__init__()

    @property
    def base_url(self) -> str:
        return self.url + "/v19.0"

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/{version}/{phone_number_id}/messages", self.send_message)]

    async def send_message(self, request: Request, received: Received) -> Response:
        if not hmac.compare_digest(received.headers.get("authorization", ""), f"Bearer {self.token}"):
            return graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if request.path_params["phone_number_id"] != self.phone_number_id:
            return graph_error(400, 100, f"Unsupported post request. Object with ID "
                                         f"'{request.path_params['phone_number_id']}' does not exist",
                               "GraphMethodException")
        try:
            body = received.json()
        except ValueError:
            return graph_error(400, 100, "Invalid parameter")
        if body.get("messaging_product") != "whatsapp":
            return graph_error(400, 100, "(#100) The parameter messaging_product is required.")
        to = body.get("to", "")
        text = body.get("text") if isinstance(body.get("text"), dict) else {}
        if body.get("type") != "text" or not text.get("body"):
            return graph_error(400, 100, "(#100) Param text['body'] is required.")
        if not re.fullmatch(r"[1-9]\d{6,14}", to):
            return graph_error(400, 100, "(#100) Invalid parameter")
        if to[-4:] in REJECTED:
            return graph_error(*REJECTED[to[-4:]])
        wamid = "wamid." + base64.b64encode(secrets.token_bytes(30)).decode()
        self.messages[wamid] = body
        return JSONResponse({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                             "messages": [{"id": wamid}]})

    def notification(self, wamid: str, status: str, errors: list[dict] | None = None) -> bytes:
        to = self.messages[wamid]["to"]
        item: dict = {"id": wamid, "status": status, "timestamp": str(int(time.time())), "recipient_id": to}
        if errors:
            item["errors"] = errors
        return json.dumps({"object": "whatsapp_business_account", "entry": [{
            "id": "102290129340398", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": self.phone_number_id},
                "statuses": [item]}}]}]}).encode()

    def send_status(self, wamid: str, status: str, *, url: str, errors: list[dict] | None = None,
                    app_secret: str | None = None, body: bytes | None = None,
                    signature: str | None = None) -> httpx.Response:
        """Post a status notification to the app's webhook ``url``, signed like Meta signs it."""
        body = body if body is not None else self.notification(wamid, status, errors)
        if signature is None:
            signature = "sha256=" + hmac.new((app_secret or self.app_secret).encode(), body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json"}
        if signature:
            headers["X-Hub-Signature-256"] = signature
        return httpx.post(url, content=body, headers=headers, timeout=30)

    @staticmethod
    def subscribe(url: str, verify_token: str, challenge: str = "1158201444") -> httpx.Response:
        """Meta's handshake when the webhook is configured on the app dashboard."""
        return httpx.get(url, params={"hub.mode": "subscribe", "hub.verify_token": verify_token,
                                      "hub.challenge": challenge}, timeout=30)
