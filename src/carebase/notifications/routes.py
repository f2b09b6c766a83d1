"""Your in-app notifications."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel

from carebase.notifications import service
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


@router.get("/me/notifications", response_model=list[NotificationOut], summary="Your notifications, newest first")
async def my_notifications(principal: CurrentPrincipal, session: DbSession, unread_only: bool = False,
                           limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[NotificationOut]:
    found = await service.mine(session, principal, unread_only=unread_only, limit=limit)
    return [NotificationOut(id=n.id, kind=n.kind, title=n.title, body=n.body, link=n.link, created_at=n.created_at,
                            read=n.read_at is not None) for n in found]


@router.post("/me/notifications/{notification_id}/read", status_code=status.HTTP_204_NO_CONTENT,
             summary="Mark one of your notifications as read")
async def mark_read(notification_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.mark_read(session, principal, notification_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
