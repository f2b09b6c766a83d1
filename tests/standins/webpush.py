"""A Web Push service (RFC 8030) and the browsers subscribed to it.

It checks what a real push service checks before it takes a message: the VAPID token (RFC 8292:
an ES256 JWT verified with the key sent beside it, for this service's origin, not expired, with a
contact ``sub``; the key must be the one the subscription was made with), the TTL header and an
RFC 8291 ``aes128gcm`` body. A ``Subscription`` keeps the browser's private key and auth secret,
so a test decrypts what arrived exactly as the browser would.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from tests.standins.base import Handler, Received, StandIn

VAPID_HEADER = re.compile(r"^vapid\s+(?P<params>.+)$", re.IGNORECASE)
MAX_BODY = 4096  # RFC 8030 §7.2: services must accept at least this much, and may refuse more
MAX_TOKEN_SECONDS = 24 * 3600  # RFC 8292 §2


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def new_vapid_keys() -> tuple[str, str]:
    """(private key PEM, public key base64url): what an operator puts in CAREBASE_VAPID_*."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return pem, b64url(raw_public_key(key))


@dataclass
class Subscription:
    id: str
    endpoint: str
    browser_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    application_server_key: str | None

    @property
    def device(self) -> dict[str, Any]:
        """The subscription as the portal stores it (PushSubscription.toJSON() plus the kind)."""
        return {"kind": "webpush", "endpoint": self.endpoint,
                "keys": {"p256dh": b64url(raw_public_key(self.browser_key)), "auth": b64url(self.auth_secret)}}

    def decrypt(self, body: bytes) -> Any:
        plain = http_ece.decrypt(body, private_key=self.browser_key, auth_secret=self.auth_secret,
                                 version="aes128gcm")
        return json.loads(plain)


@dataclass(frozen=True)
class Pushed:
    """A message the service accepted, with the VAPID claims it verified."""
    subscription_id: str
    claims: dict[str, Any]
    vapid_key: str
    ttl: int
    body: bytes


class PushService(StandIn):
    def __init__(self) -> None:
        self.subscriptions: dict[str, Subscription] = {}
        self.gone: set[str] = set()
        self.pushed: list[Pushed] = []
        super().__init__()

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/push/{subscription_id}", self._push)]

    def subscribe(self, application_server_key: str | None = None) -> Subscription:
        """A browser subscribes (``pushManager.subscribe({applicationServerKey})``)."""
        sub_id = uuid.uuid4().hex
        sub = Subscription(sub_id, f"{self.url}/push/{sub_id}", ec.generate_private_key(ec.SECP256R1()),
                           secrets.token_bytes(16), application_server_key)
        self.subscriptions[sub_id] = sub
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """The browser dropped it: from now on the service answers 410 Gone."""
        self.gone.add(sub.id)

    async def _push(self, request: Request, received: Received) -> Response:
        sub_id = request.path_params["subscription_id"]
        if sub_id in self.gone:
            return PlainTextResponse("subscription expired", status_code=410)
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            return PlainTextResponse("no such subscription", status_code=404)

        audience = f"{request.url.scheme}://{request.url.netloc}"
        try:
            claims, key = verify_vapid(received.headers.get("authorization", ""), audience)
        except ValueError as exc:
            return PlainTextResponse(f"VAPID: {exc}", status_code=401)
        if sub.application_server_key and key != sub.application_server_key:
            return PlainTextResponse("VAPID key is not the subscription's applicationServerKey", status_code=403)

        ttl = received.headers.get("ttl", "")
        if not ttl.isdigit():
            return PlainTextResponse("TTL header required", status_code=400)
        if received.headers.get("content-encoding") != "aes128gcm":
            return PlainTextResponse("Content-Encoding must be aes128gcm", status_code=400)
        if len(received.body) > MAX_BODY:
            return PlainTextResponse("payload too large", status_code=413)
        problem = aes128gcm_problem(received.body)
        if problem:
            return PlainTextResponse(problem, status_code=400)

        self.pushed.append(Pushed(sub_id, claims, key, int(ttl), received.body))
        return Response(status_code=201, headers={"Location": f"{self.url}/message/{uuid.uuid4().hex}", "TTL": ttl})


def verify_vapid(header: str, audience: str) -> tuple[dict[str, Any], str]:
    """The claims and public key of a valid ``vapid t=<jwt>, k=<key>``; ValueError otherwise."""
    match = VAPID_HEADER.match(header)
    if not match:
        raise ValueError("Authorization is not a vapid token")
    params = dict(p.strip().split("=", 1) for p in match["params"].split(",") if "=" in p)
    if "t" not in params or "k" not in params:
        raise ValueError("t= and k= are required")
    try:
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(params["k"]))
        claims = jwt.decode(params["t"], public_key, algorithms=["ES256"], audience=audience,
                            options={"require": ["aud", "exp", "sub"]})
    except (jwt.PyJWTError, ValueError) as exc:
        raise ValueError(str(exc)) from None
    if claims["exp"] > time.time() + MAX_TOKEN_SECONDS:
        raise ValueError("token lives longer than 24 hours")
    if not str(claims["sub"]).startswith(("mailto:", "https:")):
        raise ValueError("sub must be a mailto: or https: contact")
    return claims, params["k"]


def aes128gcm_problem(body: bytes) -> str | None:
    """What is wrong with an RFC 8188 header as RFC 8291 uses it (salt, record size, sender key)."""
    if len(body) < 21:
        return "body shorter than an aes128gcm header"
    record_size, key_length = struct.unpack("!IB", body[16:21])
    if key_length != 65:
        return "keyid must be the sender's 65-byte P-256 public key"
    if record_size < 18 or len(body) < 21 + key_length + 17:
        return "no encrypted record"
    return None
