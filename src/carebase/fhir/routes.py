"""The FHIR R4 REST API at /fhir/R4: one set of generic interactions over the resource registry
(read, vread, update, create, delete, history, search), the CapabilityStatement built from that
same registry, batch and transaction Bundles, and SMART discovery.

Tokens and tenant isolation are the JSON API's own; errors are OperationOutcome (registered with
the platform for every path under /fhir/).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from carebase.fhir import bulk, bundles, capability
from carebase.fhir.base import (
    BASE_PATH,
    DEFAULT_COUNT,
    FHIR_JSON,
    ID,
    Ctx,
    Query,
    as_uuid,
    checked,
    date_range,
    outcome_response,
    paging,
    parse_body,
    type_of,
)
from carebase.fhir.everything import bundle as record_bundle
from carebase.fhir.everything import everything
from carebase.fhir.search import run_search
from carebase.platform.errors import (
    DomainError,
    Malformed,
    NotFound,
    NotSupported,
    PreconditionFailed,
    ValidationFailed,
)
from carebase.platform.logging import get_logger
from carebase.platform.web import (
    CurrentPrincipal,
    DbSession,
    accept_scoped_tokens,
    add_error_renderer,
    allow_large_body,
    if_match_version,
    request_scope,
    takes_raw_body,
)

# The FHIR API is described by its CapabilityStatement, not in the JSON API's OpenAPI; the record
# export under /api/v1 is part of the JSON API and is.
router = APIRouter(tags=["fhir"])
log = get_logger("carebase.fhir")
FHIR_ROUTE = {"include_in_schema": False}
add_error_renderer("/fhir/", outcome_response)
accept_scoped_tokens("/fhir/")
allow_large_body(BASE_PATH, bundles.MAX_BYTES)


async def fhir_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Every resource handed out is first validated with fhir.resources: a mapping bug fails
    loudly (a 500 in the tests) instead of reaching a client. A large bundle never seen before is
    checked off the event loop, which meanwhile serves everyone else."""
    try:
        if len(body.get("entry") or ()) > 100:
            content = await asyncio.to_thread(checked, body)
        else:
            content = checked(body)
    except ValidationFailed as exc:
        # Ours to fix, not the client's: a 500 that says where (no values: they may be PHI).
        log.error("fhir_output_invalid", where=exc.extra.get("expression"))
        err = DomainError("The server built an invalid FHIR resource; the request was not answered. Quote the "
                          "request id to the operator.", code="invalid-output", status=500)
        err.title = "Internal error"
        raise err from exc
    return Response(content, status_code=status, headers=headers, media_type=FHIR_JSON)


def _check_format(request: Request) -> None:
    fmt = request.query_params.get("_format")
    accept = request.headers.get("accept", "")
    wants_xml = (fmt and "xml" in fmt) or ("xml" in accept and "json" not in accept and "*/*" not in accept)
    if wants_xml:
        raise Malformed("This server speaks FHIR JSON only (application/fhir+json).", code="not-acceptable",
                        status=406)


def _base(request: Request) -> str:
    """Links point where the client reached us (behind a proxy, run with its forwarded headers)."""
    return str(request.base_url).rstrip("/")


def _ctx(request: Request, session, principal) -> Ctx:
    _check_format(request)
    return Ctx(session, principal, _base(request))


def _resource_headers(res: dict[str, Any]) -> dict[str, str]:
    m = res.get("meta") or {}
    out = {}
    if m.get("versionId"):
        out["ETag"] = f'W/"{m["versionId"]}"'
    if m.get("lastUpdated"):
        out["Last-Modified"] = datetime.fromisoformat(m["lastUpdated"].replace("Z", "+00:00")).strftime(
            "%a, %d %b %Y %H:%M:%S GMT")
    return out


def _check_id(rid: str) -> str:
    if not ID.match(rid):
        raise NotFound(f"{rid!r} is not a FHIR id (1 to 64 letters, digits, '-' and '.').", code="bad-id")
    return rid


# -- discovery ---------------------------------------------------------------------------------


@router.get(BASE_PATH + "/metadata", **FHIR_ROUTE)
async def metadata(request: Request) -> Response:
    _check_format(request)
    return await fhir_response(capability.statement(_base(request)))


