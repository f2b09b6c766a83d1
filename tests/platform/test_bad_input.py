"""Bad input never breaks the server and never writes a row.

Every POST/PUT/PATCH route under /api/v1 is found on the running app and fuzzed from its own
request-body model, so a route added later is covered without touching this file: malformed
JSON, a wrong type in each field, each required field missing, an unknown field, a megabyte in
each string field, and SQL/HTML injection in each string field. Each case is sent with an admin
token of tenant ``demo`` and without a token.

A refusal must be a 4xx ``application/problem+json`` and leave the database exactly as it was:
the row count of every table in the public schema, the event log's last position, plus the full
content of the tables that hold the record (patients, accounts, memberships, locations, tenants). Only bookkeeping the
platform keeps on purpose for refused requests (failed-login counters, OTP attempts, session
revocation) may change, and none of it adds or removes rows.

The base body of each case is valid (built from the model), so the one fault injected is the
reason for the refusal; with a token the problem must name the faulty field.
"""

from __future__ import annotations

import functools
import typing
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import fastapi.params
import httpx
import psycopg
import pytest
from fastapi.routing import APIRoute
from hypothesis import find
from hypothesis import strategies as st
from psycopg import sql
from pydantic import BaseModel, ValidationError

from carebase.providers.codes import make_npi
from tests.conftest import bearer, login, new_staff, unique_email

# Refusals are the API's mapping and "nothing written" is the transaction's rollback: neither
# depends on which PostgreSQL runs underneath, and the fuzz is minutes of the suite. With both
# backends running, the system one takes it (with only the embedded one, that one does).
pytestmark = pytest.mark.one_backend

PROBLEM_JSON = "application/problem+json"
WRITE_METHODS = {"POST", "PUT", "PATCH"}
MEGABYTE = "x" * (1 << 20)
INJECTIONS = ("'; DROP TABLE patients; --", "1 OR 1=1", "<script>alert(1)</script>")
# Values of the wrong JSON type; each is used only for fields that reject it.
WRONG_TYPES = (12345.678, True, ["fuzz"], {"fuzz": 1}, None)
MALFORMED_JSON = (b'{"broken": ', b'{"a": "\xff\xfe"}')
UNKNOWN_FIELD = "fuzz_unknown_field"
# Tables compared row by row (everything else by row count only): the record itself. The event
# log is compared by its count and its last position instead: the app role may only INSERT and
# SELECT there, so any write shows in those, and hashing its every row (megabytes once a FHIR
# import has run) twice per case made the fuzzer crawl.
CONTENT_TABLES = ("patients", "accounts", "memberships", "locations", "tenants")


