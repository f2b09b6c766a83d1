"""Search: the common result parameters (_count, _offset, _sort, _lastUpdated, _include,
_revinclude), the searchset Bundle with its paging links, and in-memory paging for the resource
types whose matches are few (one patient's clinical records)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from carebase.fhir.base import (
    BASE_PATH,
    DEFAULT_COUNT,
    MAX_COUNT,
    REGISTRY,
    Ctx,
    Page,
    Query,
    date_matches,
    date_range,
    outcome,
    paging,
    ref_id,
    type_of,
)
from carebase.platform.errors import DomainError, Malformed, NotFound, nul_character

# Parameters every search takes, besides each type's own.
COMMON = ("_count", "_offset", "_sort", "_lastUpdated", "_include", "_revinclude", "_format", "_pretty", "_total")


def parse_query(kind, items: list[tuple[str, str]], strict: bool) -> Query:
    q = Query(params={})
    for name, value in items:
        if "\x00" in name or "\x00" in value:  # a bundle entry's url (the HTTP address: platform.web)
            raise nul_character(f"The search parameter {name!r}")
        if name in ("_format", "_pretty"):
            continue
        if name == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise Malformed("_total is none, estimate or accurate.", code="bad-total")
            q.count_all = value != "none"
            continue
        if name == "_count":
            q.count = paging(name, value, DEFAULT_COUNT)
        elif name == "_offset":
            q.offset = paging(name, value, 0)
        elif name == "_sort":
            for key in value.split(","):
                desc = key.startswith("-")
                key = key.lstrip("-")
                if key not in kind.sort_params:
                    raise Malformed(f"{kind.type} cannot be sorted by {key!r}; it sorts by "
                                    f"{', '.join(kind.sort_params) or 'nothing'}.", code="bad-sort")
                q.sort.append((key, desc))
        elif name == "_lastUpdated":
            q.last_updated.append(date_range(value, "_lastUpdated"))
        elif name == "_include":
            q.include.append(_check_include(kind, value))
        elif name == "_revinclude":
            q.revinclude.append(_check_revinclude(kind, value))
        elif name in kind.search_params:
            if not value:
                continue  # an empty parameter constrains nothing
            q.params.setdefault(name, []).append(value)
        elif strict:
            raise Malformed(f"{kind.type} has no search parameter {name!r}; it has "
                            f"{', '.join(sorted(kind.search_params))}.", code="unknown-search-parameter")
        else:
            q.ignored.append(name)
    return q


def _check_include(kind, value: str) -> str:
    parts = value.split(":")
    if len(parts) < 2 or parts[0] != kind.type or parts[1] not in kind.includes:
        raise Malformed(f"_include={value} is not supported; {kind.type} can include "
                        f"{', '.join(f'{kind.type}:{p}' for p in kind.includes) or 'nothing'}.", code="bad-include")
    return parts[1]


def _check_revinclude(kind, value: str) -> str:
    parts = value.split(":")
    source = REGISTRY.get(parts[0]) if parts else None
    if len(parts) < 2 or source is None or source.includes.get(parts[1], (None, None))[0] != kind.type:
        raise Malformed(f"_revinclude={value} is not supported for {kind.type}.", code="bad-revinclude")
    return value


def page_in_memory(resources: list[dict[str, Any]], q: Query, sort_keys: dict[str, Any]) -> Page:
    """Filter by _lastUpdated, sort and slice a (small) list of matches."""
    found = [r for r in resources if all(date_matches(b, _updated(r)) for b in q.last_updated)]
    sort_in_memory(found, q.sort, sort_keys)
    return Page(found[q.offset:q.offset + q.count], len(found))


def sort_in_memory(resources: list[dict[str, Any]], sort: list[tuple[str, bool]], sort_keys: dict[str, Any]) -> None:
    """Sort in place by each (parameter, descending) of ``_sort``, the first the strongest."""
    for key, desc in reversed(sort):
        fn = sort_keys[key]
        resources.sort(key=lambda r, fn=fn: (fn(r) is None, fn(r) or ""), reverse=desc)


def _updated(res: dict[str, Any]):
    at = (res.get("meta") or {}).get("lastUpdated")
    return datetime.fromisoformat(at.replace("Z", "+00:00")) if at else None


def _refs(value: Any, target: str) -> list[str]:
    out = []
    if isinstance(value, dict):
        rid = ref_id(value, target) if "reference" in value else None
        if rid:
            out.append(rid)
        for v in value.values():
            if isinstance(v, (dict, list)):
                out += _refs(v, target)
    elif isinstance(value, list):
        for v in value:
            out += _refs(v, target)
    return out


async def _included(ctx: Ctx, kind, matches: list[dict[str, Any]], q: Query) -> list[dict[str, Any]]:
    extra: dict[str, dict[str, Any]] = {}
    for param in q.include:
        target, field = kind.includes[param]
        for res in matches:
            for rid in dict.fromkeys(_refs(res.get(field), target)):
                key = f"{target}/{rid}"
                if key not in extra:
                    try:
                        extra[key] = await REGISTRY[target].read(ctx, rid)
                    except DomainError:
                        continue  # not visible to the caller (or gone): left out, as the spec allows
    for spec in q.revinclude:
        source_type, param = spec.split(":")[:2]
        source = REGISTRY[source_type]
        for res in matches:
            page = await source.search(ctx, Query({param: [f"{kind.type}/{res['id']}"]}, count=MAX_COUNT))
            for r in page.resources:
                extra.setdefault(f"{source_type}/{r['id']}", r)
    seen = {f"{r['resourceType']}/{r['id']}" for r in matches}
    return [r for k, r in extra.items() if k not in seen]


async def run_search(ctx: Ctx, type: str, items: list[tuple[str, str]], strict: bool = False) -> dict[str, Any]:
    kind = type_of(type)
    if not kind.supports("search"):
        raise NotFound(f"{type} cannot be searched here.", code="search-not-supported")
    q = parse_query(kind, items, strict)
    page = await kind.search(ctx, q) if q.count else await _count_only(ctx, kind, q)
    included = await _included(ctx, kind, page.resources, q)
    return searchset(ctx, type, items, q, page, included)


async def _count_only(ctx: Ctx, kind, q: Query) -> Page:
    q.count, q.count_all = 1, True
    page = await kind.search(ctx, q)
    return Page([], page.total)


def searchset(ctx: Ctx, type: str, items: list[tuple[str, str]], q: Query, page: Page,
              included: list[dict[str, Any]]) -> dict[str, Any]:
    base = f"{ctx.base_url}{BASE_PATH}/{type}"
    kept = [(k, v) for k, v in items if k not in ("_offset", "_count")]

    def link(offset: int) -> str:
        return base + "?" + urlencode([*kept, ("_count", str(q.count or DEFAULT_COUNT)), ("_offset", str(offset))])

    links = [{"relation": "self", "url": link(q.offset)}]
    if q.count and (page.more if page.total is None else q.offset + q.count < page.total):
        links.append({"relation": "next", "url": link(q.offset + q.count)})
    if q.count and q.offset > 0:
        links.append({"relation": "previous", "url": link(max(0, q.offset - q.count))})
    entries = [{"fullUrl": f"{ctx.base_url}{BASE_PATH}/{r['resourceType']}/{r['id']}", "resource": r,
                "search": {"mode": "match"}} for r in page.resources]
    entries += [{"fullUrl": f"{ctx.base_url}{BASE_PATH}/{r['resourceType']}/{r['id']}", "resource": r,
                 "search": {"mode": "include"}} for r in included]
    if q.ignored:
        note = outcome(Malformed(f"Ignored parameter(s) {', '.join(q.ignored)}: {type} does not search by them.",
                                 code="ignored-parameters"))
        note["issue"][0]["severity"] = "warning"
        entries.append({"resource": note, "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if page.total is not None:
        bundle["total"] = page.total
    if entries:
        bundle["entry"] = entries
    return bundle
