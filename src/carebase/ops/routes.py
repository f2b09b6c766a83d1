"""Operations API: the dead-letter list of background jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel

from carebase.ops import service
from carebase.platform.web import CurrentPrincipal, DbSession

router = APIRouter(prefix="/api/v1", tags=["operations"])


class DeadJobOut(BaseModel):
    id: int
    task_name: str
    attempts: int
    error_type: str | None
    error: str | None
    failed_at: datetime | None


@router.get("/jobs/dead", response_model=list[DeadJobOut],
            summary="Background jobs that failed every attempt, with their last error (needs manage:jobs)")
async def dead_jobs(principal: CurrentPrincipal, session: DbSession,
                    limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[DeadJobOut]:
    return [DeadJobOut(id=j.id, task_name=j.task_name, attempts=j.attempts, error_type=j.error_type, error=j.error,
                       failed_at=j.failed_at) for j in await service.dead_jobs(session, principal, limit)]


@router.post("/jobs/{job_id}/retry", status_code=status.HTTP_204_NO_CONTENT,
             summary="Queue a dead job again, with fresh attempts, once its cause is fixed")
async def retry_job(job_id: Annotated[int, Path(ge=1)], principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.retry_dead_job(session, principal, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
