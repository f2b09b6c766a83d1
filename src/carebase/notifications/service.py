"""Notifying people: one call from any domain, ``notify(session, tenant_id=…, account_id=…,
type="appointment.reminder", data={…}, event_key=…)``.

In the caller's transaction it reads the recipient's settings (language, quiet hours, opt-outs),
renders the type's template in their language, leaves the in-app notice (live over SSE) and queues
the delivery along the type's channel chain (``platform.delivery``): the worker sends it; nothing
is sent inside a request. Opted-out categories and people over their hourly limit get a
``suppressed`` delivery in the log instead; quiet hours hold non-urgent messages until morning.
Addresses (e-mail, phone, push devices) are looked up by the worker, when it sends.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound
from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.identity import service as identity
from carebase.notifications.catalog import CATEGORIES, LANGUAGES, MANDATORY, TYPES
from carebase.notifications.models import notification_profiles, notifications, push_devices
from carebase.platform import delivery, realtime
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.channels import CHANNELS
from carebase.platform.errors import NotFound, ValidationFailed
from carebase.platform.ids import new_id
from carebase.settings import get_settings
from carebase.tenants import service as tenants

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "web" / "templates" / "notifications"),
    undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True)


@dataclass
class Notification:
    id: uuid.UUID
    kind: str
    title: str
    body: str
    link: str | None
    created_at: datetime
    read_at: datetime | None


@dataclass
class Profile:
    language: str = "en"
    timezone: str | None = None
    quiet_start: time | None = None
    quiet_end: time | None = None
    categories_off: tuple[str, ...] = ()
    channels_off: tuple[str, ...] = ()


def render(type: str, language: str, data: dict[str, Any]) -> delivery.Content:
    """The type's template in ``language`` (English when there is none), as title, short and body."""
    try:
        template = _templates.get_template(f"{language}/{type}.txt")
    except TemplateNotFound:
        template = _templates.get_template(f"en/{type}.txt")
    ctx = template.new_context({"d": data})
    parts = {name: "".join(block(ctx)).strip() for name, block in template.blocks.items()}
    return delivery.Content(title=parts["title"], short=parts.get("short") or parts["title"],
                            body=parts.get("body") or parts.get("short") or parts["title"], link=data.get("link"))


async def _profile(session: AsyncSession, account_id: uuid.UUID) -> Profile:
    found = await session.scalar(text("SELECT notification_profile(:a)"), {"a": account_id})
    if not found:
        return Profile()
    raw = found if isinstance(found, dict) else json.loads(found)
    return Profile(language=raw["language"], timezone=raw["timezone"],
                   quiet_start=time.fromisoformat(raw["quiet_start"]) if raw["quiet_start"] else None,
                   quiet_end=time.fromisoformat(raw["quiet_end"]) if raw["quiet_end"] else None,
                   categories_off=tuple(raw["categories_off"]), channels_off=tuple(raw["channels_off"]))


def quiet_until(profile: Profile, zone: str, now: datetime) -> datetime | None:
    """When the person's quiet hours end, if ``now`` falls inside them (they may span midnight)."""
    if profile.quiet_start is None or profile.quiet_end is None or profile.quiet_start == profile.quiet_end:
        return None
    try:
        tz = ZoneInfo(profile.timezone or zone)
    except ZoneInfoNotFoundError:
        tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    start, end, t = profile.quiet_start, profile.quiet_end, local.time()
    inside = (start <= t < end) if start < end else (t >= start or t < end)
    if not inside:
        return None
    day = local.date() if t < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=tz).astimezone(UTC)


# Messages that cannot be switched off are never limited, and do not use up the allowance either:
# an order's six status updates must not silence the prescription approved an hour later.
_LIMITED_KINDS = tuple(t.name for t in TYPES.values() if t.category not in MANDATORY and not t.urgent)