# -- the routes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteRoute:
    method: str
    path: str
    model: type[BaseModel] | None  # None: the route declares no body
    is_form: bool
    path_params: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _api_routes(app) -> typing.Iterator[tuple[str, APIRoute]]:
    """(effective path, APIRoute) of every API route, through included routers."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.16x keeps included routers lazy
    except ImportError:  # older FastAPI flattens them into app.routes
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield route.path, route
        return
    for ctx in iter_route_contexts(app.routes):
        if isinstance(ctx.original_route, APIRoute):
            yield ctx.path, ctx.original_route


def _body_model(route: APIRoute) -> tuple[type[BaseModel] | None, bool]:
    body = route.body_field
    if body is None:
        return None, False
    annotation = body.field_info.annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate, isinstance(body.field_info, fastapi.params.Form)
    raise AssertionError(f"{route.path}: the body {annotation!r} is not a pydantic model; teach the fuzzer")


def _uploads_files(route: APIRoute) -> bool:
    return route.body_field is not None and isinstance(route.body_field.field_info, fastapi.params.File) or any(
        isinstance(f.field_info, fastapi.params.File) for f in route.dependant.body_params)


# File uploads (multipart) have their own bad-input tests next to their feature: the fuzzer speaks
# JSON and urlencoded forms. Listed by name so a new upload route is a deliberate addition.
UPLOAD_ROUTES = {("POST", "/api/v1/messages/attachments"): "tests/messaging/test_messaging.py",
                 ("POST", "/api/v1/pharmacy/medicines/import"): "tests/pharmacy/test_pharmacy.py"}


def write_routes(app) -> list[WriteRoute]:
    found = []
    for path, route in _api_routes(app):
        if not path.startswith("/api/v1"):
            continue
        if _uploads_files(route):
            assert any((m, path) in UPLOAD_ROUTES for m in route.methods), \
                f"{path} uploads files: test its bad input and list it in UPLOAD_ROUTES"
            continue
        for method in sorted(route.methods & WRITE_METHODS):
            model, is_form = _body_model(route)
            found.append(WriteRoute(method, path, model, is_form,
                                    tuple(p.name for p in route.dependant.path_params)))
    return found


# -- fields and values -------------------------------------------------------------------------


def _variants(schema: dict, defs: dict) -> typing.Iterator[dict]:
    if "$ref" in schema:
        yield from _variants(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    elif "anyOf" in schema or "oneOf" in schema:
        for sub in schema.get("anyOf", schema.get("oneOf")):
            yield from _variants(sub, defs)
    else:
        yield schema


@dataclass(frozen=True)
class Field:
    name: str  # as sent on the wire (the alias)
    required: bool
    variants: tuple[dict, ...]  # JSON-schema alternatives of the value

    @property
    def takes_strings(self) -> bool:
        return any(v.get("type") == "string" for v in self.variants)


@functools.cache  # a model's JSON schema is costly to build, and every case of a route asks for it
def fields_of(model: type[BaseModel]) -> tuple[Field, ...]:
    schema = model.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    out = []
    for name, info in model.model_fields.items():
        wire = info.alias or name
        out.append(Field(wire, info.is_required(), tuple(_variants(schema["properties"][wire], defs))))
    return tuple(out)


def accepts(model: type[BaseModel], name: str, value: Any) -> bool:
    """Whether the model takes ``value`` for this one field (other fields' errors ignored)."""
    try:
        model.model_validate({name: value})
    except ValidationError as exc:
        return not any(err["loc"][:1] == (name,) for err in exc.errors())
    return True


_pattern_examples: dict[str, str] = {}


def _candidates(f: Field) -> typing.Iterator[Any]:
    tag = uuid.uuid4().hex
    for v in f.variants:
        if "enum" in v:
            yield v["enum"][-1]  # any member is valid; the last avoids minting extra admins in demo
        if "const" in v:
            yield v["const"]
        fmt = v.get("format")
        if fmt == "email":
            yield unique_email("fuzz")
        elif fmt == "uuid":
            yield str(uuid.uuid4())
        elif fmt == "date":
            yield "1990-01-01"
        elif fmt == "date-time":
            yield "2020-01-01T00:00:00Z"
    yield f"Fuzz-{tag[:24]}"
    yield unique_email("fuzz")
    yield "+9198" + str(int(tag[:12], 16))[:8].rjust(8, "1")
    yield "123456"
    yield make_npi(str(int(tag[:12], 16))[:9].rjust(9, "1"))  # a fresh, valid NPI (check digit)
    yield 1
    yield True
    yield []  # a list field (an empty weekly template, say)
    yield [{"medicine": "paracetamol"}]  # a prescription's lines (at least one)
    for v in f.variants:  # last resort: the simplest string matching the field's pattern
        if "pattern" in v:
            if v["pattern"] not in _pattern_examples:
                _pattern_examples[v["pattern"]] = find(st.from_regex(v["pattern"], fullmatch=True), lambda s: True)
            yield _pattern_examples[v["pattern"]]


def valid_value(model: type[BaseModel], f: Field) -> Any:
    for candidate in _candidates(f):
        if accepts(model, f.name, candidate):
            return candidate
    raise AssertionError(f"the fuzzer knows no valid value for {model.__name__}.{f.name}; add a candidate")


# -- the database, before and after ------------------------------------------------------------


# Counters a refused request must still bump (per-address rate limits: a new minute's window adds
# a row); everything else must stay exactly as it was.
BOOKKEEPING_TABLES = {"rate_limits"}


def snapshot_query(owner: psycopg.Connection) -> sql.Composed:
    tables = [t for (t,) in owner.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        if t not in BOOKKEEPING_TABLES]
    assert set(CONTENT_TABLES) <= set(tables), tables
    parts = [sql.SQL("{}, (SELECT count(*) FROM public.{})").format(sql.Literal(t), sql.Identifier(t))
             for t in tables]
    # Each row's hash, summed: any changed row changes the sum, and unlike an aggregate over the
    # sorted rows it needs no sort (the tables hold thousands of rows by the time this runs).
    parts += [sql.SQL("{}, (SELECT coalesce(sum(hashtextextended(x::text, 0)::numeric), 0)::text "
                      "FROM public.{} x)").format(sql.Literal(t + " content"), sql.Identifier(t))
              for t in CONTENT_TABLES]
    parts.append(sql.SQL("'events max(position)', (SELECT max(position) FROM public.events)"))
    # A function takes at most 100 arguments: 40 pairs per object, the objects merged.
    objects = [sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(parts[i:i + 40]))
               for i in range(0, len(parts), 40)]
    return sql.SQL("SELECT {}").format(sql.SQL(" || ").join(objects))


