"""Firebase Cloud Messaging HTTP v1 to a mobile app's registration token.

Google's OAuth2 service-account flow, done by hand with PyJWT (it is one signed JWT and one POST,
not worth the google-auth dependency): the service account's key signs an assertion, the token
endpoint trades it for an access token, and that token is reused until shortly before it expires.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

from carebase.platform.channels import Message, PermanentFailure, TransientFailure
from carebase.platform.channels.push import DeviceGone, push_payload, timeout_failure
from carebase.settings import Settings

PROVIDER = "fcm"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_SECONDS = 3600  # the longest Google accepts
# Fetch a new access token this long before the old one expires, so none dies in flight.
REFRESH_MARGIN_SECONDS = 300
RETRYABLE_ERRORS = {"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"}


@dataclass(frozen=True)
class ServiceAccount:
    client_email: str
    private_key: str
    private_key_id: str | None
    project_id: str | None


def load_service_account(path: Path | None) -> ServiceAccount:
    if path is None:
        raise PermanentFailure("FCM is not configured (CAREBASE_FCM_SERVICE_ACCOUNT_FILE)", provider=PROVIDER)
    try:
        data = json.loads(Path(path).read_text())
        return ServiceAccount(client_email=data["client_email"], private_key=data["private_key"],
                              private_key_id=data.get("private_key_id"), project_id=data.get("project_id"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PermanentFailure(f"FCM service account file unreadable: {type(exc).__name__}",
                               provider=PROVIDER) from None


# Access tokens outlive one adapter (one is built per delivery), so they are cached per process,
# keyed by (token endpoint, service account).
_tokens: dict[tuple[str, str], tuple[str, float]] = {}
# One token request at a time; asyncio locks belong to one event loop, so one lock per loop.
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _locks.get(loop)
    if lock is None:
        lock = _locks[loop] = asyncio.Lock()
    return lock


class FcmSender:
    kind = "fcm"

    def __init__(self, settings: Settings):
        self.account_file = settings.fcm_service_account_file
        self.project_id = settings.fcm_project_id
        self.base_url = settings.fcm_base_url.rstrip("/")
        self.token_url = settings.fcm_token_url
        self._account: ServiceAccount | None = None

    def _service_account(self) -> ServiceAccount:
        if self._account is None:
            self._account = load_service_account(self.account_file)
        return self._account

    async def _access_token(self, client: httpx.AsyncClient, account: ServiceAccount, stale: str | None) -> str:
        key = (self.token_url, account.client_email)
        async with _lock():
            cached = _tokens.get(key)
            if cached and cached[0] != stale and cached[1] > time.monotonic():
                return cached[0]
            token, lifetime = await self._fetch_token(client, account)
            _tokens[key] = (token, time.monotonic() + lifetime - min(REFRESH_MARGIN_SECONDS, lifetime / 2))
            return token

    async def _fetch_token(self, client: httpx.AsyncClient, account: ServiceAccount) -> tuple[str, float]:
        now = int(time.time())
        claims = {"iss": account.client_email, "scope": SCOPE, "aud": self.token_url,
                  "iat": now, "exp": now + ASSERTION_SECONDS}
        headers = {"kid": account.private_key_id} if account.private_key_id else None
        try:
            assertion = jwt.encode(claims, account.private_key, algorithm="RS256", headers=headers)
        except (ValueError, TypeError) as exc:  # not an RSA private key in PEM
            raise PermanentFailure(f"FCM service account key unusable: {type(exc).__name__}",
                                   provider=PROVIDER) from None
        try:
            r = await client.post(self.token_url, data={"grant_type": GRANT_TYPE, "assertion": assertion})
        except httpx.HTTPError as exc:
            raise timeout_failure(PROVIDER, exc) from None
        body = _json(r)
        if r.is_success and isinstance(body.get("access_token"), str):
            return body["access_token"], float(body.get("expires_in") or ASSERTION_SECONDS)
        code = str(body.get("error") or r.status_code)
        reason = f"token endpoint answered {r.status_code} {code}: {body.get('error_description', '')}"
        if r.status_code == 429 or r.status_code >= 500 or r.is_success:
            raise TransientFailure(reason, provider=PROVIDER, code=code)
        # invalid_grant / invalid_client: a revoked key or wrong account, fixed by an operator.
        raise PermanentFailure(reason, provider=PROVIDER, code=code)

    async def send(self, client: httpx.AsyncClient, device: Mapping[str, Any], message: Message) -> str | None:
        token = device.get("token")
        if not isinstance(token, str) or not token:
            raise PermanentFailure("FCM device without a registration token", provider=PROVIDER)
        account = self._service_account()
        project = self.project_id or account.project_id
        if not project:
            raise PermanentFailure("FCM is not configured (CAREBASE_FCM_PROJECT_ID)", provider=PROVIDER)
        payload = push_payload(message)
        body = {"message": {"token": token,
                            "notification": {"title": payload["title"], "body": payload["body"]},
                            "data": {"url": payload["url"]}}}
        url = f"{self.base_url}/v1/projects/{project}/messages:send"

        stale = None
        # A 401 with a token we still thought valid (revoked, clock skew): one fresh token, one retry.
        for _ in range(2):
            access = await self._access_token(client, account, stale)
            try:
                r = await client.post(url, json=body, headers={"Authorization": f"Bearer {access}"})
            except httpx.HTTPError as exc:
                raise timeout_failure(PROVIDER, exc) from None
            if r.status_code != 401:
                break
            stale = access

        if r.is_success:
            return _json(r).get("name")
        raise _send_failure(r, token)


def _send_failure(r: httpx.Response, token: str) -> PermanentFailure | TransientFailure:
    error = _json(r).get("error")
    error = error if isinstance(error, dict) else {}
    fcm_code = next((d.get("errorCode") for d in error.get("details") or []
                     if isinstance(d, dict) and d.get("@type", "").endswith("google.firebase.fcm.v1.FcmError")), None)
    code = fcm_code or error.get("status") or str(r.status_code)
    reason = f"FCM answered {r.status_code} {code}: {error.get('message', '')}"
    # Only FCM's own verdict deletes a device: a bare 404 more likely means a wrong project or URL,
    # and INVALID_ARGUMENT is as often our payload as the token, so neither forgets every device.
    if fcm_code == "UNREGISTERED":
        return DeviceGone(reason, provider=PROVIDER, address=token, code=code)
    if r.status_code == 429 or r.status_code >= 500 or fcm_code in RETRYABLE_ERRORS:
        return TransientFailure(reason, provider=PROVIDER, code=code)
    # INVALID_ARGUMENT, SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR, PERMISSION_DENIED, 401 twice.
    return PermanentFailure(reason, provider=PROVIDER, code=code)


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