async def _sent_last_hour(session: AsyncSession, account_id: uuid.UUID) -> int:
    return await session.scalar(select(func.count()).select_from(delivery.deliveries).where(
        delivery.deliveries.c.account_id == account_id, delivery.deliveries.c.kind.in_(_LIMITED_KINDS),
        delivery.deliveries.c.status != "suppressed",
        delivery.deliveries.c.created_at > func.now() - timedelta(hours=1)))


async def notify(session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID, type: str,
                 data: dict[str, Any], event_key: str, link: str | None = None) -> bool:
    """Tell ``account_id`` about something, once per ``event_key``. False: already told, or
    suppressed by their settings (the log says which)."""
    kind = TYPES[type]
    profile = await _profile(session, account_id)
    tenant = await tenants.get_tenant(session, tenant_id)
    content = render(type, profile.language if profile.language in LANGUAGES else "en", {**data, "link": link})
    dedupe = f"{account_id}:{type}:{event_key}"
    reason = None
    if kind.category in profile.categories_off and kind.category not in MANDATORY:
        reason = f"{kind.category} switched off by the recipient"
    elif (not kind.urgent and kind.category not in MANDATORY
          and await _sent_last_hour(session, account_id) >= get_settings().notification_rate_per_hour):
        reason = f"over {get_settings().notification_rate_per_hour} notifications in the last hour"
    if reason:
        await session.execute(insert(delivery.deliveries).values(
            id=new_id(), tenant_id=tenant_id, account_id=account_id, kind=type, dedupe_key=dedupe,
            chain=list(kind.chain), addresses={}, content={"title": content.title}, urgent=kind.urgent, step=0,
            status="suppressed", reason=reason, finished_at=func.now()).on_conflict_do_nothing())
        return False
    notice_id = new_id()
    left = await session.execute(insert(notifications).values(
        id=notice_id, tenant_id=tenant_id, account_id=account_id, kind=type, title=content.title[:200],
        body=content.body, link=link, dedupe_key=dedupe[:200]).on_conflict_do_nothing().returning(notifications.c.id))
    if left.first() is None:
        return False  # told already (a job that ran twice)
    await realtime.publish(session, f"account:{account_id}", {"type": "notification", "id": str(notice_id),
                                                              "kind": type})
    chain = [c for c in kind.chain if kind.category in MANDATORY or c not in profile.channels_off]
    if not chain:
        return True  # every outside channel switched off: the in-app notice is the delivery
    wait = None if kind.urgent else quiet_until(profile, tenant.timezone if tenant else "UTC", datetime.now(UTC))
    await delivery.deliver(session, kind=type, chain=chain, addresses={}, content=content, tenant_id=tenant_id,
                           account_id=account_id, urgent=kind.urgent, not_before=wait, dedupe_key=dedupe)
    return True


class _Recipients:
    """What the delivery engine asks of this domain (it runs in the worker, as the owner)."""

    async def addresses(self, session: AsyncSession, account_id: uuid.UUID) -> dict[str, Any]:
        return await _addresses(session, account_id)

    async def forget_devices(self, session: AsyncSession, account_id: uuid.UUID, gone: list[str]) -> None:
        await session.execute(delete(push_devices).where(push_devices.c.account_id == account_id,
                                                         push_devices.c.address.in_(gone)))


async def _addresses(session: AsyncSession, account_id: uuid.UUID) -> dict[str, Any]:
    """Where the worker can reach a person now, across tenants."""
    account = await identity.get_account(session, account_id)
    found: dict[str, Any] = {}
    if account and account.email:
        found["email"] = account.email
    if account and account.phone:
        found["sms"] = found["whatsapp"] = account.phone
    devices = (await session.execute(select(push_devices).where(push_devices.c.account_id == account_id))).all()
    if devices:
        found["push"] = [{"kind": d.kind, "endpoint": d.address, "keys": d.keys} if d.kind == "webpush"
                         else {"kind": d.kind, "token": d.address} for d in devices]
    return found


