"""Tenants API: the caller's organization, its locations and its staff."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from carebase.identity import service as identity
from carebase.platform.web import CurrentPrincipal, DbSession
from carebase.tenants import schemas, service

router = APIRouter(prefix="/api/v1", tags=["tenants"])


def _tenant(t: service.Tenant) -> schemas.TenantOut:
    return schemas.TenantOut(id=t.id, slug=t.slug, name=t.name, kind=t.kind, parent_id=t.parent_id,
                             timezone=t.timezone, created_at=t.created_at)


def _location(loc: service.Location) -> schemas.LocationOut:
    return schemas.LocationOut(id=loc.id, name=loc.name, address=loc.address, timezone=loc.timezone,
                               created_at=loc.created_at)


@router.get("/tenants/current", response_model=schemas.TenantOut, summary="The organization you are signed in to")
async def current_tenant(principal: CurrentPrincipal, session: DbSession) -> schemas.TenantOut:
    return _tenant(await service.current_tenant(session, principal))


@router.get("/tenants/{tenant_id}", response_model=schemas.TenantOut, summary="An organization you belong to")
async def get_tenant(tenant_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.TenantOut:
    return _tenant(await service.visible_tenant(session, principal, tenant_id))


@router.get("/locations", response_model=list[schemas.LocationOut], summary="Locations of your organization")
async def list_locations(principal: CurrentPrincipal, session: DbSession) -> list[schemas.LocationOut]:
    return [_location(loc) for loc in await service.list_locations(session, principal)]


@router.post("/locations", status_code=status.HTTP_201_CREATED, response_model=schemas.LocationOut,
             summary="Add a location (needs manage:locations)")
async def add_location(body: schemas.LocationIn, principal: CurrentPrincipal, session: DbSession) -> schemas.LocationOut:
    return _location(await service.add_location(session, principal, name=body.name, address=body.address,
                                                timezone=body.timezone))


@router.get("/locations/{location_id}", response_model=schemas.LocationOut, summary="One location")
async def get_location(location_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.LocationOut:
    return _location(await service.get_location(session, principal, location_id))


@router.get("/members", response_model=list[schemas.MemberOut], summary="Staff of your organization")
async def list_members(principal: CurrentPrincipal, session: DbSession) -> list[schemas.MemberOut]:
    out = []
    for m in await service.list_members(session, principal):
        account = await identity.get_account(session, m.account_id)
        out.append(schemas.MemberOut(id=m.id, account_id=m.account_id, email=account.email if account else None,
                                     display_name=account.display_name if account else None, role=m.role,
                                     created_at=m.created_at))
    return out


@router.post("/members", status_code=status.HTTP_201_CREATED, response_model=schemas.MemberOut,
             summary="Give a person a staff role (new people get an invitation e-mail); needs manage:members")
async def add_member(body: schemas.MemberIn, principal: CurrentPrincipal, session: DbSession) -> schemas.MemberOut:
    m, invited = await service.add_member(session, principal, email=body.email, display_name=body.display_name,
                                          role=body.role)
    account = await identity.get_account(session, m.account_id)
    return schemas.MemberOut(id=m.id, account_id=m.account_id, email=account.email if account else None,
                             display_name=account.display_name if account else None, role=m.role,
                             created_at=m.created_at, invited=invited)


@router.delete("/members/{membership_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Take a staff role away; needs manage:members")
async def remove_member(membership_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.remove_member(session, principal, membership_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
