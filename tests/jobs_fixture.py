"""Jobs that exist only for the job tests; a test worker loads them via CAREBASE_JOB_MODULES."""

from __future__ import annotations

import asyncio
import gc

from sqlalchemy import text

from carebase.platform import jobs
from carebase.platform.db import Database

PROBE = "CREATE TABLE IF NOT EXISTS job_probe (job text, note text, at timestamptz DEFAULT now())"


async def _probe(db: Database, job: str, note: str) -> None:
    async with db.transaction(owner=True) as session:
        await session.execute(text(PROBE))
        await session.execute(text("INSERT INTO job_probe (job, note) VALUES (:j, :n)"), {"j": job, "n": note})


@jobs.job("testing.fail_always")
async def fail_always(db: Database, tag: str, tenant_id: str | None = None) -> None:
    await _probe(db, tag, "ran")
    raise RuntimeError(f"the printer is on fire ({tag})")


@jobs.job("testing.slow")
async def slow(db: Database, tag: str, seconds: float, tenant_id: str | None = None) -> None:
    await _probe(db, tag, "started")
    await asyncio.sleep(seconds)
    await _probe(db, tag, "finished")


@jobs.job("testing.heap")
async def heap_probe(db: Database, tag: str, tenant_id: str | None = None) -> None:
    """How the worker left the garbage collector (platform/heap.py): first threshold, frozen objects."""
    await _probe(db, tag, f"{gc.get_threshold()[0]} {gc.get_freeze_count()}")
