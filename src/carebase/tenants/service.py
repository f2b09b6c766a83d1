"""Tenants: organizations (clinic, chain, hospital, pharmacy, lab, platform), their locations and
memberships (which account holds which role where)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, available_timezones

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform import eventstore
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.db import all_rows, set_context
from carebase.platform.errors import Conflict, NotFound, ValidationFailed
from carebase.platform.eventstore import NewEvent
from carebase.platform.ids import new_id
from carebase.tenants import events as ev
from carebase.tenants.models import locations, memberships, tenants

KINDS = ("clinic", "chain", "hospital", "pharmacy", "lab", "platform")
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass
class Tenant:
    id: uuid.UUID
    slug: str
    name: str
    kind: str
    parent_id: uuid.UUID | None
    timezone: str
    created_at: datetime


@dataclass
class Location:
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    address: str | None
    timezone: str
    created_at: datetime


@dataclass
class Membership:
    id: uuid.UUID
    tenant_id: uuid.UUID
    tenant_slug: str
    tenant_name: str
    account_id: uuid.UUID
    role: str
    created_at: datetime


def _tenant(row) -> Tenant:
    return Tenant(row.id, row.slug, row.name, row.kind, row.parent_id, row.timezone, row.created_at)


def _check_timezone(tz: str) -> str:
    if tz not in available_timezones():
        raise ValidationFailed(f"'{tz}' is not an IANA time zone (for example 'Asia/Kolkata').", code="bad-timezone")
    ZoneInfo(tz)
    return tz


async def create_tenant(session: AsyncSession, *, slug: str, name: str, kind: str, timezone: str,
                        parent_id: uuid.UUID | None = None) -> Tenant:
    """Create an organization. Platform operation: runs as the owner or a superadmin's tool."""
    if not _SLUG.match(slug):
        raise ValidationFailed("The slug may use lower-case letters, digits and dashes.", code="bad-slug")
    if kind not in KINDS:
        raise ValidationFailed(f"kind must be one of {', '.join(KINDS)}.", code="bad-kind")
    _check_timezone(timezone)
    if await get_tenant_by_ref(session, slug):
        raise Conflict(f"The slug '{slug}' is taken.", code="slug-taken")
    tenant_id = new_id()
    await eventstore.append(session, stream_type="tenant", stream_id=tenant_id, tenant_id=tenant_id,
                            expected_version=0, new_events=[NewEvent(ev.TENANT_CREATED, {
                                "slug": slug, "name": name, "kind": kind, "timezone": timezone,
                                "parent_id": str(parent_id) if parent_id else None})])
    tenant = await get_tenant(session, tenant_id)
    assert tenant is not None
    return tenant


async def get_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> Tenant | None:
    row = (await session.execute(select(tenants).where(tenants.c.id == tenant_id))).first()
    return _tenant(row) if row else None


async def get_tenant_by_ref(session: AsyncSession, ref: str) -> Tenant | None:
    """A tenant by slug or id."""
    try:
        cond = tenants.c.id == uuid.UUID(ref)
    except ValueError:
        cond = tenants.c.slug == ref.lower()
    row = (await session.execute(select(tenants).where(cond))).first()
    return _tenant(row) if row else None


async def current_tenant(session: AsyncSession, principal: Principal) -> Tenant:
    tenant = await get_tenant(session, require_tenant(principal))
    if tenant is None:
        raise NotFound("Your organization no longer exists.")
    return tenant


async def visible_tenant(session: AsyncSession, principal: Principal, tenant_id: uuid.UUID) -> Tenant:
    if tenant_id != principal.tenant_id and not principal.can("*"):
        raise NotFound("No such organization.")
    tenant = await get_tenant(session, tenant_id)
    if tenant is None:
        raise NotFound("No such organization.")
    return tenant


# -- locations ---------------------------------------------------------------------------------


async def add_location(session: AsyncSession, principal: Principal, *, name: str, address: str | None,
                       timezone: str | None) -> Location:
    require(principal, "manage:locations")
    tenant = await current_tenant(session, principal)
    tz = _check_timezone(timezone) if timezone else tenant.timezone
    location_id = new_id()
    await eventstore.append(session, stream_type="location", stream_id=location_id, tenant_id=tenant.id,
                            expected_version=0, new_events=[NewEvent(ev.LOCATION_ADDED, {
                                "name": name, "address": address, "timezone": tz})])
    return await get_location(session, principal, location_id)


async def list_locations(session: AsyncSession, principal: Principal) -> list[Location]:
    tenant_id = require_tenant(principal)
    rows = (await session.execute(select(locations).where(locations.c.tenant_id == tenant_id)
                                  .order_by(locations.c.name))).all()
    return [Location(r.id, r.tenant_id, r.name, r.address, r.timezone, r.created_at) for r in rows]


async def get_location(session: AsyncSession, principal: Principal, location_id: uuid.UUID) -> Location:
    tenant_id = require_tenant(principal)
    r = (await session.execute(select(locations).where(locations.c.id == location_id,
                                                       locations.c.tenant_id == tenant_id))).first()
    if r is None:
        raise NotFound("No such location in your organization.")
    return Location(r.id, r.tenant_id, r.name, r.address, r.timezone, r.created_at)


# -- memberships -------------------------------------------------------------------------------


