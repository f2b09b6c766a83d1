"""Twilio Programmable Messaging, as far as Carebase uses it: create a message, and later post its
status to the StatusCallback, signed like Twilio signs.

Numbers decide the answer, like Twilio's magic test numbers: a ``To`` ending in one of
``REJECTED`` gets that error (HTTP 400 with Twilio's code and wording); everything else is queued.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from email.utils import formatdate

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.standins.base import Handler, Received, StandIn

REJECTED = {
    "0000": (21211, "The 'To' number {to} is not a valid phone number."),
    "0001": (21610, "Attempt to send to unsubscribed recipient"),
    "0002": (21614, "'To' number is not a valid mobile number"),
    "0003": (21408, "Permission to send an SMS has not been enabled for the region indicated by the "
                    "'To' number: {to}."),
}


def error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                         "status": status}, status_code=status)


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's scheme, written from its docs apart from the code under test: base64 HMAC-SHA1 of
    the URL followed by each parameter's name and value, sorted by name."""
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


class TwilioStandIn(StandIn):
    def __init__(self) -> None:
        self.account_sid = "AC" + secrets.token_hex(16)
        self.auth_token = secrets.token_hex(16)
        self.messages: dict[str, dict[str, str]] = {}  # sid -> the form it was created with
        super().__init__()

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/2010-04-01/Accounts/{account_sid}/Messages.json", self.create_message)]

    async def create_message(self, request: Request, received: Received) -> Response:
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if not hmac.compare_digest(received.headers.get("authorization", ""), expected) or \
                request.path_params["account_sid"] != self.account_sid:
            return error(401, 20003, "Authenticate")
        form = received.form()
        for field, code in (("To", 21604), ("From", 21603), ("Body", 21602)):
            if not form.get(field):
                return error(400, code, f"A '{field}' parameter is required.")
        to = form["To"]
        if not re.fullmatch(r"\+[1-9]\d{6,14}", to):
            return error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if to[-4:] in REJECTED:
            code, message = REJECTED[to[-4:]]
            return error(400, code, message.format(to=to))
        sid = "SM" + secrets.token_hex(16)
        self.messages[sid] = form
        return JSONResponse({
            "account_sid": self.account_sid, "api_version": "2010-04-01", "body": form["Body"],
            "date_created": formatdate(usegmt=True), "date_sent": None, "date_updated": formatdate(usegmt=True),
            "direction": "outbound-api", "error_code": None, "error_message": None, "from": form["From"],
            "messaging_service_sid": None, "num_media": "0", "num_segments": "1", "price": None, "price_unit": "USD",
            "sid": sid, "status": "queued", "to": to,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            "subresource_uris": {"media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media.json"},
        }, status_code=201)

    def send_status(self, sid: str, status: str, *, deliver_to: str, error_code: str | None = None,
                    auth_token: str | None = None, signature: str | None = None) -> httpx.Response:
        """Post the status callback of message ``sid`` as Twilio would: to its StatusCallback URL,
        signed over that URL. ``deliver_to`` is where it really goes (the test server standing
        behind the public URL, as a reverse proxy would forward it)."""
        form = self.messages[sid]
        callback = form["StatusCallback"]
        params = {"AccountSid": self.account_sid, "ApiVersion": "2010-04-01", "From": form["From"],
                  "MessageSid": sid, "MessageStatus": status, "SmsSid": sid, "SmsStatus": status, "To": form["To"]}
        if error_code is not None:
            params["ErrorCode"] = error_code
        if signature is None:
            signature = sign(auth_token or self.auth_token, callback, params)
        headers = {"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"} if signature else {}
        return httpx.post(deliver_to, data=params, headers=headers, timeout=30)
