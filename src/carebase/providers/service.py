"""The provider directory: register, read and search (any member of the organization, patients
included: they pick their doctor here), correct, and verify credentials (administrators only).

Rules kept here: a valid NPI (check digit), unique per organization; a linked login must be a
member of the organization and is linked to at most one entry; ``verified`` changes only through
``verify_provider``, which records who verified and when; changing the NPI or the licence number of
a verified entry withdraws the verification, since what was verified is no longer what is shown.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform import eventstore
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.errors import Conflict, NotFound, ValidationFailed
from carebase.platform.eventstore import NewEvent
from carebase.platform.ids import new_id
from carebase.providers import events as ev
from carebase.providers.codes import COUNTRIES, LANGUAGES, npi_problem
from carebase.providers.models import providers
from carebase.tenants import service as tenants

CREDENTIAL_FIELDS = ("npi", "license_number")
MAX_PAGE = 200


@dataclass
class Provider:
    id: uuid.UUID
    tenant_id: uuid.UUID
    account_id: uuid.UUID | None
    npi: str
    license_number: str | None
    given_name: str
    family_name: str
    specialty: str
    sub_specialty: str | None
    practice_name: str | None
    country: str
    state_province: str | None
    city: str | None
    email: str | None
    phone: str | None
    languages: list[str]
    education: list[dict[str, Any]]
    certifications: list[dict[str, Any]]
    accepts_new_patients: bool
    telemedicine_enabled: bool
    verified: bool
    verified_by: uuid.UUID | None
    verified_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int

    @property
    def display_name(self) -> str:
        return f"{self.given_name} {self.family_name}"


_COLUMNS = tuple(Provider.__dataclass_fields__)


def _provider(r) -> Provider:
    m = r._mapping
    return Provider(**{k: m[k] for k in _COLUMNS})


def _not_found() -> NotFound:
    return NotFound("No such provider in your organization.", code="provider-not-found")


async def _load(session: AsyncSession, tenant_id: uuid.UUID, provider_id: uuid.UUID) -> Provider:
    r = (await session.execute(select(providers).where(providers.c.id == provider_id,
                                                       providers.c.tenant_id == tenant_id))).first()
    if r is None:
        raise _not_found()
    return _provider(r)


# -- rules -------------------------------------------------------------------------------------


def _invalid(field: str, detail: str, code: str) -> ValidationFailed:
    # Shaped like a schema error too, so clients handle both the same way.
    return ValidationFailed(detail, code=code, errors=[{"loc": ["body", field], "type": code, "msg": detail}])


def _check_fields(values: dict[str, Any]) -> None:
    """The directory's field rules, for every caller (the API's schemas check them earlier too)."""
    if "npi" in values:
        problem = npi_problem(values["npi"] or "")
        if problem:
            raise _invalid("npi", problem, "invalid-npi")
    if "country" in values and values["country"] not in COUNTRIES:
        raise _invalid("country", f"{values['country']!r} is not an ISO 3166-1 alpha-2 country code.", "bad-country")
    for lang in values.get("languages") or []:
        if lang not in LANGUAGES:
            raise _invalid("languages", f"{lang!r} is not an ISO 639-1 language code.", "bad-language")
    this_year = datetime.now(UTC).year
    for field in ("education", "certifications"):
        for item in values.get(field) or []:
            if item["year"] > this_year:
                raise _invalid(field, f"A {field} year cannot be in the future ({item['year']}).", "future-year")


async def _check_npi_free(session: AsyncSession, tenant_id: uuid.UUID, npi: str,
                          provider_id: uuid.UUID | None = None) -> None:
    query = select(providers.c.id).where(providers.c.tenant_id == tenant_id, providers.c.npi == npi)
    if provider_id is not None:
        query = query.where(providers.c.id != provider_id)
    if (await session.execute(query)).first():
        raise Conflict(f"NPI {npi} is already in this organization's directory.", code="npi-taken")


async def _check_account(session: AsyncSession, tenant_id: uuid.UUID, account_id: uuid.UUID,
                         provider_id: uuid.UUID | None = None) -> None:
    if not any(m.tenant_id == tenant_id and m.role != "patient"
               for m in await tenants.memberships_of(session, account_id)):
        raise _invalid("account_id", "That login is not a staff member of this organization; invite them first.",
                       "account-not-member")
    query = select(providers.c.id).where(providers.c.tenant_id == tenant_id, providers.c.account_id == account_id)
    if provider_id is not None:
        query = query.where(providers.c.id != provider_id)
    if (await session.execute(query)).first():
        raise Conflict("That login is already linked to another provider here.", code="account-linked")


def _event_data(values: dict[str, Any]) -> dict[str, Any]:
    data = dict(values)
    if "account_id" in data:
        data["account_id"] = str(data["account_id"]) if data["account_id"] else None
    return data


# -- commands ----------------------------------------------------------------------------------


async def register_provider(session: AsyncSession, principal: Principal, **values: Any) -> Provider:
    require(principal, "write:providers")
    tenant_id = require_tenant(principal)
    unknown = set(values) - set(ev.FIELDS)
    if unknown:
        raise ValidationFailed(f"Unknown provider fields: {', '.join(sorted(unknown))}.", code="unknown-field")
    values = {"languages": [], "education": [], "certifications": [], "accepts_new_patients": True,
              "telemedicine_enabled": False, **values}
    _check_fields(values)
    await _check_npi_free(session, tenant_id, values["npi"])
    if values.get("account_id"):
        await _check_account(session, tenant_id, values["account_id"])
    provider_id = new_id()
    await eventstore.append(session, stream_type="provider", stream_id=provider_id, tenant_id=tenant_id,
                            expected_version=0, new_events=[NewEvent(ev.REGISTERED, _event_data(values))])
    return await _load(session, tenant_id, provider_id)


async def update_provider(session: AsyncSession, principal: Principal, provider_id: uuid.UUID, *,
                          expected_version: int | None, changes: dict[str, Any]) -> Provider:
    require(principal, "write:providers")
    tenant_id = require_tenant(principal)
    provider = await _load(session, tenant_id, provider_id)
    if expected_version is not None and expected_version != provider.version:
        raise Conflict(f"This provider was changed by someone else (version {provider.version}, you had "
                       f"{expected_version}). Reload it and try again.", code="version-conflict",
                       current_version=provider.version)
    unknown = set(changes) - set(ev.FIELDS)
    if unknown:
        raise ValidationFailed(f"These provider fields cannot be changed here: {', '.join(sorted(unknown))}.",
                               code="unknown-field")
    changed = {k: v for k, v in changes.items() if getattr(provider, k) != v}
    if not changed:
        return provider
    _check_fields(changed)
    if "npi" in changed:
        await _check_npi_free(session, tenant_id, changed["npi"], provider_id)
    if changed.get("account_id"):
        await _check_account(session, tenant_id, changed["account_id"], provider_id)
    new_events = [NewEvent(ev.UPDATED, _event_data(changed))]
    if provider.verified and any(k in changed for k in CREDENTIAL_FIELDS):
        new_events.append(NewEvent(ev.UNVERIFIED, {"reason": "credentials changed",
                                                   "fields": [k for k in CREDENTIAL_FIELDS if k in changed]}))
    await eventstore.append(session, stream_type="provider", stream_id=provider_id, tenant_id=tenant_id,
                            expected_version=provider.version, new_events=new_events)
    return await _load(session, tenant_id, provider_id)


async def verify_provider(session: AsyncSession, principal: Principal, provider_id: uuid.UUID) -> Provider:
    """An administrator vouches for the entry's credentials; who and when are recorded. Verifying
    a verified entry again changes nothing (the first verification stands)."""
    require(principal, "verify:providers")
    tenant_id = require_tenant(principal)
    provider = await _load(session, tenant_id, provider_id)
    if provider.verified:
        return provider
    await eventstore.append(session, stream_type="provider", stream_id=provider_id, tenant_id=tenant_id,
                            expected_version=provider.version,
                            new_events=[NewEvent(ev.VERIFIED, {"verified_by": str(principal.account_id)})])
    return await _load(session, tenant_id, provider_id)


# -- queries -----------------------------------------------------------------------------------


async def get_provider(session: AsyncSession, principal: Principal, provider_id: uuid.UUID) -> Provider:
    require(principal, "read:providers")
    return await _load(session, require_tenant(principal), provider_id)


async def provider_of_account(session: AsyncSession, principal: Principal, account_id: uuid.UUID) -> Provider | None:
    """The directory entry linked to a login in the caller's organization, if any."""
    require(principal, "read:providers")
    r = (await session.execute(select(providers).where(providers.c.tenant_id == require_tenant(principal),
                                                       providers.c.account_id == account_id))).first()
    return _provider(r) if r else None