def _diff(before: dict, after: dict) -> str:
    return ", ".join(f"{k}: {before.get(k)} -> {after.get(k)}" for k in sorted(set(before) | set(after))
                     if before.get(k) != after.get(k))


# -- the fuzzing session -----------------------------------------------------------------------


@dataclass
class Fuzz:
    client: httpx.Client
    owner: psycopg.Connection
    routes: list[WriteRoute]
    admin: dict
    token: str = ""
    form_login: dict = field(default_factory=dict)  # username/password of the OAuth2 form
    path_values: dict = field(default_factory=dict)
    query: Any = None

    def relogin(self) -> None:
        self.token = login(self.client, self.admin["email"], self.admin["password"])["access_token"]

    def snapshot(self) -> dict:
        return self.owner.execute(self.query).fetchone()[0]


@pytest.fixture(scope="module")
def fuzz(server, backend):
    with httpx.Client(base_url=server.url, timeout=60) as client, \
            psycopg.connect(backend.owner_dsn, autocommit=True) as owner:
        # A fresh admin of demo: a route that wrongly accepts bad input (logout, TOTP enrolment)
        # then harms this account, not the shared demo logins.
        f = Fuzz(client, owner, write_routes(server.app), new_staff(client, owner, "admin"))
        f.relogin()
        f.query = snapshot_query(owner)
        yield f


@pytest.fixture
def form_login(fuzz):
    """A fresh login for the OAuth2 password form per test: wrong passwords may lock it."""
    staff = new_staff(fuzz.client, fuzz.owner, "nurse")
    fuzz.form_login = {"username": staff["email"], "password": staff["password"]}
    return fuzz


def _new_patient(f: Fuzz) -> str:
    r = f.client.post("/api/v1/patients", json={"given_name": "Fuzz", "family_name": "Target",
                                                "birth_date": "1980-02-02", "allow_duplicate": True},
                     headers=bearer(f.token))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _new_location(f: Fuzz) -> str:
    r = f.client.post("/api/v1/locations", json={"name": "Fuzz target"}, headers=bearer(f.token))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _new_provider(f: Fuzz) -> str:
    r = f.client.post("/api/v1/providers", json={"npi": make_npi(f"{uuid.uuid4().int % 10**9:09d}"),
                                                 "given_name": "Fuzz", "family_name": "Target",
                                                 "specialty": "Cardiology", "country": "IN"}, headers=bearer(f.token))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _new_appointment(f: Fuzz) -> str:
    r = f.client.post("/api/v1/appointments", json={
        "patient_id": _new_patient(f), "provider_id": _new_provider(f), "location_id": _new_location(f),
        "type": "emergency", "starts_at": "2031-01-06T10:00:00Z"}, headers=bearer(f.token))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _new_exception(f: Fuzz) -> str:
    provider = _new_provider(f)
    r = f.client.post(f"/api/v1/providers/{provider}/availability-exceptions", json={
        "starts_at": "2031-01-01T00:00:00Z", "ends_at": "2031-01-02T00:00:00Z", "reason": "fuzz"},
        headers=bearer(f.token))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _new_encounter(f: Fuzz) -> str:
    doctor = login(f.client, "doctor@demo.carebase.local")
    r = f.client.post(f"/api/v1/patients/{_new_patient(f)}/encounters", json={"diagnoses": ["I10"]},
                      headers=bearer(doctor))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _new_medicine(f: Fuzz) -> str:
    pharmacist = login(f.client, "pharmacist@demo.carebase.local")
    r = f.client.post("/api/v1/pharmacy/medicines", json={
        "name": f"Fuzzocin {uuid.uuid4().hex[:6]}", "category": "Painkiller", "mrp_minor": 100, "price_minor": 90,
        "currency": "INR", "stock": 5, "requires_prescription": False}, headers=bearer(pharmacist))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _own_tenant(f: Fuzz) -> str:
    return f.client.get("/api/v1/tenants/current", headers=bearer(f.token)).json()["id"]


