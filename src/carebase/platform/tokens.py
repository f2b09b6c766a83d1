"""Signed JWT access tokens (EdDSA, 15 minutes by default).

Only identifiers and roles go in the payload, never personal data: JWTs are merely signed, and
anyone holding one can read it.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt

from carebase.platform import crypto
from carebase.platform.authz import Principal
from carebase.platform.errors import NotAuthenticated

ISSUER = "carebase"
AUDIENCE = "carebase-api"


def issue_access_token(principal: Principal, ttl_seconds: int) -> str:
    now = datetime.now(UTC)
    ring = crypto.keyring()
    claims = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": str(principal.account_id),
        "tid": str(principal.tenant_id) if principal.tenant_id else None,
        "roles": list(principal.roles), "sid": str(principal.session_id) if principal.session_id else None,
        "mfa": principal.mfa, "iat": now, "exp": now + timedelta(seconds=ttl_seconds),
        "jti": uuid.uuid4().hex,
    }
    if principal.scope:
        claims["scope"] = principal.scope
    return jwt.encode(claims, ring.signing_key, algorithm="EdDSA", headers={"kid": ring.key_id})


# Verified tokens, so a client's every request does not verify the same signature again (an
# Ed25519 check is a third of a millisecond here). Keyed by the signing key too: new keys (a
# rotation, a new keyring) verify afresh. Revocation is not this cache's business: the session
# check runs on every request either way. Bounded; the oldest entries go first.
_VERIFIED: dict[tuple[str, str], tuple[Principal, float]] = {}
_VERIFIED_MAX = 10_000


def decode_access_token(token: str) -> Principal:
    ring = crypto.keyring()
    key = (ring.key_id, token)
    hit = _VERIFIED.get(key)
    if hit is not None:
        principal, expires = hit
        if time.time() < expires:
            return principal
        del _VERIFIED[key]
    principal, expires = _verify(ring, token)
    _VERIFIED[key] = (principal, expires)
    while len(_VERIFIED) > _VERIFIED_MAX:
        del _VERIFIED[next(iter(_VERIFIED))]
    return principal


def _verify(ring: crypto.Keyring, token: str) -> tuple[Principal, float]:
    try:
        c = jwt.decode(token, ring.verify_key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER,
                       options={"require": ["exp", "sub", "iat"]})
    except jwt.ExpiredSignatureError as exc:
        raise NotAuthenticated("Your session token has expired; refresh it or sign in again.",
                               code="token-expired") from exc
    except jwt.PyJWTError as exc:
        raise NotAuthenticated("The access token is not valid.", code="invalid-token") from exc
    try:
        return Principal.of(
            uuid.UUID(c["sub"]), uuid.UUID(c["tid"]) if c.get("tid") else None, tuple(c.get("roles") or ()),
            uuid.UUID(c["sid"]) if c.get("sid") else None, bool(c.get("mfa")), c.get("scope"),
        ), float(c["exp"])
    except (ValueError, TypeError) as exc:
        raise NotAuthenticated("The access token is not valid.", code="invalid-token") from exc
