"""The provider directory in the portal: search by name, specialty, language, city, telemedicine
and whether new patients are accepted (htmx: results refresh as you type; plain GET without JS)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from carebase.platform.authz import Principal
from carebase.platform.errors import DomainError
from carebase.platform.web import DbSession, PagePrincipal
from carebase.portal.pages import render_page, templates
from carebase.providers import service

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 25
Text = Annotated[str, Query(max_length=100)]
Flag = Annotated[str, Query(max_length=5)]


def _filters(q: str, specialty: str, language: str, city: str, telemedicine_enabled: str,
             accepts_new_patients: str, verified: str) -> dict:
    """The form as the browser sends it: empty text means any; a ticked box means yes."""
    return {"q": q.strip(), "specialty": specialty.strip(), "language": language.strip(), "city": city.strip(),
            "telemedicine_enabled": bool(telemedicine_enabled), "accepts_new_patients": bool(accepts_new_patients),
            "verified": bool(verified)}


async def _results(session, principal: Principal, filters: dict, cursor: str | None) -> dict:
    try:
        page = await service.search_providers(
            session, principal, q=filters["q"] or None, specialty=filters["specialty"] or None,
            language=filters["language"] or None, city=filters["city"] or None,
            telemedicine_enabled=filters["telemedicine_enabled"] or None,
            accepts_new_patients=filters["accepts_new_patients"] or None, verified=filters["verified"] or None,
            limit=PAGE_SIZE, cursor=cursor)
    except DomainError as err:
        return {"providers": [], "more_url": None, "error": err.detail, "filters": filters}
    more_url = None
    if page.next_cursor:
        form = {k: ("on" if v is True else v) for k, v in filters.items() if v}
        more_url = "/portal/fragments/providers?" + urlencode({**form, "cursor": page.next_cursor, "rows": "1"})
    return {"providers": page.items, "more_url": more_url, "error": None, "filters": filters}


@router.get("/portal/providers", response_class=HTMLResponse)
async def providers_page(request: Request, session: DbSession, principal: PagePrincipal, q: Text = "",
                         specialty: Text = "", language: Text = "", city: Text = "", telemedicine_enabled: Flag = "",
                         accepts_new_patients: Flag = "", verified: Flag = ""):
    filters = _filters(q, specialty, language, city, telemedicine_enabled, accepts_new_patients, verified)

    async def context(p: Principal) -> dict:
        return await _results(session, p, filters, None)

    return await render_page(request, session, principal, "providers/directory.html", context)


@router.get("/portal/fragments/providers", response_class=HTMLResponse)
async def providers_fragment(request: Request, session: DbSession, principal: PagePrincipal, q: Text = "",
                             specialty: Text = "", language: Text = "", city: Text = "",
                             telemedicine_enabled: Flag = "", accepts_new_patients: Flag = "", verified: Flag = "",
                             cursor: Annotated[str | None, Query(max_length=600)] = None, rows: Flag = ""):
    if principal is None:
        return HTMLResponse("", status_code=401)
    filters = _filters(q, specialty, language, city, telemedicine_enabled, accepts_new_patients, verified)
    ctx = await _results(session, principal, filters, cursor)
    return templates.TemplateResponse(request, "providers/_rows.html" if rows else "providers/_list.html", ctx)
