"""Web Push (RFC 8030) to a browser's subscription, encrypted (RFC 8291) and signed with VAPID (RFC 8292).

pywebpush does the cryptography (aes128gcm payload encryption, the VAPID JWT); the request itself
goes out on the adapter's httpx client, so it is async and bound by the channel timeout like every
other provider call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from py_vapid import Vapid
from pywebpush import WebPusher

from carebase.platform.channels import Message, PermanentFailure, TransientFailure
from carebase.platform.channels.push import DeviceGone, push_payload, timeout_failure
from carebase.settings import Settings

PROVIDER = "webpush"
# A reminder a day late is still worth showing; older than that the portal has it anyway.
TTL_SECONDS = 24 * 3600
# RFC 8292 caps a VAPID token's life at 24 h; 12 h leaves room for clock skew at the push service.
VAPID_TOKEN_SECONDS = 12 * 3600


def load_vapid(private_key: str) -> Vapid:
    """A PEM key, or the base64url raw/DER key that pywebpush's tools print."""
    key = private_key.strip()
    if key.startswith("-----BEGIN"):
        return Vapid.from_pem(key.encode())
    return Vapid.from_string(key)


class WebPushSender:
    kind = "webpush"

    def __init__(self, settings: Settings):
        self.private_key = settings.vapid_private_key
        self.subject = settings.vapid_subject
        self._vapid: Vapid | None = None

    def _signer(self) -> Vapid:
        if self._vapid is None:
            if self.private_key is None:
                raise PermanentFailure("Web Push is not configured (CAREBASE_VAPID_PRIVATE_KEY)", provider=PROVIDER)
            try:
                self._vapid = load_vapid(self.private_key.get_secret_value())
            except Exception as exc:  # py_vapid raises whatever cryptography or base64 raised
                raise PermanentFailure(f"CAREBASE_VAPID_PRIVATE_KEY unreadable: {type(exc).__name__}",
                                       provider=PROVIDER) from None
        return self._vapid

    async def send(self, client: httpx.AsyncClient, device: Mapping[str, Any], message: Message) -> str | None:
        endpoint = device.get("endpoint")
        url = urlsplit(endpoint) if isinstance(endpoint, str) else None
        if url is None or url.scheme not in ("http", "https") or not url.netloc:
            raise PermanentFailure("Web Push device without a valid endpoint", provider=PROVIDER)
        try:
            body = WebPusher(device).encode(json.dumps(push_payload(message)).encode(), "aes128gcm")["body"]
        except Exception as exc:  # malformed p256dh/auth keys: this subscription can never be sent to
            raise PermanentFailure(f"Web Push subscription keys unusable: {type(exc).__name__}",
                                   provider=PROVIDER) from None
        claims = {"sub": self.subject, "aud": f"{url.scheme}://{url.netloc}",
                  "exp": int(time.time()) + VAPID_TOKEN_SECONDS}
        headers = {**self._signer().sign(claims), "TTL": str(TTL_SECONDS), "Urgency": "normal",
                   "Content-Encoding": "aes128gcm", "Content-Type": "application/octet-stream"}
        try:
            r = await client.post(endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise timeout_failure(PROVIDER, exc) from None

        if r.is_success:
            # RFC 8030: the push service names the message it accepted in Location.
            return r.headers.get("location")
        code = str(r.status_code)
        reason = f"push service answered {r.status_code}: {r.text[:200]}"
        if r.status_code in (404, 410):
            raise DeviceGone(reason, provider=PROVIDER, address=endpoint, code=code)
        if r.status_code in (408, 429) or r.status_code >= 500:
            raise TransientFailure(reason, provider=PROVIDER, code=code)
        # 400 bad request, 401/403 VAPID refused, 413 payload too large: resending will not help.
        raise PermanentFailure(reason, provider=PROVIDER, code=code)