# Real ids of the caller's own tenant; a fresh record per route, since a write route that wrongly
# accepts bad input (erase!) must not damage the demo data other tests read.
def _dead_job(f: Fuzz) -> str:
    from tests.conftest import dead_job

    tenant = f.client.get("/api/v1/tenants/current", headers=bearer(f.token)).json()["id"]
    return str(dead_job(f.owner, uuid.UUID(tenant)))


PATH_FACTORIES = {"patient_id": _new_patient, "location_id": _new_location, "tenant_id": _own_tenant,
                  "provider_id": _new_provider, "appointment_id": _new_appointment, "exception_id": _new_exception,
                  "notification_id": lambda f: str(uuid.uuid4()), "encounter_id": _new_encounter,
                  "job_id": _dead_job, "device_id": lambda f: str(uuid.uuid4()),
                  "message_id": lambda f: str(uuid.uuid4()), "conversation_id": lambda f: str(uuid.uuid4()),
                  "consultation_id": lambda f: str(uuid.uuid4()),
                  "key_id": lambda f: str(uuid.uuid4()), "hl7_message_id": lambda f: str(uuid.uuid4()),
                  "prescription_id": lambda f: str(uuid.uuid4()),
                  "attachment_id": lambda f: str(uuid.uuid4()),
                  "medicine_id": _new_medicine, "order_id": lambda f: str(uuid.uuid4()),
                  "pharmacy_id": _own_tenant, "import_id": lambda f: str(uuid.uuid4()),
                  "invoice_id": lambda f: str(uuid.uuid4()), "payment_id": lambda f: str(uuid.uuid4())}


def url_of(f: Fuzz, route: WriteRoute) -> str:
    url = route.path
    for name in route.path_params:
        if (str(route), name) not in f.path_values:
            if name not in PATH_FACTORIES:
                pytest.fail(f"{route}: no real id for path parameter {name!r}; add it to PATH_FACTORIES")
            f.path_values[(str(route), name)] = PATH_FACTORIES[name](f)
        url = url.replace("{" + name + "}", f.path_values[(str(route), name)])
    return url


def base_body(f: Fuzz, route: WriteRoute) -> dict:
    """A body the route's model accepts: every required field with a valid value."""
    body = {}
    for fld in fields_of(route.model):
        if fld.required:
            body[fld.name] = f.form_login.get(fld.name) if route.is_form and fld.name in f.form_login \
                else valid_value(route.model, fld)
    try:
        route.model.model_validate(body)
    except ValidationError as exc:
        raise AssertionError(f"{route}: the fuzzer's base body is not valid: {exc}") from None
    return body


# -- cases -------------------------------------------------------------------------------------


@dataclass
class Case:
    label: str
    kind: str  # "schema": the body breaks the model; "malformed"; "injection"; "refused": any 4xx
    body: Any = None  # encoded as JSON (or as the form)
    raw: bytes | None = None  # sent as is
    content_type: str = "application/json"
    field: str | None = None  # the field at fault, which a 422 must name
    huge: bool = False


def malformed_cases(route: WriteRoute) -> list[Case]:
    cases = [Case(f"malformed JSON {raw[:12]!r}", "malformed", raw=raw) for raw in MALFORMED_JSON]
    if route.is_form:
        cases += [Case("broken multipart", "malformed", raw=b"--nope\r\nContent-Disposition: form-da",
                       content_type="multipart/form-data; boundary=elsewhere"),
                  Case("broken url-encoding", "malformed", raw=b"username=%ZZ&&=&password",
                       content_type="application/x-www-form-urlencoded")]
    return cases