@router.get("/.well-known/smart-configuration", **FHIR_ROUTE)
@router.get(BASE_PATH + "/.well-known/smart-configuration", **FHIR_ROUTE)
async def smart_configuration(request: Request) -> Response:
    return JSONResponse(capability.smart_configuration(_base(request)))


# -- whole-system interactions -------------------------------------------------------------------


@router.post(BASE_PATH, **FHIR_ROUTE)
@takes_raw_body
async def batch_or_transaction(request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    ctx = _ctx(request, session, principal)
    body = parse_body(await request.body(), "Bundle")
    answer = await bundles.process(ctx, body, _interact)
    if "return=minimal" in (request.headers.get("prefer") or "").replace(" ", ""):
        # An importer wants each entry's outcome (status, location, etag), not its resource back.
        for sent, entry in zip(body.get("entry") or [], answer["entry"], strict=True):
            if entry and sent["request"]["method"] in ("POST", "PUT"):
                entry.pop("resource", None)
    return await fhir_response(answer)


# -- operations ------------------------------------------------------------------------------------


@router.get(BASE_PATH + "/Patient/{rid}/$everything", **FHIR_ROUTE)
async def patient_everything(rid: str, request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    ctx = _ctx(request, session, principal)
    ctx.allow("Patient", "r")
    resources = await everything(ctx, as_uuid(_check_id(rid), "Patient"))
    return await fhir_response(record_bundle(ctx, resources, "searchset"))


# -- Bulk Data $export (asynchronous request pattern) ---------------------------------------------


async def _kick_off(request: Request, session, principal, level: str, group: str | None) -> Response:
    ctx = _ctx(request, session, principal)
    if "respond-async" not in (request.headers.get("prefer") or ""):
        raise Malformed("A bulk export runs in the background: send Prefer: respond-async.", code="prefer-async")
    group_id = as_uuid(_check_id(group), "Group") if group else None
    export_id = await bulk.kick_off(ctx, level=level, group_id=group_id, params=dict(request.query_params),
                                    request_url=str(request.url))
    return Response(status_code=202, headers={"Content-Location": f"{ctx.base_url}{BASE_PATH}/$export-status/{export_id}"})


@router.get(BASE_PATH + "/$export", **FHIR_ROUTE)
async def export_system(request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    return await _kick_off(request, session, principal, "system", None)


@router.get(BASE_PATH + "/Patient/$export", **FHIR_ROUTE)
async def export_patients(request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    return await _kick_off(request, session, principal, "patient", None)


@router.get(BASE_PATH + "/Group/{gid}/$export", **FHIR_ROUTE)
async def export_group(gid: str, request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    return await _kick_off(request, session, principal, "group", gid)


@router.get(BASE_PATH + "/$export-status/{export_id}", **FHIR_ROUTE)
async def export_status(export_id: str, request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    ctx = _ctx(request, session, principal)
    code, headers, body = await bulk.status(ctx, as_uuid(export_id, "export"))
    if body is None:
        return Response(status_code=code, headers=headers)
    return JSONResponse(body, status_code=code)


@router.delete(BASE_PATH + "/$export-status/{export_id}", **FHIR_ROUTE)
async def export_cancel(export_id: str, request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    await bulk.cancel(_ctx(request, session, principal), as_uuid(export_id, "export"))
    return Response(status_code=202)


@router.get(BASE_PATH + "/$export-file/{export_id}/{file}", **FHIR_ROUTE)
async def export_file(export_id: str, file: str, request: Request, principal: CurrentPrincipal,
                      session: DbSession) -> Response:
    chunks, size = await bulk.download(_ctx(request, session, principal), as_uuid(export_id, "export"), file)
    # Streamed: a file can be gigabytes, and the transaction (it only checked the requester) ends
    # first, so the response is neither held back for a commit nor holding a connection.
    try:
        await request_scope(request).release()
    except BaseException:
        await chunks.aclose()
        raise
    headers = {"Cache-Control": "no-store", **({"Content-Length": str(size)} if size is not None else {})}
    return StreamingResponse(chunks, media_type=bulk.NDJSON, headers=headers)


# The whole record as one download, in the JSON API (the portal's "export my record" button).
_RECORD_DOC = {200: {"description": "A FHIR R4 (4.0.1) Bundle of type collection: Patient, Organization, "
                                    "Practitioner, Encounter, Condition, Procedure, Observation, "
                                    "AllergyIntolerance, MedicationStatement, MedicationRequest, Appointment and "
                                    "Consent resources, each at its URL on this server's FHIR API "
                                    "(the same resources as Patient/$everything).",
                     "content": {FHIR_JSON: {"schema": {"type": "object"}}}}}


async def _record(request: Request, principal, session, patient_id: uuid.UUID | None) -> Response:
    ctx = Ctx(session, principal, _base(request))
    resources = await everything(ctx, patient_id)
    response = await fhir_response(record_bundle(ctx, resources, "collection"))
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/api/v1/patients/{patient_id}/record.fhir.json", response_class=Response, responses=_RECORD_DOC,
            summary="Export a patient's whole record as a FHIR R4 Bundle (staff of the patient's organization; "
                    "audited read)")
async def record_fhir(patient_id: uuid.UUID, request: Request, principal: CurrentPrincipal,
                      session: DbSession) -> Response:
    return await _record(request, principal, session, patient_id)


@router.get("/api/v1/me/record.fhir.json", response_class=Response, responses=_RECORD_DOC,
            summary="Export your own record as a FHIR R4 Bundle (patients)")
async def my_record_fhir(request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    return await _record(request, principal, session, None)


# -- type-level interactions ----------------------------------------------------------------------


@router.get(BASE_PATH + "/{type}/_history", **FHIR_ROUTE)
async def type_history(type: str, request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    ctx = _ctx(request, session, principal)
    kind = type_of(type)
    q = request.query_params
    since = date_range(q["_since"], "_since")[1] if q.get("_since") else None
    count, offset = _paging(q.get("_count"), q.get("_offset"))
    versions, total = await kind.type_history(ctx, since, count, offset)
    link = f"{ctx.base_url}{BASE_PATH}/{type}/_history"
    return await fhir_response(bundles.history(ctx, versions, total, link, dict(q), count, offset))


@router.get(BASE_PATH + "/{type}", **FHIR_ROUTE)
async def search(type: str, request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    ctx = _ctx(request, session, principal)
    return await fhir_response(await run_search(ctx, type, request.query_params.multi_items(), _strict(request)))


@router.post(BASE_PATH + "/{type}/_search", **FHIR_ROUTE)
@takes_raw_body
async def search_post(type: str, request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    ctx = _ctx(request, session, principal)
    form = await request.form()
    items = [*request.query_params.multi_items(), *[(k, str(v)) for k, v in form.multi_items()]]
    return await fhir_response(await run_search(ctx, type, items, _strict(request)))


@router.post(BASE_PATH + "/{type}", **FHIR_ROUTE)
@takes_raw_body
async def create(type: str, request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    ctx = _ctx(request, session, principal)
    body = parse_body(await request.body(), type)
    status, res, _ = await _interact(ctx, "POST", type, None, body, request.headers)
    return await _written(ctx, status, res, request.headers)


@router.get(BASE_PATH + "/{type}/{rid}", **FHIR_ROUTE)
async def read(type: str, rid: str, request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    ctx = _ctx(request, session, principal)
    kind = type_of(type)
    res = await kind.read(ctx, _check_id(rid))
    headers = _resource_headers(res)
    if request.headers.get("if-none-match") and request.headers["if-none-match"] == headers.get("ETag"):
        return Response(status_code=304, headers=headers)
    return await fhir_response(res, headers=headers)


@router.put(BASE_PATH + "/{type}/{rid}", **FHIR_ROUTE)
@takes_raw_body
async def update(type: str, rid: str, request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    ctx = _ctx(request, session, principal)
    body = parse_body(await request.body(), type)
    status, res, _ = await _interact(ctx, "PUT", type, _check_id(rid), body, request.headers)
    return await _written(ctx, status, res, request.headers)


@router.delete(BASE_PATH + "/{type}/{rid}", **FHIR_ROUTE)
async def delete(type: str, rid: str, request: Request, principal: CurrentPrincipal, session: DbSession) -> Response:
    ctx = _ctx(request, session, principal)
    await _interact(ctx, "DELETE", type, _check_id(rid), None, request.headers)
    return Response(status_code=204)


@router.get(BASE_PATH + "/{type}/{rid}/_history", **FHIR_ROUTE)
async def instance_history(type: str, rid: str, request: Request, principal: CurrentPrincipal,
                           session: DbSession) -> Response:
    ctx = _ctx(request, session, principal)
    kind = type_of(type)
    versions = await kind.history(ctx, _check_id(rid))
    q = request.query_params
    count, offset = _paging(q.get("_count"), q.get("_offset"))
    link = f"{ctx.base_url}{BASE_PATH}/{type}/{rid}/_history"
    return await fhir_response(bundles.history(ctx, versions[offset:offset + count], len(versions), link, dict(q),
                                         count, offset))


@router.get(BASE_PATH + "/{type}/{rid}/_history/{vid}", **FHIR_ROUTE)
async def vread(type: str, rid: str, vid: str, request: Request, principal: CurrentPrincipal,
                session: DbSession) -> Response:
    ctx = _ctx(request, session, principal)
    kind = type_of(type)
    if not vid.isdigit():
        raise NotFound(f"{vid!r} is not a version of this server (they are 1, 2, 3, ...).", code="version-not-found")
    res = await kind.vread(ctx, _check_id(rid), int(vid))
    return await fhir_response(res, headers=_resource_headers(res))


# -- shared by the routes and the bundles ------------------------------------------------------------


def _strict(request: Request) -> bool:
    return "handling=strict" in (request.headers.get("prefer") or "").replace(" ", "")


def _paging(count: str | None, offset: str | None) -> tuple[int, int]:
    return paging("_count", count, DEFAULT_COUNT), paging("_offset", offset, 0)


async def _interact(ctx: Ctx, method: str, type: str, rid: str | None, body: dict[str, Any] | None,
                    headers) -> tuple[int, dict[str, Any] | None, bool]:
    """One write interaction, as a route or a bundle entry does it: (status, resource, created)."""
    kind = type_of(type)
    if method == "POST":
        condition = headers.get("if-none-exist")
        if condition and kind.supports("create"):  # a type that creates nothing refuses (405) below
            from urllib.parse import parse_qsl

            matches = await kind.conditional_match(ctx, _conditional_query(kind, parse_qsl(condition)))
            if len(matches) > 1:
                raise PreconditionFailed(f"If-None-Exist matched {len(matches)} {type} resources; make it specific.",
                                         code="multiple-matches")
            if matches:
                return 200, matches[0], False
        return 201, await kind.create(ctx, body), True
    if method == "PUT":
        if body.get("id") != rid:
            raise Malformed(f"The resource's id ({body.get('id')!r}) must be the id in the URL ({rid}).",
                            code="id-mismatch")
        expected = _if_match(headers.get("if-match"))
        try:
            return 200, await kind.update(ctx, rid, body, expected), False
        except DomainError as err:
            if expected is not None and err.code == "version-conflict":
                # The version the client pinned is not the current one: HTTP's 412, not a 409.
                raise PreconditionFailed(err.detail, code="version-conflict", **err.extra) from err
            raise
    if method == "DELETE":
        await kind.delete(ctx, rid)
        return 204, None, False
    raise NotSupported(f"{method} is not an interaction here.", code="method-not-supported")


def _if_match(value: str | None) -> int | None:
    try:
        return if_match_version(value)
    except Exception:
        raise Malformed('If-Match must be an ETag such as W/"3".', code="bad-if-match") from None


def _conditional_query(kind, pairs: list[tuple[str, str]]) -> Query:
    params: dict[str, list[str]] = {}
    for k, v in pairs:
        if k not in kind.search_params:
            raise Malformed(f"If-None-Exist: {kind.type} has no search parameter {k!r}.", code="bad-condition")
        params.setdefault(k, []).append(v)
    if not params:
        raise Malformed("If-None-Exist needs search criteria, such as identifier=...", code="bad-condition")
    return Query(params, count=2)


async def _written(ctx: Ctx, status: int, res: dict[str, Any], headers) -> Response:
    out = _resource_headers(res)
    version = res.get("meta", {}).get("versionId")
    out["Location"] = f"{ctx.base_url}{BASE_PATH}/{res['resourceType']}/{res['id']}" + (
        f"/_history/{version}" if version else "")
    prefer = (headers.get("prefer") or "").replace(" ", "")
    if "return=minimal" in prefer:
        return Response(status_code=status, headers=out)
    return await fhir_response(res, status, out)


