"""The portal shell: sign-in, a dashboard per role, sign-out (Jinja2 + htmx + Pico CSS).

Pages call the same services as the API. The browser holds the tokens in httpOnly cookies; every
write from a page sends the CSRF token (double-submit cookie) in the X-CSRF-Token header.
"""

from __future__ import annotations

import secrets
from html import escape
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from carebase.identity import service as identity
from carebase.ops import service as ops
from carebase.patients import service as patients
from carebase.platform.authz import Principal
from carebase.platform import tokens
from carebase.platform.errors import DomainError, NotAuthenticated
from carebase.platform.money import money
from carebase.platform.web import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    REFRESH_COOKIE,
    DbSession,
    PagePrincipal,
    adopt_principal,
    cookie,
    refusable,
    request_scope,
)
from carebase.settings import get_settings
from carebase.tenants import service as tenants

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "web" / "templates")
templates.env.globals["money"] = money

ROLE_TITLES = {"admin": "Administration", "doctor": "Clinician", "nurse": "Nursing", "receptionist": "Front desk",
               "pharmacist": "Pharmacy", "lab": "Laboratory", "patient": "My health", "superadmin": "Platform"}


def _set_session_cookies(response: Response, pair: identity.TokenPair) -> None:
    settings = get_settings()
    secure = settings.secure_cookies
    response.set_cookie(ACCESS_COOKIE, pair.access_token, max_age=pair.expires_in, httponly=True, samesite="lax",
                        secure=secure, path="/")
    response.set_cookie(REFRESH_COOKIE, pair.refresh_token, max_age=settings.refresh_token_ttl_seconds,
                        httponly=True, samesite="strict", secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(24), max_age=settings.refresh_token_ttl_seconds,
                        httponly=False, samesite="strict", secure=secure, path="/")


def _clear_session_cookies(response: Response) -> None:
    for name in (ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/")


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, principal: PagePrincipal, error: str | None = None):
    if principal is not None:
        return RedirectResponse("/portal", status_code=303)
    return templates.TemplateResponse(request, "portal/login.html", {"error": error})


@router.post("/login", response_class=HTMLResponse)
async def login_submit(request: Request, session: DbSession,
                       email: Annotated[str, Form(max_length=320)], password: Annotated[str, Form(max_length=128)],
                       tenant: Annotated[str, Form(max_length=63)] = "",
                       totp_code: Annotated[str, Form(max_length=6)] = ""):
    try:
        pair = await identity.login_with_password(session, email=email, password=password, tenant=tenant or None,
                                                  totp_code=totp_code or None)
    except DomainError as err:
        if err.keep_writes:
            request_scope(request).keep_writes = True  # the failed-attempt counter still counts
        return templates.TemplateResponse(request, "portal/login.html",
                                          {"error": err.detail, "email": email, "tenant": tenant,
                                           "need_totp": err.code == "mfa-required"}, status_code=err.status)
    response = RedirectResponse("/portal", status_code=303)
    _set_session_cookies(response, pair)
    return response


async def _portal_principal(request: Request, principal: Principal | None, session) -> tuple[Principal | None,
                                                                                             identity.TokenPair | None]:
    """The signed-in person, refreshing an expired access cookie with the refresh cookie."""
    if principal is not None:
        return principal, None
    refresh = cookie(request.scope, REFRESH_COOKIE)
    if not refresh:
        return None, None
    try:
        pair = await identity.refresh(session, refresh)
    except NotAuthenticated:
        return None, None
    fresh = tokens.decode_access_token(pair.access_token)
    await adopt_principal(request, fresh)
    return fresh, pair


def refusal(message: str | DomainError, element_id: str | None = None, tag: str = "small") -> HTMLResponse:
    """A refused form's message, as the fragment htmx swaps in where the result would go."""
    text = message.detail if isinstance(message, DomainError) else message
    ident = f' id="{element_id}"' if element_id else ""
    return HTMLResponse(f'<{tag} class="error"{ident}>{escape(text)}</{tag}>')


async def form_command(session, principal: Principal | None, command: Callable[[], Awaitable[object]], *,
                       error_id: str, redirect: str | Callable[[object], str] | None = None) -> Response:
    """A portal form's command: refused with its message in place (``error_id``), or the browser
    sent to ``redirect`` (a URL, or one made from the command's result), or the page reloaded."""
    if principal is None:
        return HTMLResponse("", status_code=401)
    done = await refusable(session, command)
    if isinstance(done, DomainError):
        return refusal(done, error_id)
    if redirect is None:
        return Response(status_code=200, headers={"HX-Refresh": "true"})
    return Response(status_code=200, headers={"HX-Redirect": redirect(done) if callable(redirect) else redirect})


async def render_page(request: Request, session, principal: Principal | None, template: str,
                      context: Callable[[Principal], Awaitable[dict]]) -> Response:
    """A signed-in portal page of any domain: sends strangers to sign-in, refreshes an expired
    access cookie, and gives the template the shell's context (account, tenant, role, CSRF token)
    plus what ``context(principal)`` returns."""
    principal, fresh = await _portal_principal(request, principal, session)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    account = await identity.get_account(session, principal.account_id)
    tenant = await tenants.get_tenant(session, principal.tenant_id) if principal.tenant_id else None
    ctx = {"principal": principal, "account": account, "tenant": tenant,
           "role": principal.roles[0] if principal.roles else None,
           "csrf": cookie(request.scope, CSRF_COOKIE) or ""}
    try:
        page = await context(principal)
    except DomainError as err:
        # The HTML face of a refusal (not found, not allowed): the shell with the message, same status.
        response = templates.TemplateResponse(request, "portal/error.html", {**ctx, "error": err},
                                              status_code=err.status)
    else:
        response = templates.TemplateResponse(request, template, {**ctx, **page})
    if fresh is not None:
        _set_session_cookies(response, fresh)
    return response


@router.get("/portal", response_class=HTMLResponse)
async def dashboard(request: Request, session: DbSession, principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        ctx = {"role_title": ROLE_TITLES.get(p.roles[0], "Welcome") if p.roles else "Welcome",
               "poll_seconds": get_settings().portal_poll_seconds, "patients": [], "dead_jobs": [], "members": []}
        if p.can("read:patients"):
            ctx["patients"] = await patients.search_patients(session, p, q=None, limit=20, purpose="treatment")
        if p.can("manage:jobs"):
            ctx["dead_jobs"] = await ops.dead_jobs(session, p, limit=20)
        if p.can("read:members"):
            ctx["members"] = [((a.display_name if (a := await identity.get_account(session, m.account_id)) else None)
                               or "—", m.role) for m in await tenants.list_members(session, p)]
        return ctx

    return await render_page(request, session, principal, "portal/dashboard.html", context)


@router.get("/portal/fragments/patients", response_class=HTMLResponse)
async def patients_fragment(request: Request, session: DbSession, principal: PagePrincipal):
    if principal is None:
        return HTMLResponse("", status_code=401)
    found = await patients.search_patients(session, principal, q=None, limit=20, purpose="treatment")
    return templates.TemplateResponse(request, "portal/_patients.html", {"patients": found})


@router.post("/logout")
async def logout(request: Request, session: DbSession, principal: PagePrincipal):
    if principal is not None:
        await identity.logout(session, principal, cookie(request.scope, REFRESH_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    _clear_session_cookies(response)
    return response
