"""What every FHIR resource type of Carebase shares: the registry, search parameters and their
parsing, references, validation with ``fhir.resources`` and the OperationOutcome.

One mapper per resource type lives beside this module and registers itself with ``resource``;
the routes, the CapabilityStatement and the bundles all work from that one registry, so what the
server advertises is what it does.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

from fastapi.responses import JSONResponse
from fhir.resources.R4B import get_fhir_model_class as r4b_model
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.fhir import shapes
from carebase.platform.authz import Principal, require_smart
from carebase.platform.errors import (
    DomainError,
    Malformed,
    NotFound,
    NotSupported,
    ValidationFailed,
)

FHIR_JSON = "application/fhir+json"
FHIR_VERSION = "4.0.1"
BASE_PATH = "/fhir/R4"
ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# Carebase's own code and identifier systems. URNs rather than URLs under the server's address: an
# identifier system must not change when an operator moves the server to another host name.
SID = "urn:carebase:"
MAX_COUNT = 500
# Paging deeper reads (and, merged with outside records, holds) everything before the page: past
# this, a client narrows the search or exports.
MAX_OFFSET = 100_000
DEFAULT_COUNT = 50


# -- OperationOutcome ------------------------------------------------------------------------------

_ISSUE_CODES = {400: "structure", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
                406: "not-supported", 409: "conflict", 410: "deleted", 412: "conflict", 413: "too-costly",
                422: "processing", 428: "required", 429: "throttled"}


def outcome(err: DomainError) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error" if err.status < 500 else "fatal",
                             "code": _ISSUE_CODES.get(err.status, "exception"),
                             "details": {"coding": [{"system": "https://carebase.dev/problems", "code": err.code}],
                                         "text": err.detail}}
    where = err.extra.get("expression")
    if where:
        issue["expression"] = [where]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def outcome_response(err: DomainError) -> JSONResponse:
    from carebase.platform import context

    body = outcome(err)
    body["id"] = context.get().request_id or None
    return JSONResponse({k: v for k, v in body.items() if v is not None}, status_code=err.status,
                        headers=err.headers, media_type=FHIR_JSON)


def invalid(detail: str, expression: str | None = None) -> ValidationFailed:
    return ValidationFailed(detail, code="invalid-resource", **({"expression": expression} if expression else {}))


# -- validation ------------------------------------------------------------------------------------


def validate(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource if ``fhir.resources`` (R4B models, identical to R4 for what Carebase serves)
    accepts it; otherwise 422 naming the first bad element."""
    if shapes.known_valid(resource):
        return resource
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        raise invalid("The resource has no resourceType.", "resourceType")
    try:
        model = r4b_model(kind)
    except (KeyError, ValueError, AttributeError):
        raise invalid(f"{kind} is not a FHIR R4 resource type.", "resourceType") from None
    try:
        instance = model.model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__")
        raise invalid(f"{kind}: {where or 'resource'}: {first.get('msg', 'invalid')}",
                      f"{kind}.{where}" if where else kind) from None
    shapes.remember(resource, instance)
    return resource


# Digests of resource representations this process has validated: the same bytes are the same
# resource, so a hot resource (a patient read a hundred times) is checked once, not a hundred.
_VALIDATED: OrderedDict[bytes, None] = OrderedDict()
_VALIDATED_MAX = 100_000


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _validated(resource: dict[str, Any]) -> bytes:
    """The resource's JSON, once ``validate`` has passed it (now, or an identical one before)."""
    encoded = _encode(resource)
    digest = hashlib.blake2b(encoded, digest_size=16).digest()
    if digest in _VALIDATED:
        _VALIDATED.move_to_end(digest)
        return encoded
    validate(resource)
    _VALIDATED[digest] = None
    if len(_VALIDATED) > _VALIDATED_MAX:
        _VALIDATED.popitem(last=False)
    return encoded