def wrong_type_cases(f: Fuzz, route: WriteRoute) -> list[Case]:
    if route.is_form:
        return []  # a form carries only strings; its malformed encodings are covered above
    cases = [Case(f"body is {v!r}", "schema", body=v) for v in ([], "a string", 42)]
    for fld in fields_of(route.model):
        for value in WRONG_TYPES:
            if not accepts(route.model, fld.name, value):
                cases.append(Case(f"{fld.name}={value!r}", "schema", body={**base_body(f, route), fld.name: value},
                                  field=fld.name))
    return cases


def missing_cases(f: Fuzz, route: WriteRoute) -> list[Case]:
    cases = []
    for fld in fields_of(route.model):
        if fld.required:
            body = base_body(f, route)
            del body[fld.name]
            cases.append(Case(f"without {fld.name}", "schema", body=body, field=fld.name))
    return cases


def string_cases(f: Fuzz, route: WriteRoute, values: tuple[str, ...], kind: str) -> list[Case]:
    return [Case(f"{fld.name}={v[:30]!r}" + ("..." if len(v) > 30 else ""), kind,
                 body={**base_body(f, route), fld.name: v}, field=fld.name, huge=len(v) > 10_000)
            for fld in fields_of(route.model) if fld.takes_strings for v in values]


# -- sending and judging -----------------------------------------------------------------------


def send(f: Fuzz, route: WriteRoute, case: Case, with_token: bool) -> httpx.Response:
    headers = bearer(f.token) if with_token else {}
    if route.method == "POST":
        # Routes that move money demand one (428 without): send a fresh key so the body is judged.
        headers["Idempotency-Key"] = f"fuzz-{uuid.uuid4()}"
    url = url_of(f, route)  # creates the path's records, so call it once before a snapshot
    if case.raw is not None:
        return f.client.request(route.method, url, content=case.raw,
                                headers={**headers, "Content-Type": case.content_type})
    if route.is_form:
        return f.client.request(route.method, url, data=case.body, headers=headers)
    return f.client.request(route.method, url, json=case.body, headers=headers)


def problem_errors(r: httpx.Response) -> list[str]:
    """What is wrong with ``r`` as an RFC 9457 problem (empty when it is one)."""
    if not r.headers.get("content-type", "").startswith(PROBLEM_JSON):
        return [f"content-type {r.headers.get('content-type')!r}, not {PROBLEM_JSON}"]
    try:
        body = r.json()
    except ValueError:
        return ["the problem body is not JSON"]
    wrong = [k for k in ("type", "title", "detail") if not isinstance(body.get(k), str) or not body[k]]
    if body.get("status") != r.status_code:
        wrong.append(f"status {body.get('status')!r} != {r.status_code}")
    return [f"problem member {w} missing or wrong" for w in wrong]


def _names_field(r: httpx.Response, name: str) -> bool:
    return any(name in err.get("loc", []) for err in r.json().get("errors", []))


def _judge_success(f: Fuzz, case: Case, r: httpx.Response, before: dict, after: dict) -> list[str]:
    """An injection string the field allows: stored verbatim, never executed."""
    out = []
    if case.kind != "injection":
        out.append("a refusal was expected" + (f"; it wrote: {_diff(before, after)}" if before != after else ""))
    if r.content and not r.headers.get("content-type", "").startswith("application/json"):
        out.append(f"answered {r.headers.get('content-type')!r}")
    if r.content and isinstance(r.json(), dict) and case.field in r.json():
        if r.json()[case.field] != case.body[case.field]:
            out.append(f"{case.field} stored as {r.json()[case.field]!r}, not verbatim")
    if f.owner.execute("SELECT to_regclass('public.patients')").fetchone()[0] is None:
        out.append("THE PATIENTS TABLE IS GONE")
    shrunk = {k: (before[k], after.get(k)) for k in before
              if isinstance(before[k], int) and (after.get(k) or 0) < before[k]}
    if shrunk:
        out.append(f"rows disappeared: {shrunk}")
    return out


