"""Delivery-status webhooks of the SMS and WhatsApp providers: what happened to a message after
the provider took it (sent, delivered, read, failed), recorded on the delivery attempt.

Public routes: providers carry no Carebase token. Each request is authenticated the provider's way
before anything in it is used: Twilio's ``X-Twilio-Signature`` (HMAC-SHA1 of the callback URL and
the parameters, keyed by the Auth Token), Meta's ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw
body, keyed by the app secret), and for MSG91, which does not sign its reports, a shared token in
the webhook URL configured on its panel (``…/msg91/reports?token=<CAREBASE_MSG91_WEBHOOK_TOKEN>``).
A bad or missing signature is 403. A provider whose secret is not configured gets 404 (this server
has no such endpoint to offer): not 503, which would have providers retry for days against an
install that never meant to take their reports.

They are plain Starlette routes on the router, not FastAPI operations: the signature has to be
checked on the bytes as sent before any model parses them, the body's shape is the provider's
(documented by the provider, not in our OpenAPI), and the API's generic guards (no undeclared
body, a 422 that names a model's field) mean nothing to a sender that only understands 2xx.

A status for a message we do not know is still answered 200 (providers retry anything else) and
logged by its id. Logs carry provider, message id and status, never the numbers or texts the
providers echo back.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform import delivery
from carebase.platform.channels import msg91, twilio, whatsapp
from carebase.platform.channels.http import redact
from carebase.platform.errors import Forbidden, NotFound, ValidationFailed
from carebase.platform.logging import get_logger
from carebase.platform.web import db_session  # plain routes get no Depends
from carebase.settings import get_settings

log = get_logger("carebase.webhooks")

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

Endpoint = Callable[[Request], Awaitable[Response]]


def _route(method: str, path: str) -> Callable[[Endpoint], Endpoint]:
    # add_route does not apply the router's prefix (only API operations get it).
    def add(endpoint: Endpoint) -> Endpoint:
        router.add_route(router.prefix + path, endpoint, methods=[method], include_in_schema=False)
        return endpoint

    return add


def _not_configured(provider: str, setting: str) -> NotFound:
    return NotFound(f"{provider} webhooks are not enabled on this server: set CAREBASE_{setting.upper()}.",
                    code="webhook-not-configured")


def _bad_signature(what: str) -> Forbidden:
    return Forbidden(f"The {what} is missing or does not match: this request was not sent by the provider.",
                     code="bad-signature")


async def _record(request: Request, provider: str, statuses: list[tuple[str, str, str | None]]) -> Response:
    """Record each (provider message id, normalised status, detail) and answer 200 regardless."""
    session: AsyncSession = await db_session(request)
    found = 0
    for message_id, status, detail in statuses:
        detail = redact(detail) or None  # failure reasons are kept with the attempt; numbers never are
        if await delivery.record_provider_status(session, provider=provider, provider_message_id=message_id,
                                                 status=status, detail=detail):
            found += 1
            log.info("provider_status", provider=provider, provider_message_id=message_id, status=status)
        else:
            log.warning("provider_status_unknown_message", provider=provider, provider_message_id=message_id,
                        status=status)
    return JSONResponse({"received": len(statuses), "matched": found})


def _text(value: Any, limit: int = 200) -> str | None:
    return str(value)[:limit] if isinstance(value, str | int) and str(value) else None


# -- Twilio ------------------------------------------------------------------------------------

# MessageStatus values that say where the message is; queued, accepted, sending, scheduled and
# canceled say nothing the attempt does not already know.
TWILIO_STATUS = {"sent": "sent", "delivered": "delivered", "read": "read", "undelivered": "failed",
                 "failed": "failed"}


@_route("POST", "/twilio/status")
async def twilio_status(request: Request) -> Response:
    settings = get_settings()
    if settings.twilio_auth_token is None:
        raise _not_configured("Twilio", "twilio_auth_token")
    form = await request.form()
    params = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    # Twilio signs the URL it called: the StatusCallback the adapter gave it (under public_url,
    # whatever proxy stands between), not the address this process sees.
    url = (settings.public_url.rstrip("/") + twilio.STATUS_CALLBACK_PATH if settings.public_url
           else str(request.url.replace(query="")))
    if request.url.query:
        url += "?" + request.url.query
    if not twilio.signature_is_valid(settings.twilio_auth_token.get_secret_value(), url, params,
                                     request.headers.get("x-twilio-signature")):
        raise _bad_signature("X-Twilio-Signature")
    sid, status = _text(form.get("MessageSid")), TWILIO_STATUS.get(str(form.get("MessageStatus", "")))
    if sid is None or status is None:
        return await _record(request, twilio.TwilioAdapter.provider, [])
    code = _text(form.get("ErrorCode"))
    detail = f"Twilio error {code}" if code and code != "0" else None
    return await _record(request, twilio.TwilioAdapter.provider, [(sid, status, detail)])


# -- MSG91 -------------------------------------------------------------------------------------

# MSG91's report status codes (its webhook help page) and the descriptions that come with them or,
# in the newer webhook, instead of them.
MSG91_CODES = {"1": "delivered", "2": "failed", "9": "failed", "16": "failed", "17": "failed",
               "25": "failed"}
MSG91_WORDS = {"DELIVERED": "delivered", "DELIVRD": "delivered", "SENT": "sent", "SUBMITTED": "sent",
               "FAILED": "failed", "UNDELIVERED": "failed", "REJECTED": "failed", "NDNC": "failed",
               "BLOCKED": "failed", "EXPIRED": "failed"}


def _msg91_reports(payload: Any) -> Iterator[tuple[str, str, str | None]]:
    """(request id, normalised status, detail) from any of MSG91's report layouts: v2 (a form whose
    ``data`` is a JSON list of requests, each with a ``report`` list), v3 (one flat JSON object per
    number) and the newer configurable webhook (flat, ``status`` as a word, ``failureReason``)."""
    if isinstance(payload, list):
        for item in payload:
            yield from _msg91_reports(item)
        return
    if not isinstance(payload, dict):
        return
    if isinstance(payload.get("data"), str):
        try:
            yield from _msg91_reports(json.loads(payload["data"]))
        except ValueError:
            pass
        return
    request_id = _text(payload.get("requestId"))
    if request_id is None:
        return
    reports = payload["report"] if isinstance(payload.get("report"), list) else [payload]
    for report in reports:
        if not isinstance(report, dict):
            continue
        code, desc = _text(report.get("status")), _text(report.get("desc") or report.get("description"))
        status = MSG91_CODES.get(code or "") or MSG91_WORDS.get((code or "").upper()) or \
            MSG91_WORDS.get((desc or "").upper())
        if status is not None:
            reason = _text(report.get("failedReason") or report.get("failureReason"))
            yield request_id, status, reason or (desc if status == "failed" else None)


@_route("POST", "/msg91/reports")
async def msg91_reports(request: Request) -> Response:
    settings = get_settings()
    if settings.msg91_webhook_token is None:
        raise _not_configured("MSG91", "msg91_webhook_token")
    given = request.query_params.get("token", "")
    if not hmac.compare_digest(given.encode(), settings.msg91_webhook_token.get_secret_value().encode()):
        raise _bad_signature("webhook token")
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        payload: Any = dict((await request.form()).items())
    else:
        try:
            payload = json.loads(await request.body())
        except ValueError:
            raise ValidationFailed("The report is not JSON.", code="bad-webhook-body") from None
    return await _record(request, msg91.Msg91Adapter.provider, list(_msg91_reports(payload)))


# -- WhatsApp (Meta) ---------------------------------------------------------------------------


@_route("GET", "/whatsapp")
async def whatsapp_subscribe(request: Request) -> Response:
    """Meta's subscription handshake: echo ``hub.challenge`` when ``hub.verify_token`` is ours."""
    settings = get_settings()
    if settings.whatsapp_verify_token is None:
        raise _not_configured("WhatsApp", "whatsapp_verify_token")
    q = request.query_params
    token_ok = hmac.compare_digest(q.get("hub.verify_token", "").encode(),
                                   settings.whatsapp_verify_token.get_secret_value().encode())
    if q.get("hub.mode") != "subscribe" or not token_ok:
        raise Forbidden("The verify token does not match this server's.", code="bad-verify-token")
    # Plain text, so the echoed value is never rendered as anything.
    return PlainTextResponse(q.get("hub.challenge", "")[:200])