async def provider_by_npi(session: AsyncSession, principal: Principal, npi: str) -> Provider | None:
    require(principal, "read:providers")
    r = (await session.execute(select(providers).where(providers.c.tenant_id == require_tenant(principal),
                                                       providers.c.npi == npi))).first()
    return _provider(r) if r else None


_SORT = (func.lower(providers.c.family_name), func.lower(providers.c.given_name), providers.c.id)


def _encode_cursor(row) -> str:
    # The sort key as PostgreSQL computed it: Python's lower() differs for a few letters.
    raw = json.dumps([row.sort_family, row.sort_given, str(row.id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str, uuid.UUID]:
    try:
        family, given, pid = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(family, str) or not isinstance(given, str):
            raise ValueError
        return family, given, uuid.UUID(pid)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed("The cursor is not one this API gave out; start again without it.",
                               code="bad-cursor") from None


@dataclass
class Page:
    items: list[Provider]
    next_cursor: str | None


async def search_providers(session: AsyncSession, principal: Principal, *, q: str | None = None,
                           specialty: str | None = None, language: str | None = None, city: str | None = None,
                           telemedicine_enabled: bool | None = None, accepts_new_patients: bool | None = None,
                           verified: bool | None = None, limit: int = 50, cursor: str | None = None) -> Page:
    """Filters combine (AND); sorted by family name, given name, then id, so pages are stable and
    every entry appears exactly once while the directory does not change."""
    require(principal, "read:providers")
    tenant_id = require_tenant(principal)
    limit = max(1, min(limit, MAX_PAGE))
    query = select(providers, _SORT[0].label("sort_family"), _SORT[1].label("sort_given")).where(
        providers.c.tenant_id == tenant_id)
    if q:
        prefix = q.strip().lower()
        query = query.where(or_(
            func.lower(providers.c.family_name).startswith(prefix, autoescape=True),
            func.lower(providers.c.given_name).startswith(prefix, autoescape=True),
            func.lower(providers.c.given_name + " " + providers.c.family_name).startswith(prefix, autoescape=True)))
    if specialty:
        s = specialty.strip().lower()
        query = query.where(or_(func.lower(providers.c.specialty) == s, func.lower(providers.c.sub_specialty) == s))
    if language:
        query = query.where(providers.c.languages.contains([language.strip().lower()]))
    if city:
        query = query.where(func.lower(providers.c.city) == city.strip().lower())
    if telemedicine_enabled is not None:
        query = query.where(providers.c.telemedicine_enabled.is_(telemedicine_enabled))
    if accepts_new_patients is not None:
        query = query.where(providers.c.accepts_new_patients.is_(accepts_new_patients))
    if verified is not None:
        query = query.where(providers.c.verified.is_(verified))
    if cursor:
        query = query.where(tuple_(*_SORT) > tuple_(*_decode_cursor(cursor)))
    rows = (await session.execute(query.order_by(*_SORT).limit(limit + 1))).all()
    found = [_provider(r) for r in rows[:limit]]
    return Page(found, _encode_cursor(rows[limit - 1]) if len(rows) > limit else None)