def checked(body: dict[str, Any]) -> bytes:
    """The response body as JSON, once every resource in it has passed ``validate`` (in this
    response or an identical one before): a Bundle's entries one by one, each encoded once, then
    its envelope."""
    entries = body.get("entry") if body.get("resourceType") == "Bundle" else None
    if entries == []:
        body, entries = {k: v for k, v in body.items() if k != "entry"}, None  # FHIR has no empty arrays
    if not isinstance(entries, list):
        return _validated(body)
    # The envelope with one entry of each shape: entries that differ only in their fullUrl (all
    # built by the same code from validated ids) validate alike, and checking fifty of them on
    # every search page was a third of the FHIR search's cost.
    # (Validation by shape alone would not do: a page of 500 entries is too large a shape to keep.)
    rests = [{k: v for k, v in e.items() if k != "resource"} for e in entries]
    distinct: dict[bytes, dict[str, Any]] = {}
    for rest in rests:
        distinct.setdefault(_encode({k: v for k, v in rest.items() if k != "fullUrl"}), rest)
    validate({**body, "entry": list(distinct.values())})
    parts = []
    for entry, rest in zip(entries, rests, strict=True):
        if isinstance(entry.get("resource"), dict):
            head = _encode(rest)[:-1]
            parts.append(head + (b"," if len(head) > 1 else b"") + b'"resource":' + _validated(entry["resource"]) + b"}")
        else:
            parts.append(_encode(rest))
    envelope = _encode({k: v for k, v in body.items() if k != "entry"})
    return envelope[:-1] + b',"entry":[' + b",".join(parts) + b"]}"


def parse_body(raw: bytes, expected_type: str | None = None) -> dict[str, Any]:
    if not raw.strip():
        raise Malformed("Send the resource as JSON in the request body.", code="empty-body")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Malformed("The body is not valid JSON.", code="malformed-json") from None
    if not isinstance(body, dict):
        raise Malformed("The body must be a JSON object (a FHIR resource).", code="malformed-json")
    if expected_type is not None and body.get("resourceType") != expected_type:
        raise Malformed(f"The body is a {body.get('resourceType')!r}, this endpoint takes {expected_type}.",
                        code="wrong-resource-type")
    flaw = _first_flaw(body, str(body.get("resourceType") or "resource"))
    if flaw is not None:
        where, null = flaw
        if null:
            # FHIR's JSON format has no null properties (the models would take one and store it as sent).
            raise invalid(f"{where} is null: FHIR JSON has no null values; leave the element out.", where)
        raise invalid(f"{where} holds the NUL character (\\u0000), which no FHIR string may.", where)
    return body


def _first_flaw(value: Any, path: str) -> tuple[str, bool] | None:
    """Where the first thing FHIR JSON cannot carry is, and whether it is a null property (else a
    string or name holding the NUL character, which PostgreSQL cannot store either). A null
    inside an array is allowed: it keeps a primitive array in step with its ``_element`` extensions."""
    if isinstance(value, dict):
        for k, v in value.items():
            where = f"{path}.{k}"
            if v is None:
                return where, True
            if "\x00" in k or (type(v) is str and "\x00" in v):
                return where, False
            if isinstance(v, (dict, list)) and (found := _first_flaw(v, where)) is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if type(v) is str and "\x00" in v:
                return f"{path}[{i}]", False
            if isinstance(v, (dict, list)) and (found := _first_flaw(v, f"{path}[{i}]")) is not None:
                return found
    return None


# -- small mapping helpers ---------------------------------------------------------------------------


def instant(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def meta(version: int | str, updated: datetime | None) -> dict[str, Any]:
    m: dict[str, Any] = {"versionId": str(version)}
    if updated is not None:
        m["lastUpdated"] = instant(updated)
    return m


def ref(kind: str, rid: Any, display: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"reference": f"{kind}/{rid}"}
    if display:
        out["display"] = display
    return out


def ref_id(value: Any, kind: str) -> str | None:
    """The id in a reference to ``kind`` ('Patient/123', '123', or {'reference': ...})."""
    if isinstance(value, dict):
        value = value.get("reference")
    if not isinstance(value, str):
        return None
    value = value.rstrip("/")
    if "/" in value:
        parts = value.split("/")
        if len(parts) >= 2 and parts[-2] == kind:
            return parts[-1]
        if len(parts) >= 4 and parts[-3] == "_history" and parts[-4] == kind:
            return parts[-2]
        return None
    return value


def as_uuid(rid: str, kind: str) -> uuid.UUID:
    try:
        return uuid.UUID(rid)
    except (ValueError, TypeError):
        raise NotFound(f"No {kind} with id {rid!r}.", code="resource-not-found") from None


def no_such(kind: str, rid: str) -> NotFound:
    return NotFound(f"No {kind} with id {rid!r}.", code="resource-not-found")


def parent_id(pattern: re.Pattern, rid: str, kind: str) -> uuid.UUID:
    """The record a derived id was made from ('<encounter id>-dx0' -> the encounter's id)."""
    m = pattern.match(rid)
    if m is None:
        raise no_such(kind, rid)
    return as_uuid(m.group(1), kind)


def pick(resources: list[dict[str, Any]], rid: str, kind: str) -> dict[str, Any]:
    found = next((r for r in resources if r["id"] == rid), None)
    if found is None:
        raise no_such(kind, rid)
    return found


def strip_empty(obj: Any) -> Any:
    """FHIR forbids empty strings, arrays and objects: drop them (and None) recursively."""
    if isinstance(obj, dict):
        out = {k: strip_empty(v) for k, v in obj.items()}
        return {k: v for k, v in out.items() if v not in (None, "", [], {})}
    if isinstance(obj, list):
        return [v for v in (strip_empty(x) for x in obj) if v not in (None, "", [], {})]
    return obj


# -- search parameters -------------------------------------------------------------------------------

DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le")
_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def date_range(value: str, name: str) -> tuple[str, datetime, datetime]:
    """A FHIR date search value (with its prefix) as (prefix, start, end exclusive), in UTC. A date
    without a time is the whole day (month, year) in UTC."""
    prefix = value[:2] if value[:2] in DATE_PREFIXES + ("sa", "eb", "ap") else "eq"
    raw = value[2:] if value[:2] == prefix else value
    if prefix not in DATE_PREFIXES:
        raise Malformed(f"{name}: the prefix {prefix!r} is not supported; use eq, ne, gt, lt, ge or le.",
                        code="unsupported-prefix")
    m = _PARTIAL.match(raw)
    try:
        if m:
            y, mo, d = int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1)
            start = datetime(y, mo, d, tzinfo=UTC)
            if m.group(3):
                end = start + timedelta(days=1)
            elif m.group(2):
                end = datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=UTC)
            else:
                end = datetime(y + 1, 1, 1, tzinfo=UTC)
            return prefix, start, end
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise Malformed(f"{name}: {raw!r} is not a FHIR date or dateTime.", code="bad-date") from None
    if at.tzinfo is None:
        raise Malformed(f"{name}: a dateTime needs a time zone (Z or +05:30).", code="bad-date")
    at = at.astimezone(UTC)
    return prefix, at, at + timedelta(seconds=1)


