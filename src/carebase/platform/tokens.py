"""Signed JWT access tokens (EdDSA, 15 minutes by default).

Only identifiers and roles go in the payload, never personal data: JWTs are merely signed, and
anyone holding one can read it.
"""

from __future__ import annotations

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


def decode_access_token(token: str) -> Principal:
    ring = crypto.keyring()
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
        )
    except (ValueError, TypeError) as exc:
        raise NotAuthenticated("The access token is not valid.", code="invalid-token") from exc
