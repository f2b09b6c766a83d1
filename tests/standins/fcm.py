"""Firebase Cloud Messaging HTTP v1 and Google's OAuth2 token endpoint, for one service account.

The token endpoint verifies the JWT assertion as Google does (RS256 with the service account's
public key, ``iss`` the account, ``aud`` this endpoint, the messaging scope, at most an hour) and
hands out access tokens; ``messages:send`` accepts only those, validates the message and answers
with a message name or FCM's documented error JSON.
"""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.standins.base import Handler, Received, StandIn

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TARGETS = ("token", "topic", "condition")
MESSAGE_FIELDS = {*TARGETS, "name", "data", "notification", "android", "webpush", "apns", "fcm_options"}
# HTTP status of each documented status name, as FCM answers them.
STATUS_CODES = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
                "RESOURCE_EXHAUSTED": 429, "INTERNAL": 500, "UNAVAILABLE": 503}


def fcm_error(status: str, message: str, *, fcm_code: str | None = None, field: str | None = None) -> dict[str, Any]:
    """FCM v1's error body (google.rpc.Status with FcmError / BadRequest details)."""
    details: list[dict[str, Any]] = []
    if fcm_code:
        details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code})
    if field:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": field, "description": message}]})
    error: dict[str, Any] = {"code": STATUS_CODES[status], "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def _error(status: str, message: str, **kw: str) -> JSONResponse:
    return JSONResponse(fcm_error(status, message, **kw), status_code=STATUS_CODES[status])


class FcmService(StandIn):
    def __init__(self, project_id: str = "carebase-test") -> None:
        self.project_id = project_id
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.client_email = f"carebase-push@{project_id}.iam.gserviceaccount.com"
        self.private_key_id = secrets.token_hex(20)
        self.access_tokens: set[str] = set()
        self.grants = 0  # access tokens handed out
        self.delivered: list[dict[str, Any]] = []  # the "message" objects accepted
        self.unregistered: set[str] = set()  # app uninstalled: UNREGISTERED
        self.malformed: set[str] = set()  # not an FCM token at all: INVALID_ARGUMENT
        super().__init__()

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/token", self._token), ("POST", "/v1/projects/{project}/messages:send", self._send)]

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def write_service_account(self, path: Path) -> Path:
        """The JSON key file the Firebase console downloads, for this service account."""
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        path.write_text(json.dumps({
            "type": "service_account", "project_id": self.project_id, "private_key_id": self.private_key_id,
            "private_key": pem, "client_email": self.client_email, "client_id": str(secrets.randbits(64)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": self.token_url}))
        return path

    def revoke_tokens(self) -> None:
        self.access_tokens.clear()

    async def _token(self, request: Request, received: Received) -> Response:
        form = received.form()
        if form.get("grant_type") != GRANT_TYPE:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        try:
            assertion = form.get("assertion", "")
            if jwt.get_unverified_header(assertion).get("kid") != self.private_key_id:
                raise jwt.InvalidTokenError("kid is not this account's key")
            claims = jwt.decode(assertion, self.key.public_key(), algorithms=["RS256"], audience=self.token_url,
                                issuer=self.client_email, options={"require": ["iss", "aud", "iat", "exp"]})
            if claims["exp"] - claims["iat"] > 3600:
                raise jwt.InvalidTokenError("assertion lives longer than an hour")
            if SCOPE not in str(claims.get("scope", "")).split():
                raise jwt.InvalidTokenError("scope lacks firebase.messaging")
        except jwt.PyJWTError as exc:
            return JSONResponse({"error": "invalid_grant", "error_description": str(exc)}, status_code=400)
        token = "ya29." + secrets.token_urlsafe(32)
        self.access_tokens.add(token)
        self.grants += 1
        return JSONResponse({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    async def _send(self, request: Request, received: Received) -> Response:
        auth = received.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.access_tokens:
            return _error("UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if request.path_params["project"] != self.project_id:
            return _error("PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied.")
        try:
            message = received.json()["message"]
        except (ValueError, KeyError, TypeError):
            return _error("INVALID_ARGUMENT", "Invalid JSON payload received.", field="message")
        problem = message_problem(message)
        if problem:
            return _error("INVALID_ARGUMENT", problem[1], field=problem[0])
        token = message.get("token")
        if token in self.malformed:
            return _error("INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
                          fcm_code="INVALID_ARGUMENT")
        if token in self.unregistered:
            return _error("NOT_FOUND", "Requested entity was not found.", fcm_code="UNREGISTERED")
        self.delivered.append(message)
        return JSONResponse({"name": f"projects/{self.project_id}/messages/0:{uuid.uuid4().hex}"})


def message_problem(message: Any) -> tuple[str, str] | None:
    """(field, description) of the first thing FCM would refuse in a v1 ``message``."""
    if not isinstance(message, dict):
        return "message", "message must be an object"
    unknown = set(message) - MESSAGE_FIELDS
    if unknown:
        return "message", f"Unknown name {sorted(unknown)[0]!r} at 'message': Cannot find field."
    if sum(1 for t in TARGETS if message.get(t)) != 1:
        return "message", "Exactly one of token, topic or condition must be set."
    notification = message.get("notification", {})
    if not isinstance(notification, dict) or any(not isinstance(notification.get(k, ""), str) for k in ("title", "body")):
        return "message.notification", "notification title and body must be strings"
    data = message.get("data", {})
    if not isinstance(data, dict):
        return "message.data", "data must be a map"
    for i, (key, value) in enumerate(data.items()):
        if not isinstance(value, str):
            return f"message.data[{i}].value", f"Invalid value at 'message.data[{i}].value' (TYPE_STRING), {value}"
        if key in ("from", "gcm") or key.startswith("google"):
            return f"message.data[{i}].key", f"Invalid data key {key!r}: reserved"
    return None
