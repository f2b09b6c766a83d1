"""Bundles: batch (each entry on its own, in a savepoint) and transaction (all or nothing, with
``urn:uuid`` references to entries created in the same Bundle resolved), and history Bundles."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from carebase.fhir.base import BASE_PATH, Ctx, Version, instant, outcome, type_of
from carebase.fhir.search import run_search
from carebase.platform.errors import DomainError, Malformed
from carebase.platform.web import refusable

Interact = Callable[..., Awaitable[tuple[int, dict[str, Any] | None, bool]]]
# The order the spec gives for processing a transaction's entries.
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
# A transaction may carry one patient's whole history from another system (a Synthea patient of
# ninety years is thousands of resources and several megabytes).
MAX_ENTRIES = 10_000
MAX_BYTES = 64 * 1024 * 1024


def history(ctx: Ctx, versions: list[Version], total: int, link: str, params: dict[str, str], count: int,
            offset: int) -> dict[str, Any]:
    kept = {k: v for k, v in params.items() if k not in ("_count", "_offset")}
    links = [{"relation": "self", "url": link + "?" + urlencode({**kept, "_count": count, "_offset": offset})}]
    if offset + count < total:
        links.append({"relation": "next", "url": link + "?" + urlencode({**kept, "_count": count,
                                                                         "_offset": offset + count})})
    entries = []
    for v in versions:
        kind = v.resource["resourceType"] if v.resource else link.split(BASE_PATH + "/", 1)[1].split("/")[0]
        entry: dict[str, Any] = {"fullUrl": f"{ctx.base_url}{BASE_PATH}/{kind}/{v.resource_id}",
                                 "request": {"method": v.method,
                                             "url": kind if v.method == "POST" else f"{kind}/{v.resource_id}"},
                                 "response": {"status": {"POST": "201", "PUT": "200", "DELETE": "204"}[v.method],
                                              "etag": f'W/"{v.version}"', "lastModified": instant(v.at)}}
        if v.resource is not None:
            entry["resource"] = v.resource
        entries.append(entry)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "total": total, "link": links}
    if entries:
        bundle["entry"] = entries
    return bundle


def _rewrite(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "reference" and isinstance(v, str) and v in ids:
                out[k] = ids[v]
            else:
                out[k] = _rewrite(v, ids)
        return out
    if isinstance(value, list):
        return [_rewrite(v, ids) for v in value]
    return value


def _urns(value: Any) -> set[str]:
    if isinstance(value, dict):
        ref = value.get("reference")
        found = {ref} if isinstance(ref, str) and ref.startswith("urn:") else set()
        return found.union(*(_urns(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_urns(v) for v in value))
    return set()


def _order(entries: list[dict[str, Any]]) -> list[int]:
    """The spec's processing order (DELETE, POST, PUT, GET), with each created entry after the
    entries it refers to by urn (whatever their place in the Bundle); a cycle is refused."""
    by_method = sorted(range(len(entries)), key=lambda i: _ORDER[entries[i]["request"]["method"]])
    posts = [i for i in by_method if entries[i]["request"]["method"] == "POST"]
    made_by = {entries[i].get("fullUrl"): i for i in posts if str(entries[i].get("fullUrl", "")).startswith("urn:")}
    needs = {i: {made_by[u] for u in _urns(entries[i].get("resource")) if u in made_by} - {i} for i in posts}
    ordered: list[int] = []
    while needs:
        done = set(ordered)
        ready = [i for i in posts if i in needs and not needs[i] - done]
        if not ready:
            raise Malformed("Entries of this Bundle refer to each other in a circle; nothing was applied.",
                            code="circular-references")
        for i in ready:
            ordered.append(i)
            del needs[i]
    first = [i for i in by_method if entries[i]["request"]["method"] == "DELETE"]
    rest = [i for i in by_method if entries[i]["request"]["method"] not in ("DELETE", "POST")]
    return first + ordered + rest


def _unresolved(value: Any) -> str | None:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and ref.startswith("urn:uuid:"):
            return ref
        return next((u for u in map(_unresolved, value.values()) if u), None)
    if isinstance(value, list):
        return next((u for u in map(_unresolved, value) if u), None)
    return None


def _request_of(i: int, entry: Any) -> tuple[str, str]:
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise Malformed(f"Bundle.entry[{i}] has no request (method and url).", code="bad-bundle-entry")
    method, url = entry["request"].get("method"), entry["request"].get("url")
    if method not in _ORDER or not isinstance(url, str) or not url:
        raise Malformed(f"Bundle.entry[{i}].request needs a method (GET, POST, PUT, DELETE) and a url.",
                        code="bad-bundle-entry")
    return method, url.split(BASE_PATH + "/", 1)[-1].lstrip("/")


async def _entry(ctx: Ctx, i: int, entry: dict[str, Any], interact: Interact,
                 ids: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Do one entry: (its response element, the resource to return)."""
    method, url = _request_of(i, entry)
    path, _, query = url.partition("?")
    parts = path.split("/")
    if method in ("GET", "HEAD"):
        if len(parts) == 1:
            bundle = await run_search(ctx, parts[0], parse_qsl(query))
            return {"status": "200"}, bundle
        kind = type_of(parts[0])
        res = (await kind.vread(ctx, parts[1], int(parts[3])) if len(parts) == 4 and parts[2] == "_history"
               and parts[3].isdigit() else await kind.read(ctx, parts[1]))
        return {"status": "200", "etag": f'W/"{res["meta"]["versionId"]}"'} if res.get("meta") else {"status": "200"}, res
    resource = entry.get("resource")
    if method in ("POST", "PUT"):
        if not isinstance(resource, dict):
            raise Malformed(f"Bundle.entry[{i}] ({method} {url}) has no resource.", code="bad-bundle-entry")
        resource = _rewrite(resource, ids)
        dangling = _unresolved(resource)
        if dangling:
            raise Malformed(f"Bundle.entry[{i}] refers to {dangling}, which no entry of this Bundle creates.",
                            code="unresolved-reference")
        if resource.get("resourceType") != parts[0]:
            raise Malformed(f"Bundle.entry[{i}]: the resource is a {resource.get('resourceType')}, the url names "
                            f"{parts[0]}.", code="wrong-resource-type")
    request = entry["request"]
    headers = {k: v for k, v in (("if-none-exist", request.get("ifNoneExist")),
                                 ("if-match", request.get("ifMatch"))) if v}
    if method == "PUT" and len(parts) == 1 and "?" in url:
        raise Malformed("Conditional update is not supported; PUT to Type/id.", code="conditional-update")
    status, res, _ = await interact(ctx, method, parts[0], parts[1] if len(parts) > 1 else None, resource, headers)
    response: dict[str, Any] = {"status": str(status)}
    if res is not None:
        version = (res.get("meta") or {}).get("versionId")
        response["location"] = f"{res['resourceType']}/{res['id']}" + (f"/_history/{version}" if version else "")
        if version:
            response["etag"] = f'W/"{version}"'
        if (res.get("meta") or {}).get("lastUpdated"):
            response["lastModified"] = res["meta"]["lastUpdated"]
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and full_url.startswith("urn:"):
            ids[full_url] = f"{res['resourceType']}/{res['id']}"
    return response, res