def judge(f: Fuzz, route: WriteRoute, case: Case, with_token: bool, r: httpx.Response,
          before: dict, after: dict) -> list[str]:
    if r.status_code >= 500:
        return [f"server error: {r.text[:200]}"]
    if 200 <= r.status_code < 300:
        return _judge_success(f, case, r, before, after)
    if not 400 <= r.status_code < 500:
        return [f"expected a 4xx, got {r.status_code}"]
    out = problem_errors(r)
    if before != after:
        out.append(f"a refused request wrote: {_diff(before, after)}")
    if case.huge and len(r.content) > 16_384:
        out.append(f"the refusal echoes the input ({len(r.content)} bytes)")
    if with_token and case.kind == "schema":
        # A valid admin token gets past authentication, so the body is what is refused: by the
        # model (422), or for a form already by the form parser's own limits (400).
        allowed = (400, 403, 422) if route.is_form else (403, 422)
        if r.status_code not in allowed:
            out.append(f"expected 422 for a body the model rejects, got {r.status_code}")
        elif r.status_code == 422 and case.field and not out and not _names_field(r, case.field):
            out.append(f"the problem does not name the field {case.field}: {r.text[:300]}")
    return out


def run(f: Fuzz, make_cases: typing.Callable[[WriteRoute], list[Case]], *, with_body: bool = True) -> list[str]:
    """Send every case of every matching route, with and without a token; list what went wrong."""
    failures, sent = [], 0
    for route in f.routes:
        if (route.model is not None) != with_body:
            continue
        url_of(f, route)  # the records behind the path exist before the first snapshot
        after = None
        for case in make_cases(route):
            for with_token in (True, False):
                # The state after a refusal is the state before the next case: nothing ran in
                # between, and a refusal leaves nothing behind to land later (the very thing
                # judged). After anything else, take a fresh look.
                before = after if after is not None else f.snapshot()
                r = send(f, route, case, with_token)
                after = f.snapshot()
                sent += 1
                for problem in judge(f, route, case, with_token, r, before, after):
                    failures.append(f"{route} {case.label} [{'admin token' if with_token else 'no token'}]"
                                    f" -> {r.status_code}: {problem}")
                if not 400 <= r.status_code < 500 or before != after:
                    after = None
                if 200 <= r.status_code < 300:
                    f.relogin()  # the write may have ended the session (logout)
    assert sent, "no case was sent: the route walker found nothing"
    return failures


def report(failures: list[str]) -> str:
    return f"{len(failures)} bad answer(s):\n" + "\n".join(failures)


# -- tests -------------------------------------------------------------------------------------


RAW_BODY_ROUTES = {"POST /api/v1/hl7/v2": "x-application/hl7-v2+er7"}


def test_the_fuzzer_sees_every_write_route_of_the_api_and_its_body(fuzz):
    """The route walker must agree with the published OpenAPI, or fuzzing would silently skip routes."""
    spec = fuzz.client.get("/api/v1/openapi.json").json()
    published = {}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path.startswith("/api/v1") and method.upper() in WRITE_METHODS:
                published[f"{method.upper()} {path}"] = op.get("requestBody", {}).get("content", {})
    walked = {str(r): r for r in fuzz.routes}
    uploads = {f"{m} {p}" for m, p in UPLOAD_ROUTES}
    assert set(walked) == set(published) - uploads
    for name in uploads:
        assert "multipart/form-data" in published[name], name
        del published[name]
    # HL7 v2 over HTTP takes the message itself (ER7 text), not JSON: tests/hl7v2 feeds it bad input.
    for name, content_type in RAW_BODY_ROUTES.items():
        assert content_type in published.pop(name), name
    for name, content in published.items():
        route = walked[name]
        assert (route.model is not None) == bool(content), name
        assert route.is_form == ("application/x-www-form-urlencoded" in content), name
    # The ones this file was written against, as a floor.
    assert {"POST /api/v1/patients", "PATCH /api/v1/patients/{patient_id}", "POST /api/v1/auth/token",
            "POST /api/v1/patients/{patient_id}/erase"} <= set(walked)


def test_every_write_route_has_a_valid_base_body_for_the_fuzzer(fuzz, form_login):
    """Each case breaks exactly one thing: the rest of its body must be valid."""
    for route in fuzz.routes:
        if route.model is not None:
            base_body(fuzz, route)  # raises when it cannot build one


def test_malformed_json_is_refused_without_a_write(fuzz, form_login):
    failures = run(fuzz, malformed_cases)
    assert not failures, report(failures)


def test_malformed_json_to_a_route_without_a_body_is_refused_without_a_write(fuzz):
    """POST /erase with a garbage JSON body must not erase anything (nor enrol TOTP, ...)."""
    failures = run(fuzz, malformed_cases, with_body=False)
    assert not failures, report(failures)