def as_date_bound(b: tuple[str, datetime, datetime]) -> tuple[str, date, date]:
    prefix, start, end = b
    return prefix, start.date(), (end - timedelta(microseconds=1)).date() + timedelta(days=1)


def date_matches(b: tuple[str, datetime, datetime], at: datetime | date | None) -> bool:
    if at is None:
        return False
    prefix, start, end = b
    if isinstance(at, datetime):
        value = at
    else:
        start, end, value = start.date(), (end - timedelta(microseconds=1)).date() + timedelta(days=1), at
    return {"eq": start <= value < end, "ne": not (start <= value < end), "gt": value >= end, "lt": value < start,
            "ge": value >= start, "le": value < end}[prefix]


def token(value: str) -> tuple[str | None, str]:
    """'system|code' -> (system, code); 'code' -> (None, code); '|code' -> ('', code)."""
    if "|" in value:
        system, code = value.split("|", 1)
        return system, code
    return None, value


def token_matches(value: str, codings: list[tuple[str | None, str | None]]) -> bool:
    system, code = token(value)
    for s, c in codings:
        if (system is None or system == (s or "")) and (code == "" or (c or "").lower() == code.lower()):
            return True
    return False


def paging(name: str, value: str | None, default: int) -> int:
    """_count or _offset: a whole number, not negative (_count at most MAX_COUNT, _offset at most
    MAX_OFFSET)."""
    if not value:
        return default
    try:
        n = int(value)
    except ValueError:
        raise Malformed(f"{name} must be a whole number.", code="bad-paging") from None
    if n < 0:
        raise Malformed(f"{name} cannot be negative.", code="bad-paging")
    if name == "_offset" and n > MAX_OFFSET:
        raise Malformed(f"_offset can be at most {MAX_OFFSET:,}: narrow the search (a date range, say), or take "
                        "everything with $export.", code="bad-paging")
    return min(n, MAX_COUNT) if name == "_count" else n