delivery.set_recipients(_Recipients())


# -- a person's own notices and settings ----------------------------------------------------------


async def mine(session: AsyncSession, principal: Principal, *, unread_only: bool = False,
               limit: int = 50) -> list[Notification]:
    tenant_id = require_tenant(principal)
    query = select(notifications).where(notifications.c.tenant_id == tenant_id,
                                        notifications.c.account_id == principal.account_id)
    if unread_only:
        query = query.where(notifications.c.read_at.is_(None))
    rows = (await session.execute(query.order_by(notifications.c.created_at.desc()).limit(limit))).all()
    return [Notification(r.id, r.kind, r.title, r.body, r.link, r.created_at, r.read_at) for r in rows]


async def unread_count(session: AsyncSession, principal: Principal) -> int:
    tenant_id = require_tenant(principal)
    return await session.scalar(select(func.count()).select_from(notifications).where(
        notifications.c.tenant_id == tenant_id, notifications.c.account_id == principal.account_id,
        notifications.c.read_at.is_(None)))


def _mine(principal: Principal, tenant_id: uuid.UUID):
    return (notifications.c.tenant_id == tenant_id) & (notifications.c.account_id == principal.account_id)


async def mark_read(session: AsyncSession, principal: Principal, notification_id: uuid.UUID) -> None:
    tenant_id = require_tenant(principal)
    done = await session.execute(notifications.update().where(
        notifications.c.id == notification_id, _mine(principal, tenant_id))
        .values(read_at=func.coalesce(notifications.c.read_at, func.now())).returning(notifications.c.id))
    if done.first() is None:
        raise NotFound("No such notification.", code="notification-not-found")


async def mark_all_read(session: AsyncSession, principal: Principal) -> int:
    tenant_id = require_tenant(principal)
    done = await session.execute(notifications.update().where(
        _mine(principal, tenant_id), notifications.c.read_at.is_(None)).values(read_at=func.now()))
    return done.rowcount


async def delete_notification(session: AsyncSession, principal: Principal, notification_id: uuid.UUID) -> None:
    tenant_id = require_tenant(principal)
    done = await session.execute(delete(notifications).where(
        notifications.c.id == notification_id, _mine(principal, tenant_id)).returning(notifications.c.id))
    if done.first() is None:
        raise NotFound("No such notification.", code="notification-not-found")


async def get_preferences(session: AsyncSession, principal: Principal) -> Profile:
    return await _profile(session, principal.account_id)


async def set_preferences(session: AsyncSession, principal: Principal, *, language: str,
                          timezone: str | None, quiet_start: time | None, quiet_end: time | None,
                          categories_off: list[str], channels_off: list[str]) -> Profile:
    if language not in LANGUAGES:
        raise ValidationFailed(f"Notifications come in {', '.join(LANGUAGES)}.", code="bad-language")
    if (quiet_start is None) != (quiet_end is None):
        raise ValidationFailed("Quiet hours need both a start and an end (or neither).", code="bad-quiet-hours")
    if timezone:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationFailed(f"{timezone!r} is not a time zone (like Asia/Kolkata).",
                                   code="bad-timezone") from None
    unknown = sorted(set(categories_off) - set(CATEGORIES)) + sorted(set(channels_off) - set(CHANNELS))
    if unknown:
        raise ValidationFailed(f"Unknown categories or channels: {', '.join(unknown)}.", code="bad-preference")
    locked = sorted(set(categories_off) & MANDATORY)
    if locked:
        raise ValidationFailed(f"{', '.join(locked)} cannot be switched off: they are about your orders, "
                               "payments and account security.", code="mandatory-category")
    values = {"language": language, "timezone": timezone, "quiet_start": quiet_start, "quiet_end": quiet_end,
              "categories_off": sorted(set(categories_off)), "channels_off": sorted(set(channels_off))}
    await session.execute(insert(notification_profiles).values(account_id=principal.account_id, **values)
                          .on_conflict_do_update(index_elements=["account_id"],
                                                 set_={**values, "updated_at": func.now()}))
    return await _profile(session, principal.account_id)