async def process(ctx: Ctx, bundle: dict[str, Any], interact: Interact) -> dict[str, Any]:
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise Malformed("POST a Bundle of type batch or transaction here.", code="bad-bundle-type")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise Malformed("Bundle.entry must be a list.", code="bad-bundle-entry")
    if len(entries) > MAX_ENTRIES:
        raise Malformed(f"A Bundle may hold at most {MAX_ENTRIES} entries; split it.", code="bundle-too-large",
                        status=413)
    for i, entry in enumerate(entries):
        _request_of(i, entry)
    order = _order(entries)
    ids: dict[str, str] = {}
    results: list[dict[str, Any] | None] = [None] * len(entries)
    for i in order:
        entry = entries[i]
        if kind == "transaction":
            try:
                response, res = await _entry(ctx, i, entry, interact, ids)
            except DomainError as err:
                method, url = _request_of(i, entry)
                wrapped = DomainError(f"Bundle.entry[{i}] ({method} {url}): {err.detail} The transaction was not "
                                      "applied.", code=err.code, status=err.status, **err.extra)
                wrapped.title = err.title
                raise wrapped from err
        else:
            async def one(i=i, entry=entry):
                return await _entry(ctx, i, entry, interact, ids)

            done = await refusable(ctx.session, one)
            if isinstance(done, DomainError):
                results[i] = {"response": {"status": str(done.status), "outcome": outcome(done)}}
                continue
            response, res = done
        out: dict[str, Any] = {"response": response}
        if res is not None:
            out["resource"] = res
            if res.get("resourceType") != "Bundle":
                out["fullUrl"] = f"{ctx.base_url}{BASE_PATH}/{res['resourceType']}/{res['id']}"
        results[i] = out
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": results}