@dataclass
class Query:
    """A search request: the resource's own parameters (name -> values, each value may be a
    comma-separated OR list) and the common result parameters."""
    params: dict[str, list[str]]
    count: int = DEFAULT_COUNT
    offset: int = 0
    sort: list[tuple[str, bool]] = field(default_factory=list)
    last_updated: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    revinclude: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    # _total=accurate: count every match even when that costs (by default the total comes where
    # it is free: the last page, or types whose matches are gathered in memory anyway)
    count_all: bool = False

    def one(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[-1] if values else None

    def each(self, name: str) -> list[list[str]]:
        """Every occurrence of a parameter (AND), each split on commas (OR)."""
        return [v.split(",") for v in self.params.get(name, [])]

    def reference(self, kind: str, *names: str) -> uuid.UUID | None:
        """The one ``kind`` these reference parameters name (None: not given); 400 for several."""
        values = [ref_id(v, kind) for name in names for vs in self.each(name) for v in vs]
        if not values:
            return None
        if None in values or len(set(values)) > 1:
            raise Malformed(f"{' or '.join(names)}: name one {kind} ({kind}/<id>).", code="bad-search-value")
        return as_uuid(values[0], kind)


@dataclass
class Page:
    resources: list[dict[str, Any]]
    total: int | None  # None where counting every match would cost too much (the audit trail)
    more: bool = False  # with total None: whether another page follows


@dataclass
class Version:
    """One entry of a resource's history: the resource as it was, or None for a deletion."""
    resource_id: str
    version: int
    at: datetime
    method: str  # POST | PUT | DELETE
    resource: dict[str, Any] | None


class Ctx:
    """One FHIR request's unit of work: who asks, in which transaction."""

    def __init__(self, session: AsyncSession, principal: Principal, base_url: str):
        self.session = session
        self.principal = principal
        self.base_url = base_url.rstrip("/")

    def allow(self, resource: str, action: str) -> None:
        require_smart(self.principal, resource, action)


class Resource:
    """A FHIR resource type served from Carebase's data. Subclasses fill in what they support;
    ``interactions`` is derived from which methods they override."""
    type: ClassVar[str]
    search_params: ClassVar[dict[str, str]] = {}  # name -> FHIR search parameter type
    # the search parameters _sort takes
    sort_params: ClassVar[tuple[str, ...]] = ()
    # How a resource of this type sorts by each _sort parameter its search orders in memory: the
    # same keys order a search that merges it with outside records (fhir/outside.py).
    sort_keys: ClassVar[dict[str, Callable[[dict[str, Any]], Any]]] = {}
    # What _include=Type:param follows: param -> (the target type, the element holding the reference)
    includes: ClassVar[dict[str, tuple[str, str]]] = {}
    profile: ClassVar[str | None] = None
    versioned: ClassVar[bool] = True

    # What a type does not override it does not support: a clean 405 wherever it is asked for (a
    # route, a bundle entry, an _include), and absent from the CapabilityStatement (``supports``).
    async def read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        raise NotSupported(f"{self.type} resources are not read by id here; search for them.",
                           code="read-not-supported")

    async def search(self, ctx: Ctx, q: Query) -> Page:
        raise NotSupported(f"{self.type} cannot be searched here.", code="search-not-supported")

    async def vread(self, ctx: Ctx, rid: str, version: int) -> dict[str, Any]:
        raise NotSupported(f"{self.type} keeps no past versions.", code="vread-not-supported")

    async def history(self, ctx: Ctx, rid: str) -> list[Version]:
        raise NotSupported(f"{self.type} keeps no version history.", code="history-not-supported")

    async def type_history(self, ctx: Ctx, since: datetime | None, count: int, offset: int) -> tuple[list[Version], int]:
        raise NotSupported(f"History of all {self.type} resources is not kept.", code="history-not-supported")

    async def create(self, ctx: Ctx, body: dict[str, Any]) -> dict[str, Any]:
        raise NotSupported(f"{self.type} resources cannot be created through FHIR here.", code="create-not-supported")

    async def update(self, ctx: Ctx, rid: str, body: dict[str, Any], expected_version: int | None) -> dict[str, Any]:
        raise NotSupported(f"{self.type} resources cannot be updated through FHIR here.", code="update-not-supported")

    async def delete(self, ctx: Ctx, rid: str) -> None:
        raise NotSupported(f"{self.type} resources cannot be deleted here.", code="delete-not-supported")

    async def conditional_match(self, ctx: Ctx, q: Query) -> list[dict[str, Any]]:
        """The resources a conditional create's criteria find (If-None-Exist)."""
        return (await self.search(ctx, q)).resources

    @classmethod
    def supports(cls, name: str) -> bool:
        return getattr(cls, name) is not getattr(Resource, name)

    @classmethod
    def interactions(cls) -> list[str]:
        names = {"read": "read", "vread": "vread", "update": "update", "delete": "delete",
                 "history": "history-instance", "type_history": "history-type", "create": "create",
                 "search": "search-type"}
        return [fhir for method, fhir in names.items() if cls.supports(method)]


REGISTRY: dict[str, Resource] = {}


def resource(cls: type[Resource]) -> type[Resource]:
    REGISTRY[cls.type] = cls()
    return cls


def type_of(name: str) -> Resource:
    found = REGISTRY.get(name)
    if found is None:
        raise NotFound(f"This server does not serve {name} resources (see /fhir/R4/metadata).",
                       code="unknown-resource-type")
    return found