async def add_push_device(session: AsyncSession, principal: Principal, *, kind: str, address: str,
                          keys: dict[str, str] | None) -> uuid.UUID:
    if kind == "webpush" and not (keys and keys.get("p256dh") and keys.get("auth")):
        raise ValidationFailed("A Web Push subscription needs its p256dh and auth keys.", code="bad-subscription")
    device_id = new_id()
    # The same browser subscribing again keeps one row (its endpoint is unique).
    await session.execute(insert(push_devices).values(
        id=device_id, account_id=principal.account_id, kind=kind, address=address, keys=keys)
        .on_conflict_do_nothing(index_elements=["address"]))
    return device_id


async def remove_push_device(session: AsyncSession, principal: Principal, device_id: uuid.UUID) -> None:
    done = await session.execute(delete(push_devices).where(
        push_devices.c.id == device_id, push_devices.c.account_id == principal.account_id)
        .returning(push_devices.c.id))
    if done.first() is None:
        raise NotFound("No such device.", code="device-not-found")


# -- the delivery log, for admins -----------------------------------------------------------------


async def deliveries(session: AsyncSession, principal: Principal, *, status: str | None = None,
                     limit: int = 50) -> list[dict[str, Any]]:
    """The tenant's deliveries, newest first, each with every attempt."""
    require(principal, "manage:jobs")
    tenant_id = require_tenant(principal)
    d, a = delivery.deliveries, delivery.delivery_attempts
    query = select(d).where(d.c.tenant_id == tenant_id)
    if status:
        query = query.where(d.c.status == status)
    rows = (await session.execute(query.order_by(d.c.created_at.desc()).limit(limit))).all()
    tries = (await session.execute(select(a).where(a.c.delivery_id.in_([r.id for r in rows]))
                                   .order_by(a.c.started_at))).all() if rows else []
    by_delivery: dict[uuid.UUID, list] = {}
    for t in tries:
        by_delivery.setdefault(t.delivery_id, []).append(
            {k: getattr(t, k) for k in ("channel", "provider", "outcome", "provider_message_id", "error_code",
                                         "error", "latency_ms", "provider_status", "started_at")})
    return [{"id": r.id, "kind": r.kind, "status": r.status, "reason": r.reason, "chain": r.chain,
             "delivered_channel": r.delivered_channel, "title": r.content.get("title"), "created_at": r.created_at,
             "finished_at": r.finished_at, "attempts": by_delivery.get(r.id, [])} for r in rows]


async def channel_stats(session: AsyncSession, principal: Principal, *, days: int = 7) -> list[dict[str, Any]]:
    """Per channel and provider over the last ``days``: attempts, how many the provider took, the
    rate, and the median and 95th-percentile latency."""
    require(principal, "manage:jobs")
    tenant_id = require_tenant(principal)
    a = delivery.delivery_attempts
    rows = (await session.execute(select(
        a.c.channel, a.c.provider, func.count().label("attempts"),
        func.count().filter(a.c.outcome == "sent").label("sent"),
        func.percentile_cont(0.5).within_group(a.c.latency_ms).label("p50"),
        func.percentile_cont(0.95).within_group(a.c.latency_ms).label("p95"))
        .where(a.c.tenant_id == tenant_id, a.c.outcome != "skipped",
               a.c.started_at > func.now() - timedelta(days=days))
        .group_by(a.c.channel, a.c.provider).order_by(a.c.channel, a.c.provider))).all()
    return [{"channel": r.channel, "provider": r.provider, "attempts": r.attempts, "sent": r.sent,
             "rate": round(r.sent / r.attempts, 3) if r.attempts else None,
             "p50_ms": r.p50, "p95_ms": r.p95} for r in rows]
