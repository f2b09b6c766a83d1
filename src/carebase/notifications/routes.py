"""Notifications API: your notices (the seed's list / read / read-all / delete / unread count),
your notification settings and push devices, and for admins the delivery log."""

from __future__ import annotations

import uuid
from datetime import datetime, time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, Field

from carebase.notifications import service
from carebase.notifications.catalog import CATEGORIES, LANGUAGES, MANDATORY
from carebase.platform.channels import CHANNELS
from carebase.platform.errors import ValidationFailed
from carebase.platform.fields import Strict
from carebase.platform.web import CurrentPrincipal, DbSession

router = APIRouter(prefix="/api/v1", tags=["notifications"])


class NotificationOut(BaseModel):
    id: uuid.UUID
    kind: str
    title: str
    body: str
    link: str | None
    created_at: datetime
    read: bool


class UnreadOut(BaseModel):
    unread: int


class PreferencesIn(Strict):
    language: Literal[LANGUAGES] = "en"  # type: ignore[valid-type]
    timezone: str | None = Field(default=None, max_length=64, description="Default: your clinic's")
    quiet_start: time | None = Field(default=None, description="Local time, e.g. 22:00; non-urgent messages wait")
    quiet_end: time | None = Field(default=None, description="Local time, e.g. 07:00")
    categories_off: list[Literal[CATEGORIES]] = Field(  # type: ignore[valid-type]
        default_factory=list, max_length=len(CATEGORIES),
        description=f"Categories you do not want; {', '.join(sorted(MANDATORY))} cannot be switched off")
    channels_off: list[Literal[CHANNELS]] = Field(default_factory=list, max_length=len(CHANNELS))  # type: ignore[valid-type]


class PreferencesOut(PreferencesIn):
    mandatory: list[str] = sorted(MANDATORY)


class PushDeviceIn(Strict):
    kind: Literal["webpush", "fcm"]
    endpoint: str | None = Field(default=None, max_length=2000, description="Web Push: the subscription endpoint")
    keys: dict[str, Annotated[str, Field(max_length=200)]] | None = Field(
        default=None, description="Web Push: p256dh and auth")
    token: str | None = Field(default=None, max_length=4096, description="FCM: the registration token")


class CreatedOut(BaseModel):
    id: uuid.UUID


def _out(n: service.Notification) -> NotificationOut:
    return NotificationOut(id=n.id, kind=n.kind, title=n.title, body=n.body, link=n.link, created_at=n.created_at,
                           read=n.read_at is not None)


def _prefs(p: service.Profile) -> PreferencesOut:
    return PreferencesOut(language=p.language, timezone=p.timezone, quiet_start=p.quiet_start,
                          quiet_end=p.quiet_end, categories_off=list(p.categories_off),
                          channels_off=list(p.channels_off))


@router.get("/notifications", response_model=list[NotificationOut], summary="Your notifications, newest first")
async def my_notifications(principal: CurrentPrincipal, session: DbSession, unread_only: bool = False,
                           limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[NotificationOut]:
    return [_out(n) for n in await service.mine(session, principal, unread_only=unread_only, limit=limit)]


@router.get("/notifications/unread-count", response_model=UnreadOut, summary="How many are unread (the badge)")
async def unread_count(principal: CurrentPrincipal, session: DbSession) -> UnreadOut:
    return UnreadOut(unread=await service.unread_count(session, principal))


@router.patch("/notifications/{notification_id}/read", status_code=status.HTTP_204_NO_CONTENT,
             summary="Mark one of your notifications as read")
async def mark_read(notification_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.mark_read(session, principal, notification_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.patch("/notifications/mark-all-read", response_model=UnreadOut,
             summary="Mark all your notifications as read; answers how many are still unread (0)")
async def mark_all_read(principal: CurrentPrincipal, session: DbSession) -> UnreadOut:
    await service.mark_all_read(session, principal)
    return UnreadOut(unread=0)


@router.delete("/notifications/{notification_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete one of your notifications")
async def delete_notification(notification_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.delete_notification(session, principal, notification_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me/notification-preferences", response_model=PreferencesOut,
            summary="Your notification settings: language, quiet hours, categories and channels switched off")
async def get_preferences(principal: CurrentPrincipal, session: DbSession) -> PreferencesOut:
    return _prefs(await service.get_preferences(session, principal))


@router.put("/me/notification-preferences", response_model=PreferencesOut,
            summary="Replace your notification settings (order updates, payments and security cannot be switched "
                    "off: 422)")
async def set_preferences(body: PreferencesIn, principal: CurrentPrincipal, session: DbSession) -> PreferencesOut:
    return _prefs(await service.set_preferences(session, principal, **body.model_dump()))


@router.post("/me/push-devices", status_code=status.HTTP_201_CREATED, response_model=CreatedOut,
             summary="Register a browser (Web Push subscription) or an app (FCM token) for push notifications")
async def add_push_device(body: PushDeviceIn, principal: CurrentPrincipal, session: DbSession) -> CreatedOut:
    address = body.endpoint if body.kind == "webpush" else body.token
    if not address:
        raise ValidationFailed("A Web Push device needs its endpoint, an FCM device its token.",
                               code="bad-subscription")
    return CreatedOut(id=await service.add_push_device(session, principal, kind=body.kind, address=address,
                                                        keys=body.keys))


@router.delete("/me/push-devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Stop push notifications to one of your devices")
async def remove_push_device(device_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.remove_push_device(session, principal, device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class AttemptOut(BaseModel):
    channel: str
    provider: str
    outcome: str
    provider_message_id: str | None
    error_code: str | None
    error: str | None
    latency_ms: int | None
    provider_status: str | None
    started_at: datetime


class DeliveryOut(BaseModel):
    id: uuid.UUID
    kind: str
    status: str
    reason: str | None
    chain: list[str]
    delivered_channel: str | None
    title: str | None
    created_at: datetime
    finished_at: datetime | None
    attempts: list[AttemptOut]


class ChannelStatsOut(BaseModel):
    channel: str
    provider: str
    attempts: int
    sent: int
    rate: float | None
    p50_ms: float | None
    p95_ms: float | None


DeliveryStatus = Literal["queued", "waiting", "delivered", "dead", "suppressed"]


@router.get("/notifications/deliveries", response_model=list[DeliveryOut],
            summary="The delivery log of your organization, newest first, each with every attempt (admins); "
                    "status=dead lists the dead letters")
async def deliveries(principal: CurrentPrincipal, session: DbSession, status: DeliveryStatus | None = None,
                     limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[Any]:
    return await service.deliveries(session, principal, status=status, limit=limit)


@router.get("/notifications/channel-stats", response_model=list[ChannelStatsOut],
            summary="Delivery rate and latency per channel and provider over the last days (admins)")
async def channel_stats(principal: CurrentPrincipal, session: DbSession,
                        days: Annotated[int, Query(ge=1, le=90)] = 7) -> list[Any]:
    return await service.channel_stats(session, principal, days=days)
