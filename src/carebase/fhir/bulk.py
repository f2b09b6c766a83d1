"""Bulk Data Access ($export): the asynchronous request pattern of the HL7 Bulk Data IG.

A kick-off (system, Patient or Group level) records the request and queues the job
``fhir.export``; the client polls the status URL (202 with X-Progress while it runs, then 200 with
the manifest) and downloads one NDJSON file per resource type, with the same token. The job acts
with the requester's own rights and scope, reads through the domains' services (every batch in
the read audit) and writes the files to the configured storage.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.encounters import service as encounters
from carebase.fhir.base import BASE_PATH, Ctx, date_range
from carebase.fhir.clinical import allergies, conditions, encounter, medication_statements, observations, procedures
from carebase.fhir.directory import location, organization, practitioner
from carebase.fhir.models import fhir_exports
from carebase.fhir.outside import ALSO_OUTSIDE, OUTSIDE_ONLY
from carebase.fhir.outside import to_fhir as outside_resource
from carebase.fhir.patient import to_fhir as patient_resource
from carebase.fhir.privacy import consents
from carebase.outside_records import service as outside
from carebase.patients import service as patients
from carebase.platform import jobs
from carebase.platform.authz import Principal, require_tenant
from carebase.platform.db import Database
from carebase.platform.errors import Conflict, Malformed, NotFound
from carebase.platform.ids import new_id
from carebase.platform.logging import get_logger
from carebase.platform.storage import storage
from carebase.providers import service as providers
from carebase.settings import get_settings
from carebase.tenants import service as tenants

log = get_logger("carebase.fhir.bulk")

NDJSON = "application/fhir+ndjson"
# What each level exports by default (the patient compartment, and the directory at system level).
FROM_ENCOUNTERS = {"Encounter": lambda e: [encounter(e)], "Condition": conditions, "Observation": observations,
                   "Procedure": procedures, "AllergyIntolerance": allergies,
                   "MedicationStatement": medication_statements}
PATIENT_TYPES = ["Patient", *FROM_ENCOUNTERS, "Consent", *OUTSIDE_ONLY]
SYSTEM_TYPES = [*PATIENT_TYPES, "Practitioner", "Organization", "Location", "PractitionerRole"]
# Outside records of these types go into the files too (beside Carebase's own of the type).
FROM_OUTSIDE = [t for t in SYSTEM_TYPES if t in OUTSIDE_ONLY or t in ALSO_OUTSIDE]


def _types(level: str, requested: str | None) -> list[str]:
    allowed = SYSTEM_TYPES if level == "system" else PATIENT_TYPES
    if not requested:
        return list(allowed)
    wanted = [t.strip() for t in requested.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in allowed]
    if unknown:
        raise Malformed(f"_type: {', '.join(unknown)} cannot be exported at {level} level; choose from "
                        f"{', '.join(allowed)}.", code="bad-export-type")
    return list(dict.fromkeys(wanted))


async def kick_off(ctx: Ctx, *, level: str, group_id: uuid.UUID | None, params: dict[str, str],
                   request_url: str) -> uuid.UUID:
    p = ctx.principal
    tenant_id = require_tenant(p)
    fmt = params.get("_outputFormat")
    if fmt and fmt not in (NDJSON, "application/ndjson", "ndjson"):
        raise Malformed("_outputFormat: only application/fhir+ndjson is written.", code="bad-output-format")
    types = _types(level, params.get("_type"))
    for kind in types:
        ctx.allow(kind, "r")
    since = date_range(params["_since"], "_since")[1] if params.get("_since") else None
    if group_id is not None:
        await providers.get_provider(ctx.session, p, group_id)  # the Group is a practitioner's panel
    export_id = new_id()
    await ctx.session.execute(insert(fhir_exports).values(
        id=export_id, tenant_id=tenant_id, account_id=p.account_id, roles=",".join(p.roles), scope=p.scope,
        request_url=request_url, level=level, group_id=group_id, types=types, since=since, status="queued",
        output=[], created_at=datetime.now(UTC)))
    await jobs.defer(ctx.session, "fhir.export", export_id=str(export_id), tenant_id=str(tenant_id))
    return export_id


async def _row(session: AsyncSession, principal: Principal, export_id: uuid.UUID):
    r = (await session.execute(select(fhir_exports).where(
        fhir_exports.c.id == export_id, fhir_exports.c.tenant_id == require_tenant(principal)))).first()
    # Only the requester follows their export: the files hold what their rights let them see.
    if r is None or r.account_id != principal.account_id:
        raise NotFound("No such export.", code="export-not-found")
    return r


async def status(ctx: Ctx, export_id: uuid.UUID) -> tuple[int, dict[str, str], dict[str, Any] | None]:
    """(HTTP status, headers, body): 202 with X-Progress while it runs, 200 with the manifest."""
    r = await _row(ctx.session, ctx.principal, export_id)
    if r.status in ("queued", "running"):
        return 202, {"X-Progress": r.progress or r.status, "Retry-After": "2"}, None
    if r.status == "cancelled":
        raise NotFound("This export was cancelled.", code="export-cancelled")
    if r.status == "failed":
        raise Conflict(f"The export failed: {r.error}", code="export-failed")
    base = f"{ctx.base_url}{BASE_PATH}/$export-file/{r.id}"
    return 200, {"Expires": ""}, {
        "transactionTime": r.transaction_time.isoformat(), "request": r.request_url, "requiresAccessToken": True,
        "output": [{"type": o["type"], "url": f"{base}/{o['file']}", "count": o["count"]} for o in r.output],
        "error": []}


async def cancel(ctx: Ctx, export_id: uuid.UUID) -> None:
    r = await _row(ctx.session, ctx.principal, export_id)
    if r.status in ("done", "failed", "cancelled"):
        raise NotFound("This export is not running.", code="export-not-running")
    await ctx.session.execute(fhir_exports.update().where(fhir_exports.c.id == r.id).values(status="cancelled"))


def _key(r, file: str) -> str:
    return f"exports/{r.tenant_id}/{r.id}/{file}"


async def download(ctx: Ctx, export_id: uuid.UUID, file: str) -> tuple[_Prefetched, int | None]:
    """One file of a finished export, as chunks read from storage while they are sent, and its
    size in bytes (for Content-Length, so a client can tell a cut-off download; None for exports
    written before sizes were kept)."""
    r = await _row(ctx.session, ctx.principal, export_id)
    entry = next((o for o in r.output or () if o["file"] == file), None) if r.status == "done" else None
    if entry is None:
        raise NotFound("No such file in this export.", code="export-file-not-found")
    chunks = storage(get_settings()).stream(_key(r, file))
    first = await anext(chunks, b"")  # a file gone from storage is refused here, before any byte is sent
    return _Prefetched(first, chunks), entry.get("bytes")


class _Prefetched:
    """A stream's chunks, its first already read. ``aclose`` closes the stream (the file, or the
    store's connection) whether or not iteration began, which an async generator wrapping it
    would not."""

    def __init__(self, first: bytes, rest: AsyncIterator[bytes]):
        self._first: bytes | None = first
        self._rest = rest

    def __aiter__(self) -> _Prefetched:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            chunk, self._first = self._first, None
            return chunk
        return await anext(self._rest)

    async def aclose(self) -> None:
        await self._rest.aclose()  # type: ignore[attr-defined]


# -- the job -----------------------------------------------------------------------------------------


class _Cancelled(Exception):
    pass


async def _set(db: Database, tenant_id: uuid.UUID, export_id: uuid.UUID, **values) -> None:
    async with db.transaction(tenant_id, None) as session:
        current = (await session.execute(select(fhir_exports.c.status).where(fhir_exports.c.id == export_id)
                                         .with_for_update())).scalar_one()
        if current == "cancelled":
            raise _Cancelled
        await session.execute(fhir_exports.update().where(fhir_exports.c.id == export_id).values(**values))


def _lines(resources: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for r in resources)


class Spool:
    """Each type's NDJSON file, appended to on disk batch by batch, then stored whole: the job
    holds one batch in memory, never the export (a hospital's is gigabytes). The folder is private
    (0700) under ``CAREBASE_HOME``, not the shared /tmp: the lines are patients' records."""

    def __init__(self, home: Path, types: list[str]):
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A failed clean-up must not fail an export already stored (the folder is left, as by a crash).
        self._dir = tempfile.TemporaryDirectory(prefix=".export-", dir=home, ignore_cleanup_errors=True)
        self.folder = Path(self._dir.name)
        self.counts = {t: 0 for t in types}

    def path(self, kind: str) -> Path:
        return self.folder / f"{kind}.ndjson"

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    async def write(self, kind: str, resources: list[dict[str, Any]]) -> None:
        if resources:
            await asyncio.to_thread(_append, self.path(kind), _lines(resources))
            self.counts[kind] += len(resources)

    def close(self) -> None:
        self._dir.cleanup()


# A running export appends a batch every few seconds; a spool untouched this long is a killed
# worker's, and holds patients' records nobody will collect.
STALE_SPOOL_SECONDS = 3600


def sweep_spools(home: Path) -> None:
    """Delete the spools killed workers left under ``home`` (run at worker start)."""
    now = time.time()
    for folder in home.glob(".export-*"):
        try:
            touched = max([folder.stat().st_mtime, *(f.stat().st_mtime for f in folder.iterdir())])
        except FileNotFoundError:
            continue  # its export just finished
        if now - touched > STALE_SPOOL_SECONDS:
            shutil.rmtree(folder, ignore_errors=True)


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


@jobs.job("fhir.export")
async def run_export(db: Database, export_id: str, tenant_id: str) -> None:
    """Write each requested type to its NDJSON file. Safe to run twice: it starts over."""
    tid, eid = uuid.UUID(tenant_id), uuid.UUID(export_id)
    async with db.transaction(tid, None) as session:
        r = (await session.execute(select(fhir_exports).where(fhir_exports.c.id == eid))).first()
    if r is None or r.status in ("done", "cancelled"):
        return
    principal = Principal.of(r.account_id, tid, r.roles.split(","), scope=r.scope)
    started = datetime.now(UTC)
    try:
        await _set(db, tid, eid, status="running", progress="starting", transaction_time=started)
        spool = Spool(get_settings().home, list(r.types))
        try:
            await _gather(db, r, principal, spool)
            total = spool.total
            store = storage(get_settings())
            output = []
            for name in r.types:
                if spool.counts[name]:
                    file = f"{name}.ndjson"
                    await store.put_file(_key(r, file), spool.path(name), NDJSON)
                    output.append({"type": name, "file": file, "count": spool.counts[name],
                                   "bytes": spool.path(name).stat().st_size})
        finally:
            spool.close()
        await _set(db, tid, eid, status="done", output=output, rows=total, progress=f"{total} resources written",
                   completed_at=datetime.now(UTC))
        log.info("fhir_export_done", export_id=export_id, rows=total)
    except _Cancelled:
        log.info("fhir_export_cancelled", export_id=export_id)
    except Exception as exc:
        await _set(db, tid, eid, status="failed", error=type(exc).__name__, completed_at=datetime.now(UTC))
        raise


async def _gather(db: Database, r, principal: Principal, spool: Spool) -> None:
    """Read everything the export asks for, in batches, into the spool."""
    tid, eid = r.tenant_id, r.id
    async with db.transaction(tid, r.account_id) as session:
        ids = None
        if r.level == "group":
            ids = await encounters.patients_seen_by(session, principal, r.group_id)
        if "Patient" in spool.counts or "Consent" in spool.counts:
            async for batch in patients.export_patients(session, principal, since=r.since, ids=ids):
                for name, build in (("Patient", lambda p: [patient_resource(p)]), ("Consent", consents)):
                    if name in spool.counts:
                        await spool.write(name, [x for p in batch for x in build(p)])
        wanted = [t for t in FROM_ENCOUNTERS if t in spool.counts]
        if wanted:
            async for batch in encounters.export_encounters(session, principal, since=r.since, patient_ids=ids):
                for name in wanted:
                    await spool.write(name, [x for e in batch for x in FROM_ENCOUNTERS[name](e)])
                await _set(db, tid, eid, progress=f"{spool.total} resources written")
        received = [t for t in FROM_OUTSIDE if t in spool.counts]
        if received:
            # What other systems sent: about these patients, and at system level the
            # practitioners and places their records name as well.
            async for batch in outside.export(session, principal, since=r.since, patient_ids=ids,
                                              types=received, about_patients=r.level != "system"):
                by_type: dict[str, list[dict[str, Any]]] = {}
                for rec in batch:
                    by_type.setdefault(rec.resource_type, []).append(outside_resource(rec))
                for name, out in by_type.items():
                    await spool.write(name, out)
                await _set(db, tid, eid, progress=f"{spool.total} resources written")
        if r.level == "system":  # the directory: a few rows, read whole
            directory = {
                "Organization": [organization(await tenants.current_tenant(session, principal))],
                "Location": [location(x) for x in await tenants.list_locations(session, principal)],
                "Practitioner": await _providers(session, principal),
                "PractitionerRole": [],  # Carebase's own are its practitioners' specialties
            }
            for name, out in directory.items():
                if name in spool.counts:
                    await spool.write(name, out)


async def _providers(session: AsyncSession, principal: Principal) -> list[dict[str, Any]]:
    out, cursor = [], None
    while True:
        page = await providers.search_providers(session, principal, limit=providers.MAX_PAGE, cursor=cursor)
        out += [practitioner(p) for p in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return out