@pytest.mark.one_backend("embedded")  # the module's longest: the embedded process has more time to spare
def test_wrong_types_are_refused_without_a_write(fuzz, form_login):
    failures = run(fuzz, lambda route: wrong_type_cases(fuzz, route))
    assert not failures, report(failures)


def test_missing_required_fields_are_refused_without_a_write(fuzz, form_login):
    failures = run(fuzz, lambda route: missing_cases(fuzz, route))
    assert not failures, report(failures)


def test_unknown_fields_are_refused_without_a_write(fuzz, form_login):
    def cases(route: WriteRoute) -> list[Case]:
        if route.is_form:
            # OAuth2 (RFC 6749 section 3.2): the token endpoint MUST ignore unknown parameters; the
            # eSign callback takes the ESP's form, which carries fields we do not use.
            return []
        return [Case(f"extra {UNKNOWN_FIELD}", "schema", body={**base_body(fuzz, route), UNKNOWN_FIELD: "x"},
                     field=UNKNOWN_FIELD)]

    failures = run(fuzz, cases)
    assert not failures, report(failures)


def test_the_token_form_ignores_unknown_parameters(fuzz, form_login):
    """The other side of the rule above: an unknown form parameter does not spoil a good sign-in."""
    form = [r for r in fuzz.routes if r.is_form and r.path == "/api/v1/auth/token"]
    assert form, "the OAuth2 password form is gone"
    for route in form:
        r = send(fuzz, route, Case("extra", "schema", body={**base_body(fuzz, route), UNKNOWN_FIELD: "x"}), False)
        assert r.status_code == 200, r.text
        assert r.json()["access_token"]


def test_megabyte_strings_are_refused_without_a_write(fuzz, form_login):
    failures = run(fuzz, lambda route: string_cases(fuzz, route, (MEGABYTE,), "schema"))
    assert not failures, report(failures)


def test_the_nul_character_is_refused_without_a_write(fuzz, form_login):
    """PostgreSQL cannot store it: in any string of a JSON body it is a 422 naming the field
    (fields.Strict); in a form, a refusal (400 where it meets the database; a password that cannot
    match is simply wrong); never the 500 it was."""
    def cases(route: WriteRoute) -> list[Case]:
        return [replace(c, kind="refused") if route.is_form else c
                for c in string_cases(fuzz, route, ("before\x00after",), "schema")]

    failures = run(fuzz, cases)
    assert not failures, report(failures)


def test_the_nul_character_in_an_address_or_a_form_is_refused(fuzz):
    for url in ("/api/v1/patients?q=Ver%00ma", "/api/v1/providers?q=%00", "/api/v1/patients/a%00b"):
        r = fuzz.client.get(url, headers=bearer(fuzz.token))
        assert r.status_code == 400 and r.headers["content-type"].startswith(PROBLEM_JSON), r.text
        assert r.json()["code"] == "nul-character"
    # A form field (urlencoded or multipart) is refused where it meets the database, the same way.
    for form in ({"data": {"username": "a\x00@demo.carebase.local", "password": "x"}},
                 {"files": {"username": (None, "a\x00@demo.carebase.local"), "password": (None, "x")}}):
        r = fuzz.client.post("/api/v1/auth/token", **form)
        assert r.status_code == 400 and r.json()["code"] == "nul-character", r.text


def test_injection_strings_are_refused_or_stored_verbatim(fuzz, form_login):
    failures = run(fuzz, lambda route: string_cases(fuzz, route, INJECTIONS, "injection"))
    assert not failures, report(failures)
    # Where a field takes free text, the strings sit in the table verbatim, as data.
    stored = fuzz.owner.execute("SELECT DISTINCT given_name FROM patients WHERE given_name = ANY(%s)",
                                (list(INJECTIONS),)).fetchall()
    assert {name for (name,) in stored} == set(INJECTIONS)
    # The database is whole: the demo clinic and its patient are still there.
    assert fuzz.owner.execute("SELECT count(*) FROM patients p JOIN tenants t ON t.id = p.tenant_id "
                              "WHERE t.slug = 'demo' AND p.mrn LIKE 'DEMO%%'").fetchone()[0] >= 1