async def add_membership(session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID, role: str) -> uuid.UUID:
    exists = (await session.execute(select(memberships.c.id).where(
        memberships.c.tenant_id == tenant_id, memberships.c.account_id == account_id, memberships.c.role == role,
        memberships.c.revoked_at.is_(None)))).first()
    if exists:
        raise Conflict(f"This person is already a {role} here.", code="already-member")
    membership_id = new_id()
    await eventstore.append(session, stream_type="membership", stream_id=membership_id, tenant_id=tenant_id,
                            expected_version=0, new_events=[NewEvent(ev.MEMBER_ADDED, {
                                "account_id": str(account_id), "role": role})])
    return membership_id


async def join_as_patient(session: AsyncSession, tenant: Tenant, account_id: uuid.UUID) -> uuid.UUID:
    """Self-registration: the new account acts inside the clinic it joins."""
    await set_context(session, tenant.id, account_id)
    return await add_membership(session, tenant_id=tenant.id, account_id=account_id, role="patient")


# Plain SQL: every GET /api/v1/me reads this (see db.first_row).
_MEMBERSHIPS_SQL = (
    f"SELECT m.id, m.tenant_id, t.slug, t.name, m.account_id, m.role, m.created_at FROM {memberships.name} m "
    f"JOIN {tenants.name} t ON t.id = m.tenant_id WHERE m.account_id = %s AND m.revoked_at IS NULL "
    "ORDER BY m.created_at, m.id")


async def memberships_of(session: AsyncSession, account_id: uuid.UUID) -> list[Membership]:
    return [Membership(*r) for r in await all_rows(session, _MEMBERSHIPS_SQL, (account_id,))]


async def list_members(session: AsyncSession, principal: Principal) -> list[Membership]:
    require(principal, "read:members", "manage:members")
    tenant_id = require_tenant(principal)
    rows = (await session.execute(
        select(memberships, tenants.c.slug, tenants.c.name)
        .join(tenants, tenants.c.id == memberships.c.tenant_id)
        .where(memberships.c.tenant_id == tenant_id, memberships.c.revoked_at.is_(None),
               memberships.c.role != "patient")
        .order_by(memberships.c.created_at))).all()
    return [Membership(r.id, r.tenant_id, r.slug, r.name, r.account_id, r.role, r.created_at) for r in rows]


async def grant_role(session: AsyncSession, *, tenant_id: uuid.UUID, email: str, display_name: str,
                     role: str) -> tuple[uuid.UUID, bool]:
    """Give the person with this e-mail a role in a tenant. A new person gets an account without a
    password and an e-mailed invitation (a password-reset link). Returns (membership id, invited)."""
    from carebase.identity import service as identity

    account, created = await identity.ensure_account(session, email=email, display_name=display_name)
    membership_id = await add_membership(session, tenant_id=tenant_id, account_id=account.id, role=role)
    if created:
        await identity.request_password_reset(session, email)
    return membership_id, created


async def add_member(session: AsyncSession, principal: Principal, *, email: str, display_name: str,
                     role: str) -> tuple[Membership, bool]:
    """An admin gives a person a staff role in their own organization."""
    require(principal, "manage:members")
    tenant_id = require_tenant(principal)
    membership_id, invited = await grant_role(session, tenant_id=tenant_id, email=email, display_name=display_name,
                                              role=role)
    member = next(m for m in await list_members(session, principal) if m.id == membership_id)
    return member, invited


async def onboard_tenant(session: AsyncSession, *, slug: str, name: str, kind: str, timezone: str,
                         admin_email: str, admin_name: str) -> tuple[Tenant, bool]:
    """Operator onboarding: a new organization and its first admin (invited by e-mail if new)."""
    tenant = await create_tenant(session, slug=slug, name=name, kind=kind, timezone=timezone)
    await set_context(session, tenant.id, None)
    _, invited = await grant_role(session, tenant_id=tenant.id, email=admin_email, display_name=admin_name,
                                  role="admin")
    return tenant, invited


async def remove_member(session: AsyncSession, principal: Principal, membership_id: uuid.UUID) -> None:
    require(principal, "manage:members")
    tenant_id = require_tenant(principal)
    row = (await session.execute(select(memberships).where(
        memberships.c.id == membership_id, memberships.c.tenant_id == tenant_id,
        memberships.c.revoked_at.is_(None)))).first()
    if row is None:
        raise NotFound("No such member in your organization.")
    if row.account_id == principal.account_id and row.role == "admin":
        raise Conflict("You cannot remove your own admin role; ask another admin.", code="self-removal")
    await eventstore.append(session, stream_type="membership", stream_id=membership_id, tenant_id=tenant_id,
                            expected_version=1, new_events=[NewEvent(ev.MEMBER_REMOVED, {})])


CARE_TEAM_ROLES = ("doctor", "nurse", "receptionist", "pharmacist")


async def care_team(session: AsyncSession, tenant_id: uuid.UUID) -> dict[uuid.UUID, str]:
    """The staff a patient of this organization may write to, by account: {account_id: role}."""
    rows = (await session.execute(select(memberships.c.account_id, memberships.c.role).where(
        memberships.c.tenant_id == tenant_id, memberships.c.revoked_at.is_(None),
        memberships.c.role.in_(CARE_TEAM_ROLES)).order_by(memberships.c.created_at))).all()
    return {r.account_id: r.role for r in rows}


async def accounts_with_role(session: AsyncSession, tenant_id: uuid.UUID, role: str) -> list[uuid.UUID]:
    """Who holds ``role`` in the organization now (for the notices their role is for)."""
    return list((await session.execute(select(memberships.c.account_id).where(
        memberships.c.tenant_id == tenant_id, memberships.c.revoked_at.is_(None), memberships.c.role == role)
        .order_by(memberships.c.created_at))).scalars())
