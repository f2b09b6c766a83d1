"""Operations: what an admin needs to keep the platform healthy (today: the dead-letter list)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform import jobs
from carebase.platform.authz import Principal, require
from carebase.platform.errors import NotFound


def _scope(principal: Principal):
    # Platform operators see every tenant's dead jobs; a clinic admin sees their own.
    return None if principal.can("*") else principal.tenant_id


async def dead_jobs(session: AsyncSession, principal: Principal, limit: int = 100) -> list[jobs.DeadJob]:
    require(principal, "manage:jobs")
    return await jobs.dead_jobs(session, _scope(principal), limit)


async def retry_dead_job(session: AsyncSession, principal: Principal, job_id: int) -> None:
    require(principal, "manage:jobs")
    if not await jobs.retry_dead_job(session, job_id, _scope(principal)):
        raise NotFound("No such failed job in your organization.", code="job-not-found")
