"""Provider directory API: every signed-in member of the organization (patients too) can search
and read it; administrators add, correct and verify entries."""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Query, Request, Response, status

from carebase.platform.web import CurrentPrincipal, DbSession, if_match_version, weak_etag
from carebase.providers import schemas, service

router = APIRouter(prefix="/api/v1", tags=["providers"])


def _out(p: service.Provider) -> schemas.ProviderOut:
    return schemas.ProviderOut(**{k: getattr(p, k) for k in schemas.ProviderOut.model_fields})


@router.post("/providers", status_code=status.HTTP_201_CREATED, response_model=schemas.ProviderOut,
             summary="Add a provider to the directory (needs write:providers); NPI check digit is validated")
async def register_provider(body: schemas.ProviderIn, principal: CurrentPrincipal, session: DbSession,
                            response: Response) -> schemas.ProviderOut:
    p = await service.register_provider(session, principal, **body.model_dump())
    response.headers["ETag"] = weak_etag(p.version)
    response.headers["Location"] = f"/api/v1/providers/{p.id}"
    return _out(p)


@router.get("/providers", response_model=schemas.ProviderPage,
            summary="Search the provider directory (any member); filters combine, pages follow `next`")
async def search_providers(
    request: Request, principal: CurrentPrincipal, session: DbSession,
    q: Annotated[str | None, Query(max_length=100, description="Name prefix (given, family or full name)")] = None,
    specialty: Annotated[str | None, Query(max_length=100, description="Specialty or sub-specialty")] = None,
    language: Annotated[str | None, Query(pattern=r"^[A-Za-z]{2}$", description="ISO 639-1, e.g. hi")] = None,
    city: Annotated[str | None, Query(max_length=100)] = None,
    telemedicine_enabled: bool | None = None,
    accepts_new_patients: bool | None = None,
    verified: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=600, description="next_cursor of the previous page")] = None,
) -> schemas.ProviderPage:
    page = await service.search_providers(
        session, principal, q=q, specialty=specialty, language=language, city=city,
        telemedicine_enabled=telemedicine_enabled, accepts_new_patients=accepts_new_patients, verified=verified,
        limit=limit, cursor=cursor)
    nxt = None
    if page.next_cursor:
        params = {k: v for k, v in request.query_params.items() if k != "cursor"}
        nxt = f"{request.url.path}?{urlencode({**params, 'cursor': page.next_cursor})}"
    return schemas.ProviderPage(items=[_out(p) for p in page.items], next_cursor=page.next_cursor, next=nxt)


@router.get("/providers/{provider_id}", response_model=schemas.ProviderOut, summary="One provider (any member)")
async def get_provider(provider_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession,
                       response: Response) -> schemas.ProviderOut:
    p = await service.get_provider(session, principal, provider_id)
    response.headers["ETag"] = weak_etag(p.version)
    return _out(p)


@router.patch("/providers/{provider_id}", response_model=schemas.ProviderOut,
              summary="Correct a provider (needs write:providers); send If-Match with the ETag you read. "
                      "Changing the NPI or licence of a verified provider withdraws the verification")
async def update_provider(provider_id: uuid.UUID, body: schemas.ProviderPatch, principal: CurrentPrincipal,
                          session: DbSession, response: Response,
                          if_match: Annotated[str | None, Header(max_length=40)] = None) -> schemas.ProviderOut:
    p = await service.update_provider(session, principal, provider_id, expected_version=if_match_version(if_match),
                                      changes=body.model_dump(exclude_unset=True))
    response.headers["ETag"] = weak_etag(p.version)
    return _out(p)


@router.post("/providers/{provider_id}/verify", response_model=schemas.ProviderOut,
             summary="Mark a provider's credentials verified (needs verify:providers; records who and when)")
async def verify_provider(provider_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession,
                          response: Response) -> schemas.ProviderOut:
    p = await service.verify_provider(session, principal, provider_id)
    response.headers["ETag"] = weak_etag(p.version)
    return _out(p)