WHATSAPP_STATUS = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}


def _whatsapp_statuses(payload: Any) -> Iterator[tuple[str, str, str | None]]:
    entries = payload.get("entry") if isinstance(payload, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        for change in changes if isinstance(changes, list) else []:
            if not isinstance(change, dict) or change.get("field") != "messages":
                continue
            value = change.get("value") if isinstance(change.get("value"), dict) else {}
            # Incoming messages ("messages") ride the same webhook; only statuses concern delivery.
            statuses = value.get("statuses") if isinstance(value.get("statuses"), list) else []
            for item in statuses:
                if not isinstance(item, dict):
                    continue
                wamid, status = _text(item.get("id")), WHATSAPP_STATUS.get(str(item.get("status")))
                if wamid is None or status is None:
                    continue
                errors = item.get("errors") if isinstance(item.get("errors"), list) else []
                first = errors[0] if errors and isinstance(errors[0], dict) else {}
                detail = " ".join(filter(None, (_text(first.get("code")), _text(first.get("title"))))) or None
                yield wamid, status, detail


@_route("POST", "/whatsapp")
async def whatsapp_status(request: Request) -> Response:
    settings = get_settings()
    if settings.whatsapp_app_secret is None:
        raise _not_configured("WhatsApp", "whatsapp_app_secret")
    raw = await request.body()
    if not whatsapp.signature_is_valid(settings.whatsapp_app_secret.get_secret_value(), raw,
                                       request.headers.get("x-hub-signature-256")):
        raise _bad_signature("X-Hub-Signature-256")
    try:
        payload = json.loads(raw)
    except ValueError:
        raise ValidationFailed("The notification is not JSON.", code="bad-webhook-body") from None
    return await _record(request, whatsapp.WhatsAppAdapter.provider, list(_whatsapp_statuses(payload)))
