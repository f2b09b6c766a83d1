"""Audit API: admins list who read which patient's data."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from carebase.audit import service
from carebase.platform.web import CurrentPrincipal, DbSession

router = APIRouter(prefix="/api/v1", tags=["audit"])


class ReadOut(BaseModel):
    id: int
    actor_account_id: uuid.UUID
    actor_roles: str
    patient_id: uuid.UUID
    record_type: str
    record_id: uuid.UUID | None
    purpose: str
    request_id: str | None
    at: datetime


class ReadPage(BaseModel):
    items: list[ReadOut]
    next_cursor: int | None


@router.get("/audit/reads", response_model=ReadPage,
            summary="Reads of patient data in your organization, newest first (needs read:audit)")
async def list_reads(
    principal: CurrentPrincipal, session: DbSession,
    patient_id: uuid.UUID | None = None, actor_account_id: uuid.UUID | None = None,
    cursor: Annotated[int | None, Query(ge=1)] = None, limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ReadPage:
    rows = await service.list_reads(session, principal, patient_id=patient_id, actor_account_id=actor_account_id,
                                    before=cursor, limit=limit)
    return ReadPage(items=[ReadOut(**r.__dict__) for r in rows],
                    next_cursor=rows[-1].id if len(rows) == limit else None)
