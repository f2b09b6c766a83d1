"""SMS through Twilio Programmable Messaging (REST API 2010-04-01).

``POST {twilio_base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json``, HTTP Basic auth with
the Account SID and Auth Token, form fields ``To``, ``From``, ``Body`` and, when the install has a
public URL, ``StatusCallback`` (Twilio then posts sent / delivered / undelivered / failed there,
signed with ``X-Twilio-Signature``; see ``signature``). A ``201`` carries the message ``sid``.
Errors are JSON ``{"code": 21211, "message": …, "more_info": …, "status": 400}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

from psycopg import AsyncConnection

from carebase.platform.channels import Message, Sent, register
from carebase.platform.channels.http import RemoteAdapter, json_object, text_of

STATUS_CALLBACK_PATH = "/api/v1/webhooks/twilio/status"

# Twilio error codes (twilio.com/docs/api/errors) that no retry of the same request can fix; other
# 4xx answers are permanent anyway, these are listed so the intent is explicit.
PERMANENT_CODES = frozenset({
    "21211",  # invalid 'To' number
    "21408",  # permission to send to this region is not enabled
    "21610",  # the recipient replied STOP: unsubscribed
    "21612",  # the 'To' number cannot be reached from this 'From' (no route)
    "21614",  # 'To' is not a mobile number
    "21606",  # the 'From' number cannot send SMS (configuration)
    "21266",  # 'To' and 'From' are the same number
})
# Throttling and Twilio-side trouble, whatever status they come with.
TRANSIENT_CODES = frozenset({"20429", "20500", "20503"})


@register("sms", "twilio")
class TwilioAdapter(RemoteAdapter):
    provider = "twilio"

    async def send(self, message: Message, conn: AsyncConnection | None = None) -> Sent:
        s = self.settings
        if not (s.twilio_account_sid and s.twilio_auth_token and s.twilio_from):
            raise self.not_configured("twilio_account_sid", "twilio_auth_token", "twilio_from")
        form = {"To": self.phone(message), "From": s.twilio_from, "Body": text_of(message)}
        if s.public_url:
            form["StatusCallback"] = s.public_url.rstrip("/") + STATUS_CALLBACK_PATH
        response = await self.request(
            "POST", f"{s.twilio_base_url.rstrip('/')}/2010-04-01/Accounts/{s.twilio_account_sid}/Messages.json",
            data=form, auth=(s.twilio_account_sid, s.twilio_auth_token.get_secret_value()))
        body = json_object(response)
        if response.is_success:
            if isinstance(body.get("sid"), str) and body["sid"]:
                return Sent(self.provider, body["sid"])
            raise self.unexpected(response)
        raise self.failure(response, body.get("code"), body.get("message"),
                           transient_codes=TRANSIENT_CODES, permanent_codes=PERMANENT_CODES)


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """``X-Twilio-Signature``: base64 HMAC-SHA1, keyed by the Auth Token, of the URL Twilio called
    followed by every POST parameter as name + value, sorted by name then value (a repeated
    name/value pair counts once, as in Twilio's own validators)."""
    signed = url + "".join(k + v for k, v in sorted(set(params)))
    return base64.b64encode(hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()).decode()


def signature_is_valid(auth_token: str, url: str, params: Iterable[tuple[str, str]], header: str | None) -> bool:
    if not header:
        return False
    return hmac.compare_digest(signature(auth_token, url, params).encode(), header.encode())
