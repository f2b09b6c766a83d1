"""WhatsApp through Meta's WhatsApp Cloud API (Graph API).

``POST {whatsapp_base_url}/{phone-number-id}/messages`` with ``Authorization: Bearer <token>`` and
``{"messaging_product": "whatsapp", "to": "<digits>", "type": "text", "text": {"body": …}}``; a
``200`` carries ``{"messages": [{"id": "wamid…"}]}``. Errors are Graph API errors,
``{"error": {"message": …, "type": …, "code": 131026, "error_subcode": …, "fbtrace_id": …}}``,
classified by code (developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes) before
the HTTP status, since Meta reports rate limits and its own trouble with a 400 as often as not.

Free-form text only reaches someone who wrote to the business in the last 24 hours; outside that
window Meta answers 131047 and only a pre-approved template would go through, so the delivery
moves to its next channel.
"""

from __future__ import annotations

import hashlib
import hmac

from psycopg import AsyncConnection

from carebase.platform.channels import Message, Sent, register
from carebase.platform.channels.http import RemoteAdapter, json_object, text_of

PERMANENT_CODES = frozenset({
    "100",  # invalid parameter
    "190",  # access token expired or revoked (configuration)
    "131026",  # undeliverable: not a WhatsApp user, or an old app version
    "131047",  # outside the 24-hour customer-service window: needs a template
    "131051",  # unsupported message type
    "131021",  # recipient is the sender
    "131031",  # the business account is locked
    "133010",  # the sending phone number is not registered
})
TRANSIENT_CODES = frozenset({
    "1",  # API unknown (Meta: "try again later")
    "2",  # API service temporarily unavailable
    "4",  # app-level rate limit
    "80007",  # business-account rate limit
    "130429",  # throughput rate limit
    "131000",  # something went wrong (generic, Meta-side)
    "131016",  # service unavailable
    "131056",  # too many messages to this recipient (pair rate limit)
})


@register("whatsapp", "meta")
class WhatsAppAdapter(RemoteAdapter):
    provider = "meta"
    settings_prefix = "whatsapp"

    async def send(self, message: Message, conn: AsyncConnection | None = None) -> Sent:
        s = self.settings
        if not (s.whatsapp_phone_number_id and s.whatsapp_token):
            raise self.not_configured("whatsapp_phone_number_id", "whatsapp_token")
        payload = {"messaging_product": "whatsapp", "recipient_type": "individual",
                   "to": self.phone(message).lstrip("+"), "type": "text",
                   "text": {"body": text_of(message), "preview_url": False}}
        response = await self.request(
            "POST", f"{s.whatsapp_base_url.rstrip('/')}/{s.whatsapp_phone_number_id}/messages", json=payload,
            headers={"Authorization": f"Bearer {s.whatsapp_token.get_secret_value()}"})
        body = json_object(response)
        if response.is_success:
            messages = body.get("messages")
            first = messages[0] if isinstance(messages, list) and messages and isinstance(messages[0], dict) else {}
            if isinstance(first.get("id"), str) and first["id"]:
                return Sent(self.provider, first["id"])
            raise self.unexpected(response)
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        detail = error.get("message") if isinstance(error.get("message"), str) else None
        raise self.failure(response, error.get("code"), detail,
                           transient_codes=TRANSIENT_CODES, permanent_codes=PERMANENT_CODES)


def signature(app_secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256`` of a webhook: ``sha256=`` + hex HMAC-SHA256 of the raw body, keyed by
    the app secret."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_is_valid(app_secret: str, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    return hmac.compare_digest(signature(app_secret, body).encode(), header.strip().lower().encode())
