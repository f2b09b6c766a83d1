"""Notifications in the portal: your notices (live), your notification settings with browser push,
and for admins the delivery log: rates per channel, dead letters with every attempt."""

from __future__ import annotations

import uuid
from datetime import time
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from carebase.notifications import service
from carebase.notifications.catalog import CATEGORIES, LANGUAGES, MANDATORY
from carebase.notifications.routes import PreferencesIn
from carebase.platform.authz import Principal
from carebase.platform.channels import CHANNELS
from carebase.platform.errors import DomainError
from carebase.platform.web import DbSession, PagePrincipal, refusable
from carebase.portal.pages import refusal, render_page, templates
from carebase.settings import get_settings

router = APIRouter(include_in_schema=False)

LANGUAGE_NAMES = {"en": "English", "hi": "हिन्दी (Hindi)"}


async def _inbox(session, principal: Principal) -> dict:
    return {"notices": await service.mine(session, principal, limit=100),
            "unread": await service.unread_count(session, principal),
            "poll_seconds": get_settings().portal_poll_seconds}


@router.get("/portal/notifications", response_class=HTMLResponse)
async def inbox_page(request: Request, session: DbSession, principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        return await _inbox(session, p)

    return await render_page(request, session, principal, "notifications/pages/inbox.html", context)


@router.get("/portal/fragments/notifications", response_class=HTMLResponse)
async def inbox_fragment(request: Request, session: DbSession, principal: PagePrincipal):
    if principal is None:
        return HTMLResponse("", status_code=401)
    return templates.TemplateResponse(request, "notifications/pages/_inbox.html", await _inbox(session, principal))


def _settings_context(profile: service.Profile) -> dict:
    s = get_settings()
    return {"profile": profile, "categories": CATEGORIES, "mandatory": MANDATORY, "channels": CHANNELS,
            "languages": [(code, LANGUAGE_NAMES.get(code, code)) for code in LANGUAGES],
            "vapid_public_key": s.vapid_public_key if s.push_provider == "remote" else None}


@router.get("/portal/notification-settings", response_class=HTMLResponse)
async def settings_page(request: Request, session: DbSession, principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        return _settings_context(await service.get_preferences(session, p))

    return await render_page(request, session, principal, "notifications/pages/settings.html", context)


def _time(value: str) -> time | None:
    return time.fromisoformat(value) if value else None


Short = Annotated[str, Form(max_length=64)]
Switches = Annotated[list[Annotated[str, Form(max_length=32)]], Form(max_length=20)]


@router.post("/portal/notification-settings", response_class=HTMLResponse)
async def save_settings(request: Request, session: DbSession, principal: PagePrincipal, language: Short = "en",
                        timezone: Short = "", quiet_start: Short = "", quiet_end: Short = "",
                        category_on: Switches = [], channel_on: Switches = []):  # noqa: B006 - FastAPI copies
    if principal is None:
        return HTMLResponse("", status_code=401)
    try:
        body = PreferencesIn.model_validate({
            "language": language, "timezone": timezone.strip() or None,
            "quiet_start": _time(quiet_start), "quiet_end": _time(quiet_end),
            # The form shows what is on; the settings keep what is off. Mandatory ones are never off.
            "categories_off": [c for c in CATEGORIES if c not in category_on and c not in MANDATORY],
            "channels_off": [c for c in CHANNELS if c not in channel_on]})
    except (ValidationError, ValueError) as err:
        detail = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
        return refusal(detail, "settings-result")
    saved = await refusable(session, lambda: service.set_preferences(session, principal, **body.model_dump()))
    if isinstance(saved, DomainError):
        return refusal(saved, "settings-result")
    return HTMLResponse('<small id="settings-result">Saved.</small>')


@router.get("/portal/deliveries", response_class=HTMLResponse)
async def deliveries_page(request: Request, session: DbSession, principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        stats = await service.channel_stats(session, p)
        return {"stats": stats, "dead": await service.deliveries(session, p, status="dead", limit=50),
                "recent": await service.deliveries(session, p, limit=50),
                "chart": {"labels": [f"{s['channel']} · {s['provider']}" for s in stats],
                          "rates": [round((s["rate"] or 0) * 100, 1) for s in stats]}}

    return await render_page(request, session, principal, "notifications/pages/deliveries.html", context)


@router.post("/portal/notifications/{notification_id}/read", response_class=HTMLResponse)
async def read_from_page(request: Request, notification_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    if principal is None:
        return HTMLResponse("", status_code=401)
    done = await refusable(session, lambda: service.mark_read(session, principal, notification_id))
    if isinstance(done, DomainError):
        return refusal(done)
    return templates.TemplateResponse(request, "notifications/pages/_inbox.html", await _inbox(session, principal))


@router.post("/portal/notifications/read-all", response_class=HTMLResponse)
async def read_all_from_page(request: Request, session: DbSession, principal: PagePrincipal):
    if principal is None:
        return HTMLResponse("", status_code=401)
    await service.mark_all_read(session, principal)
    return templates.TemplateResponse(request, "notifications/pages/_inbox.html", await _inbox(session, principal))
