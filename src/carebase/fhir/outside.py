"""Outside records in FHIR: the resources other systems send (a Synthea population, another EHR's
transaction Bundle) are created, read, versioned, updated, retracted and searched here.

Types Carebase keeps nothing of its own for (Immunization, DiagnosticReport, Claim, ...) are
served from outside records alone. Types Carebase also derives from its own data (an Encounter
charted here, a Condition diagnosed here, a Practitioner on staff) answer from both: reads and
writes of an outside record's id go to the outside record, searches merge the two, and a create
always makes an outside record; Carebase's own chart is written in the chart, signed, not through
FHIR.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fhir.resources.R4B import get_fhir_model_class as r4b_model

from carebase.fhir.base import (
    REGISTRY,
    Ctx,
    Page,
    Query,
    Resource,
    Version,
    as_uuid,
    date_range,
    meta,
    ref_id,
    resource,
    validate,
)
from carebase.outside_records import index
from carebase.outside_records import service as outside
from carebase.fhir.search import page_in_memory, sort_in_memory
from carebase.platform.errors import Gone, Malformed, NotFound, ValidationFailed

# Types only other systems send: Carebase keeps no records of its own of these.
OUTSIDE_ONLY = ("CarePlan", "CareTeam", "Claim", "Coverage", "Device", "DiagnosticReport", "DocumentReference",
                "ExplanationOfBenefit", "Goal", "ImagingStudy", "Immunization", "Medication",
                "MedicationAdministration", "Provenance", "SupplyDelivery")
# Types Carebase serves from its own data that outside records join.
ALSO_OUTSIDE = ("AllergyIntolerance", "Condition", "Encounter", "Location", "MedicationRequest",
                "MedicationStatement", "Observation", "Organization", "Practitioner", "PractitionerRole",
                "Procedure")
# _id beside other parameters on a type whose own search has no _id: the ids are held to the
# first this many matches of the other parameters (a patient's whole history, in practice).
BY_ID_WINDOW = 10_000
# Reference search parameters: name -> the type they point at ("patient" and "subject" are the
# record's patient, a column of its own).
REFERENCE_PARAMS = {"encounter": "Encounter", "practitioner": "Practitioner", "organization": "Organization"}


def _as_fhir(kind: str, rid: Any, stored: dict[str, Any], version: int, at) -> dict[str, Any]:
    body = dict(stored)
    kept = body.pop("meta", None) or {}
    body.pop("resourceType", None)
    return {"resourceType": kind, "id": str(rid), "meta": {**kept, **meta(version, at)}, **body}


def to_fhir(r: outside.OutsideRecord) -> dict[str, Any]:
    return _as_fhir(r.resource_type, r.id, r.resource, r.version, r.updated_at)


def _fields(kind: str) -> set[str]:
    return {f.alias or name for name, f in r4b_model(kind).model_fields.items()}


def search_params_of(kind: str) -> dict[str, str]:
    """The search parameters an outside-only type takes: those its elements give it."""
    fields = _fields(kind)
    out = {"_id": "token"}
    if fields & set(index.PATIENT_ELEMENTS):
        out["patient"] = "reference"
        if "subject" in fields:
            out["subject"] = "reference"
    if fields & {path.split(".")[0] for path in index.DATE_ELEMENTS}:
        out["date"] = "date"
    for param, elements in index.TOKEN_PARAMS.items():
        if fields & set(elements):
            out[param] = "token"
    if fields & set(index.ENCOUNTER_ELEMENTS):
        out["encounter"] = "reference"
    return out


def includes_of(kind: str) -> dict[str, tuple[str, str]]:
    fields = _fields(kind)
    out = {}
    element = next((e for e in index.PATIENT_ELEMENTS if e in fields), None)
    if element:
        out["patient"] = ("Patient", element)
    if "encounter" in fields:
        out["encounter"] = ("Encounter", "encounter")
    return out


def _criteria(kind: str, q: Query) -> outside.Criteria:
    c = outside.Criteria(kind)
    c.patient_id = q.reference("Patient", "patient", "subject")
    ids = [v for vs in q.each("_id") for v in vs]
    if ids:
        c.ids = [u for u in map(index.as_uuid, ids) if u]
    for param in index.TOKEN_PARAMS:
        for values in q.each(param):
            c.tokens.append([f"{param}={v}".lower() for v in values])  # as index.tokens writes them
    for param, target in REFERENCE_PARAMS.items():
        for values in q.each(param):
            c.refs.append([f"{target}/{ref_id(v, target)}" for v in values if ref_id(v, target)] or ["-"])
    c.occurred = [date_range(v[0], "date") for v in q.each("date")]
    c.updated = list(q.last_updated)
    return c


def _words(res: dict[str, Any]) -> list[str]:
    names = res.get("name")
    names = names if isinstance(names, list) else [names]
    out = []
    for n in names:
        if isinstance(n, str):
            out += n.lower().split()
        elif isinstance(n, dict):
            parts = [n.get("text"), n.get("family"), *(n.get("given") or [])]
            out += " ".join(p for p in parts if isinstance(p, str)).lower().split()
    return out


def _unindexed(q: Query) -> bool:
    return bool(q.params.get("name"))


def _filter(found: list[dict[str, Any]], q: Query) -> list[dict[str, Any]]:
    """What the index does not answer, matched in memory (a name: any word starts with it)."""
    for values in q.each("name"):
        found = [r for r in found if any(w.startswith(v.lower()) for v in values for w in _words(r))]
    return found


async def _find(ctx: Ctx, kind: str, q: Query, limit: int, offset: int,
                audit_reads: bool = True) -> tuple[list[dict[str, Any]], int | None]:
    # The database orders by the dates of _sort (by what else, the caller orders in memory).
    order = tuple(("updated" if key == "_lastUpdated" else "occurred", desc) for key, desc in q.sort
                  if key in _DATES) or (("occurred", True),)
    if _unindexed(q):
        found, _ = await outside.find(ctx.session, ctx.principal, _criteria(kind, q), limit=10_000, order=order,
                                      audit_reads=audit_reads)
        matched = _filter([to_fhir(r) for r in found], q)
        return matched[offset:offset + limit], len(matched)
    found, total = await outside.find(ctx.session, ctx.principal, _criteria(kind, q), limit=limit, offset=offset,
                                      order=order, audit_reads=audit_reads)
    return [to_fhir(r) for r in found], total


_METHOD = {"received": "POST", "revised": "PUT", "retracted": "DELETE"}


def _versions(kind: str, rid: str, found: list[outside.RecordVersion]) -> list[Version]:
    """Newest first, as a history Bundle lists them."""
    return [Version(rid, v.version, v.at, _METHOD[v.change],
                    _as_fhir(kind, rid, v.resource, v.version, v.at) if v.resource is not None else None)
            for v in reversed(found)]


class _Outside:
    """Create, read, vread, history, update, delete and search of outside records of one type."""
    type: str

    async def _history(self, ctx: Ctx, rid: str) -> list[Version]:
        ctx.allow(self.type, "r")
        return _versions(self.type, rid, await outside.versions(ctx.session, ctx.principal,
                                                                as_uuid(rid, self.type), self.type))

    async def _vread(self, ctx: Ctx, rid: str, version: int) -> dict[str, Any]:
        found = next((v for v in await self._history(ctx, rid) if v.version == version), None)
        if found is None or found.resource is None:
            raise NotFound(f"{self.type}/{rid} has no version {version}.", code="version-not-found")
        return found.resource

    async def _create(self, ctx: Ctx, body: dict[str, Any]) -> dict[str, Any]:
        ctx.allow(self.type, "c")
        return to_fhir(await outside.receive(ctx.session, ctx.principal, validate(body)))

    async def _update(self, ctx: Ctx, rid: str, body: dict[str, Any], expected_version: int | None) -> dict[str, Any]:
        ctx.allow(self.type, "u")
        return to_fhir(await outside.revise(ctx.session, ctx.principal, as_uuid(rid, self.type), validate(body),
                                            expected_version))

    async def _delete(self, ctx: Ctx, rid: str) -> None:
        ctx.allow(self.type, "d")
        await outside.retract(ctx.session, ctx.principal, as_uuid(rid, self.type), self.type)

    async def _read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        ctx.allow(self.type, "r")
        return to_fhir(await outside.get(ctx.session, ctx.principal, as_uuid(rid, self.type), self.type))


class OutsideResource(_Outside, Resource):
    """A type served from outside records alone."""
    sort_params = ("date", "_lastUpdated")

    read, vread, history = _Outside._read, _Outside._vread, _Outside._history
    create, update, delete = _Outside._create, _Outside._update, _Outside._delete

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ctx.allow(self.type, "s")
        found, total = await _find(ctx, self.type, q, q.count, q.offset)
        return Page(found, total)


for _kind in OUTSIDE_ONLY:
    resource(type(f"{_kind}Resource", (OutsideResource,), {
        "type": _kind, "search_params": search_params_of(_kind), "includes": includes_of(_kind)}))


_DATES = ("date", "_lastUpdated")  # what outside records are ordered by in the database


def _sort_key(key: str):
    if key == "_lastUpdated":
        return lambda r: (r.get("meta") or {}).get("lastUpdated") or ""
    return lambda r: (index.occurred_at(r) or index.parse_date("0001")).isoformat()


class AlsoOutside(_Outside):
    """Carebase's own resources of a type, joined by the outside records of that type. Mixed in
    before the type's own class, whose methods it falls back to."""

    async def _is_outside(self, ctx: Ctx, rid: str) -> bool:
        record_id = index.as_uuid(rid)
        return record_id is not None and await outside.exists(ctx.session, ctx.principal, record_id, self.type)

    own: type[Resource]  # the type's own class

    async def read(self, ctx, rid):
        if await self._is_outside(ctx, rid):
            return await self._read(ctx, rid)
        return await super().read(ctx, rid)

    async def vread(self, ctx, rid, version):
        if await self._is_outside(ctx, rid):
            return await self._vread(ctx, rid, version)
        if self.own.supports("vread"):
            return await super().vread(ctx, rid, version)
        res = await super().read(ctx, rid)  # unversioned: only its one version exists
        if res.get("meta", {}).get("versionId") != str(version):
            raise NotFound(f"{self.type}/{rid} has no version {version}.", code="version-not-found")
        return res

    async def history(self, ctx, rid):
        if await self._is_outside(ctx, rid):
            return await self._history(ctx, rid)
        if self.own.supports("history"):
            return await super().history(ctx, rid)
        res = await super().read(ctx, rid)
        m = res.get("meta") or {}
        at = index.parse_date(m.get("lastUpdated")) or index.parse_date("1970")
        return [Version(rid, int(m.get("versionId") or 1), at, "POST", res)]

    async def create(self, ctx, body):
        return await self._create(ctx, body)

    async def update(self, ctx, rid, body, expected_version):
        if await self._is_outside(ctx, rid):
            return await self._update(ctx, rid, body, expected_version)
        await super().read(ctx, rid)  # 404 when it is nobody's
        raise ValidationFailed(f"{self.type}/{rid} is Carebase's own record: it is changed in Carebase (a chart is "
                               "amended, the directory edited), not replaced through FHIR.", code="own-record")

    async def delete(self, ctx, rid):
        if await self._is_outside(ctx, rid):
            return await self._delete(ctx, rid)
        await super().read(ctx, rid)
        raise ValidationFailed(f"{self.type}/{rid} is Carebase's own record: it cannot be deleted through FHIR.",
                               code="own-record")

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ids = [v for vs in q.each("_id") for v in vs]
        if ids and "_id" not in self.own.search_params:
            return await self._by_id(ctx, q, ids)
        native_q = replace(q, offset=0, count=q.offset + q.count, params=dict(q.params))
        native = await super().search(ctx, native_q)
        if q.count and not await outside.any_of(ctx.session, ctx.principal, self.type):
            return Page(native.resources[q.offset:q.offset + q.count], native.total,
                        native.more or len(native.resources) > q.offset + q.count)
        # The database orders outside records by the dates of _sort (then by id), so the first
        # offset+count of them hold every one this page can show. By anything else (a name) they
        # need not: then all their matches, up to a window, are read and ordered here with
        # Carebase's own first offset+count; only the ones shown go in the read audit (below).
        in_memory = bool(q.count) and any(key not in _DATES for key, _ in q.sort)
        if in_memory:
            found, total = await _find(ctx, self.type, q, BY_ID_WINDOW + 1, 0, audit_reads=False)
            if len(found) > BY_ID_WINDOW:
                raise Malformed(f"More than {BY_ID_WINDOW} outside {self.type} records match; narrow the search "
                                f"to sort by {','.join(('-' if desc else '') + k for k, desc in q.sort)}, or sort "
                                "by date and _lastUpdated alone.", code="too-many-to-sort")
        else:
            found, total = await _find(ctx, self.type, q, q.offset + q.count, 0)
        merged = native.resources + found
        if q.sort:
            sort_in_memory(merged, q.sort, {**{k: _sort_key(k) for k in _DATES}, **self.own.sort_keys})
        elif "date" in self.sort_params:
            merged.sort(key=_sort_key("date"), reverse=True)
        shown = merged[q.offset:q.offset + q.count]
        if in_memory:
            theirs = {id(r) for r in found}
            await outside.record_listed(ctx.session, ctx.principal, _criteria(self.type, q), [
                index.as_uuid(index.patient_reference(r)) for r in shown if id(r) in theirs])
        both = None if native.total is None or total is None else native.total + total
        return Page(shown, both,
                    native.more or (total or 0) > q.offset + q.count or len(merged) > q.offset + q.count)


    async def _by_id(self, ctx: Ctx, q: Query, ids: list[str]) -> Page:
        """_id for a type whose own search has no _id: each id read (Carebase's or outside), then
        held to the other parameters by the ordinary search of both."""
        ctx.allow(self.type, "s")
        found = []
        for rid in dict.fromkeys(ids):
            try:
                found.append(await self.read(ctx, rid))
            except (NotFound, Gone):
                continue
        others = {k: v for k, v in q.params.items() if k != "_id"}
        if others:
            wanted = {r["id"] for r in found}
            everything = await self.search(ctx, replace(q, params=others, offset=0, count=BY_ID_WINDOW))
            found = [r for r in everything.resources if r["id"] in wanted]
        return page_in_memory(found, q, {"date": _sort_key("date"), "_lastUpdated": _sort_key("_lastUpdated")})


for _kind in ALSO_OUTSIDE:
    _own = type(REGISTRY[_kind])
    REGISTRY[_kind] = type(_own.__name__, (AlsoOutside, _own), {
        "own": _own, "search_params": {**_own.search_params, "_id": "token"}})()


def unanswered_search_params() -> dict[str, set[str]]:
    """A joined type's own search parameters the outside records cannot answer (a test holds this
    empty: a parameter the outside index ignored would match every outside record)."""
    answered = {"_id", "patient", "subject", "date", "name", *index.TOKEN_PARAMS, *REFERENCE_PARAMS}
    return {kind: missing for kind in ALSO_OUTSIDE if (missing := set(REGISTRY[kind].search_params) - answered)}
