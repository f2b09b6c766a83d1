"""The HTTP edge shared by every domain: one transaction per request, idempotency, errors,
request ids, logs and metrics.

``RequestMiddleware`` owns the request's unit of work. The session opens lazily (the first
``DbSession`` dependency); the response is held until the transaction has committed, so a client
never sees success for a write that is not durable, and any 4xx/5xx rolls everything back (bad
input never half-writes). ``Idempotency-Key`` on a POST is claimed in that same transaction, so
the stored response and the write it describes commit or vanish together.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import psycopg
from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.exceptions import HTTPException as FastAPIHTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter, Histogram
from sqlalchemy import Column, DateTime, Integer, LargeBinary, String, Table, func, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, HTTPConnection

from carebase.platform import context, crypto, tokens
from carebase.platform.authz import Principal
from carebase.platform.db import Database, metadata, set_context
from carebase.platform.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotAuthenticated,
    PayloadTooLarge,
    ValidationFailed,
    nul_character,
)
from carebase.platform.logging import get_logger

log = get_logger("carebase.http")

PROBLEM_JSON = "application/problem+json"
_T = TypeVar("_T")

REQUESTS = Counter("carebase_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("carebase_http_request_seconds", "HTTP request latency", ["method", "route"])

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("method", String(8), nullable=False),
    Column("path", String(500), nullable=False),
    Column("body_hash", LargeBinary, nullable=False),
    Column("status", Integer, nullable=True),
    Column("headers", JSONB, nullable=True),
    Column("body", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


ErrorRenderer = Callable[[DomainError], Response]
# Path prefix -> how refusals under it are written (the FHIR API answers with OperationOutcome).
_error_renderers: dict[str, ErrorRenderer] = {}
# Path prefixes whose routes enforce SMART scopes themselves; a scoped token works only there.
_scoped_prefixes: list[str] = []


def add_error_renderer(prefix: str, renderer: ErrorRenderer) -> None:
    _error_renderers[prefix] = renderer


def accept_scoped_tokens(prefix: str) -> None:
    _scoped_prefixes.append(prefix)


# Paths that take bodies larger than the app-wide limit: path -> their own limit in bytes.
_large_bodies: dict[str, int] = {}


def allow_large_body(path: str, limit: int) -> None:
    """Let one path take bodies up to ``limit`` bytes (a FHIR transaction carrying a patient's
    whole history runs to megabytes); every other path keeps the app-wide limit."""
    _large_bodies[path] = limit


def takes_raw_body(endpoint: _T) -> _T:
    """Mark a route that reads its body itself (the FHIR API parses resources with fhir.resources),
    so the app-wide check for unexpected bodies leaves it alone."""
    endpoint.takes_raw_body = True
    return endpoint


def problem_response(err: DomainError, instance: str | None = None) -> Response:
    for prefix, render in _error_renderers.items():
        if instance and instance.startswith(prefix):
            return render(err)
    body = err.problem(instance)
    body["request_id"] = context.get().request_id
    return JSONResponse(body, status_code=err.status, headers=err.headers, media_type=PROBLEM_JSON)


class RequestScope:
    """What one request holds: its lazily opened transaction and who is calling."""

    def __init__(self, db: Database):
        self.db = db
        self.session: AsyncSession | None = None
        self._tx = None
        self.principal: Principal | None = None
        self.idem_scope = "anonymous"
        # The verified token, when the Idempotency-Key claim already had to decode it.
        self.decoded: Principal | None = None
        # Set when a refusal's own bookkeeping must persist (failed-login counters, token-reuse
        # revocation); everything else in a refused request rolls back.
        self.keep_writes = False

    async def open(self) -> AsyncSession:
        if self.session is None:
            self.session = self.db.app_sessions()
            self._tx = await self.session.begin()
        return self.session

    async def release(self) -> None:
        """Commit now and let go of the connection: for long-lived responses (SSE), which must
        neither hold a transaction open nor be held back until one ends."""
        await self.finish(commit=True)

    async def finish(self, commit: bool) -> None:
        """End the transaction once; later calls do nothing (a failed commit is not retried)."""
        if self.session is None:
            return
        session, tx = self.session, self._tx
        self.session = self._tx = None
        try:
            if commit:
                await tx.commit()
            else:
                await tx.rollback()
        finally:
            await session.close()


def _header(scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v.decode("latin-1")
    return None


ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE = "carebase_access", "carebase_refresh", "carebase_csrf"


def cookie(scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if raw:
        for part in raw.split(";"):
            k, _, v = part.strip().partition("=")
            if k == name:
                return v
    return None


def _credential(scope) -> tuple[str | None, bool]:
    """The access token and whether it came from the portal's cookie (which needs CSRF checks)."""
    auth = _header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip(), False
    token = cookie(scope, ACCESS_COOKIE)
    return token, token is not None


def _bearer(scope) -> str | None:
    return _credential(scope)[0]


class RequestMiddleware:
    def __init__(self, app, db_getter: Callable[[], Database], max_body: int):
        self.app = app
        self.db_getter = db_getter
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = _header(scope, b"x-request-id")
        rid = rid if rid and len(rid) <= 64 and rid.replace("-", "").isalnum() else uuid.uuid4().hex
        client = scope.get("client")
        token = context.set(context.RequestContext(request_id=rid, ip=client[0] if client else None))
        started = time.perf_counter()
        status_holder = {"status": 500}
        try:
            await self._handle(scope, receive, send, rid, status_holder)
        finally:
            route = scope.get("route")
            route_name = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            REQUESTS.labels(scope["method"], route_name, str(status_holder["status"])).inc()
            LATENCY.labels(scope["method"], route_name).observe(elapsed)
            log.info("request", method=scope["method"], route=route_name, status=status_holder["status"],
                     ms=round(elapsed * 1000, 1))
            context.reset(token)

    async def _handle(self, scope, receive, send, rid: str, status_holder: dict) -> None:
        rscope = RequestScope(self.db_getter())
        scope.setdefault("state", {})["carebase"] = rscope
        extra_headers = [(b"x-request-id", rid.encode())]

        async def send_plain(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                message = {**message, "headers": list(message.get("headers", [])) + extra_headers}
            await send(message)

        if "\x00" in scope["path"] or b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]:
            # PostgreSQL cannot store the NUL character, so no search or id may hold it either.
            return await self._send_problem(send_plain, scope["path"], nul_character("The address"))
        max_body = _large_bodies.get(scope["path"], self.max_body)
        length = _header(scope, b"content-length")
        if length and length.isdigit() and int(length) > max_body:
            return await self._send_problem(send_plain, scope["path"], PayloadTooLarge(
                f"The request body is larger than {max_body} bytes."))
        receive = _limited(receive, max_body)  # chunked bodies have no Content-Length to check

        idem = _header(scope, b"idempotency-key") if scope["method"] == "POST" else None
        if idem is not None:
            body = await _read_body(receive, max_body)
            if body is None:
                return await self._send_problem(send_plain, scope["path"], PayloadTooLarge(
                    f"The request body is larger than {max_body} bytes."))
            if not idem or len(idem) > 255:
                return await self._send_problem(send_plain, scope["path"], ValidationFailed(
                    "Idempotency-Key must be 1 to 255 characters.", code="bad-idempotency-key"))
            receive = _replay(body)
            replay = await self._claim(rscope, scope, idem, body)
            if replay is not None:
                await rscope.finish(commit=False)
                if isinstance(replay, DomainError):
                    return await self._send_problem(send_plain, scope["path"], replay)
                status, headers, content = replay
                await send_plain({"type": "http.response.start", "status": status,
                                  "headers": [(k.encode(), v.encode()) for k, v in headers] +
                                             [(b"idempotent-replayed", b"true")]})
                await send_plain({"type": "http.response.body", "body": content})
                return

        start_msg: dict[str, Any] | None = None
        chunks: list[bytes] = []
        buffering = False

        async def send_buffered(message):
            nonlocal start_msg, buffering
            if message["type"] == "http.response.start":
                # Hold the response only if this request opened a transaction.
                if rscope.session is not None:
                    buffering, start_msg = True, message
                    return
                return await send_plain(message)
            if buffering and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                status = start_msg["status"]
                ok = status < 400
                if ok and idem is not None:
                    await self._store(rscope, idem, start_msg, b"".join(chunks))
                elif idem is not None and rscope.keep_writes:
                    # A refusal whose bookkeeping is kept (a failed sign-in) must not keep the key
                    # too: refusals are not replayed, so the same key may be retried.
                    await rscope.session.execute(idempotency_keys.delete().where(
                        idempotency_keys.c.scope == rscope.idem_scope, idempotency_keys.c.key == idem))
                await rscope.finish(commit=ok or rscope.keep_writes)
                await send_plain(start_msg)
                await send_plain({"type": "http.response.body", "body": b"".join(chunks)})
                return
            await send_plain(message)

        try:
            await self.app(scope, receive, send_buffered)
        except Exception as exc:
            await rscope.finish(commit=False)
            if status_holder.get("started"):
                raise
            # Rendered here rather than by Starlette's outermost handler, so the 500 still carries
            # the request id a person can quote to the operator.
            return await self._send_problem(send_plain, scope["path"], unexpected_error(exc))
        except BaseException:
            await rscope.finish(commit=False)
            raise
        if not buffering and rscope.session is not None:
            # The app finished without a response body (or streamed before opening a session).
            await rscope.finish(commit=False)

    async def _send_problem(self, send, path: str, err: DomainError) -> None:
        resp = problem_response(err, path)
        await send({"type": "http.response.start", "status": resp.status_code, "headers": resp.raw_headers})
        await send({"type": "http.response.body", "body": resp.body})

    async def _claim(self, rscope: RequestScope, scope, key: str, body: bytes):
        """Claim the key in this request's transaction, or return what to replay instead."""
        who = "anonymous"
        bearer = _bearer(scope)
        if bearer:
            try:
                rscope.decoded = tokens.decode_access_token(bearer)
                who = str(rscope.decoded.account_id)
            except DomainError:
                pass  # the route itself will answer 401
        body_hash = hashlib.sha256(body).digest()
        session = await rscope.open()
        claimed = await session.execute(
            insert(idempotency_keys)
            .values(scope=who, key=key, method=scope["method"], path=scope["path"], body_hash=body_hash)
            .on_conflict_do_nothing()
            .returning(idempotency_keys.c.key)
        )
        if claimed.first() is not None:
            rscope.idem_scope = who
            return None
        row = (await session.execute(select(idempotency_keys).where(
            idempotency_keys.c.scope == who, idempotency_keys.c.key == key))).first()
        if row.body_hash != body_hash or row.path != scope["path"]:
            return ValidationFailed("This Idempotency-Key was already used with a different request. "
                                    "Use a new key for a new request.", code="idempotency-key-reused")
        return row.status, row.headers or [], _open_response(row.body, who, key)

    async def _store(self, rscope: RequestScope, key: str, start_msg, content: bytes) -> None:
        keep = {"content-type", "location", "etag"}
        headers = [(k.decode(), v.decode()) for k, v in start_msg.get("headers", []) if k.decode().lower() in keep]
        await rscope.session.execute(
            idempotency_keys.update()
            .where(idempotency_keys.c.scope == rscope.idem_scope, idempotency_keys.c.key == key)
            .values(status=start_msg["status"], headers=headers, body=_seal_response(content, rscope.idem_scope, key))
        )


# Stored responses can hold tokens (sign-in) or PHI: they are kept sealed, never in clear.
def _seal_response(content: bytes, who: str, key: str) -> bytes:
    ring = crypto.keyring()
    return crypto.seal(ring.derive("idempotent-responses"), content, f"{who}:{key}".encode()).encode()


def _open_response(sealed: bytes | None, who: str, key: str) -> bytes:
    if not sealed:
        return b""
    ring = crypto.keyring()
    return crypto.open_sealed(ring.derive("idempotent-responses"), sealed.decode(), f"{who}:{key}".encode())


async def _read_body(receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not msg.get("more_body"):
            break
    return b"".join(chunks)


def _limited(receive, limit: int):
    seen = 0

    async def receive_limited():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # FastAPI re-raises HTTPException from body reading as is (anything else becomes 400).
                raise FastAPIHTTPException(413, f"The request body is larger than {limit} bytes.")
        return message

    return receive_limited


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _sanitize_errors(errors) -> list[dict[str, Any]]:
    # Never echo the submitted values back (they may be PHI, or a megabyte of junk).
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        out.append({"loc": loc, "type": e.get("type"), "msg": e.get("msg")})
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError):
        if exc.keep_writes:
            request_scope(request).keep_writes = True
        return problem_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = _sanitize_errors(exc.errors())
        first = errors[0] if errors else {}
        where = ".".join(p for p in first.get("loc", []) if p != "body") or "request"
        err = ValidationFailed(f"{where}: {first.get('msg', 'invalid')}", errors=errors)
        return problem_response(err, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        titles = {404: ("not-found", "Not found"), 405: ("method-not-allowed", "Method not allowed"),
                  413: ("payload-too-large", "Request body too large")}
        code, title = titles.get(exc.status_code, ("http-error", "Request refused"))
        err = DomainError(str(exc.detail) if exc.detail else title, code=code, status=exc.status_code,
                          headers=dict(exc.headers or {}))
        err.title = title
        return problem_response(err, request.url.path)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        return problem_response(unexpected_error(exc), request.url.path)


def unexpected_error(exc: Exception) -> DomainError:
    if isinstance(exc, ClientDisconnect):
        # The client went away while sending its body: nothing was applied, nobody is there to answer.
        log.info("client_disconnected")
        err = DomainError("The client disconnected before its request arrived.", code="client-disconnected",
                          status=499)
        err.title = "Client disconnected"
        return err
    # Through SQLAlchemy the driver's error is wrapped; from the event store's pipeline it is raw.
    driver = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(driver, psycopg.errors.UniqueViolation):
        # Two requests raced to create the same thing; the loser gets a retryable 409, not a 500.
        log.info("unique_violation", constraint=getattr(getattr(driver, "diag", None), "constraint_name", None))
        return Conflict("The same change was just made by another request. Reload and check before retrying.",
                        code="concurrent-change")
    # PostgreSQL cannot store the NUL character. Where a door names the field it is refused there
    # (the address above, fields.Strict, the FHIR parser); anywhere else it reaches the driver (a
    # form field, a provider's webhook) it is the same refusal, not a failure: nothing was applied.
    if isinstance(driver, psycopg.errors.UntranslatableCharacter) or (
            isinstance(driver, psycopg.DataError) and "NUL" in str(driver)):
        return nul_character("Some text in the request")
    # Type and place only: database messages quote row values, which can be PHI.
    tb = exc.__traceback__
    while tb and tb.tb_next:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
    log.error("unhandled_error", error_type=type(exc).__name__, where=where)
    err = DomainError("Something went wrong on our side. The request was not applied; try again, and quote "
                      "the request id if it keeps happening.", code="internal-error", status=500)
    err.title = "Internal error"
    return err


async def reject_unexpected_body(request: HTTPConnection) -> None:
    """A POST/PUT/PATCH to a route that takes no body must not carry one (malformed or not):
    refusing it beats silently acting on a request the client did not mean to send. (Typed as a
    connection: app-wide dependencies run for WebSockets too, which have no body.)"""
    if not isinstance(request, Request) or request.method not in ("POST", "PUT", "PATCH"):
        return
    route = request.scope.get("route")
    if route is None or getattr(route, "body_field", None) is not None:
        return
    if getattr(getattr(route, "endpoint", None), "takes_raw_body", False):
        return
    body = (await request.body()).strip()
    if body and body not in (b"{}", b"null"):
        raise ValidationFailed("This endpoint takes no request body; send none.", code="unexpected-body")


# -- optimistic concurrency over HTTP -------------------------------------------------------------


def weak_etag(version: int) -> str:
    """A record's ETag: its stream version (weak, since the representation may vary)."""
    return f'W/"{version}"'


def if_match_version(value: str | None) -> int | None:
    """The version an If-Match header names (None: no header, so the caller did not pin one)."""
    if value is None:
        return None
    try:
        return int(value.removeprefix("W/").strip('"'))
    except ValueError:
        raise ValidationFailed("If-Match must be the ETag you read, like W/\"3\".", code="bad-if-match") from None


# -- dependencies ------------------------------------------------------------------------------

SessionValidator = Callable[[AsyncSession, Principal], Awaitable[None]]
_session_validators: list[SessionValidator] = []


def add_session_validator(fn: SessionValidator) -> None:
    """Identity registers the check that the token's session has not been revoked (logout)."""
    _session_validators.append(fn)


def request_scope(request: Request) -> RequestScope:
    return request.scope["state"]["carebase"]


async def refusable(session: AsyncSession, command: Callable[[], Awaitable[_T]]) -> _T | DomainError:
    """Run a portal form's command so that a refusal comes back as a value the page can show.

    A page answers a refused form with 200 and the message (htmx swaps only 2xx), so the
    middleware's "4xx rolls back" does not apply: the command runs in a savepoint instead, and a
    refusal undoes its writes (unless the error says they must stay, as the API does) while the
    rest of the request's transaction (reads, their audit) goes on and commits."""
    savepoint = await session.begin_nested()
    try:
        result = await command()
    except DomainError as err:
        if err.keep_writes:
            await savepoint.commit()
        else:
            await savepoint.rollback()  # the event store forgets the heads appended in it
        return err
    await savepoint.commit()
    return result


async def _principal(request: Request) -> Principal:
    rscope = request_scope(request)
    if rscope.principal is not None:
        return rscope.principal
    token, from_cookie = _credential(request.scope)
    if not token:
        raise NotAuthenticated("Sign in first: send 'Authorization: Bearer <access token>'.",
                               code="not-authenticated", error="invalid_request")
    if from_cookie and request.method not in ("GET", "HEAD", "OPTIONS"):
        # Double-submit: a cross-site form can send our cookies but cannot read this one.
        expected = cookie(request.scope, CSRF_COOKIE)
        sent = request.headers.get("x-csrf-token")
        if not expected or not sent or not hmac.compare_digest(expected, sent):
            raise Forbidden("Missing or wrong CSRF token: reload the page and try again.", code="csrf-failed")
    principal = rscope.decoded or tokens.decode_access_token(token)
    if principal.scope is not None and not any(request.url.path.startswith(p) for p in _scoped_prefixes):
        raise Forbidden("This token is narrowed to SMART scopes and works only on the FHIR API (/fhir/R4); "
                        "sign in without a scope for the JSON API.", code="scoped-token")
    session = await rscope.open()
    await set_context(session, principal.tenant_id, principal.account_id)
    for check in _session_validators:
        await check(session, principal)
    rscope.principal = principal
    context.update(actor_id=principal.account_id, tenant_id=principal.tenant_id)
    return principal


async def websocket_principal(websocket: WebSocket, db: Database) -> Principal:
    """Who opened a WebSocket: the portal's cookie, or ``?access_token=`` (browsers cannot set an
    Authorization header on one). With the cookie, the page must come from this very site: a
    WebSocket is not bound by CORS, so a foreign page could otherwise ride the cookie."""
    token, from_cookie = _credential(websocket.scope)
    if not token:
        token, from_cookie = websocket.query_params.get("access_token"), False
    if not token:
        raise NotAuthenticated("Sign in first (the portal's cookie, or ?access_token=).", code="not-authenticated")
    if from_cookie:
        origin = (websocket.headers.get("origin") or "").split("://", 1)[-1]
        if origin != websocket.headers.get("host"):
            raise Forbidden("This WebSocket only opens from Carebase's own pages.", code="bad-origin")
    principal = tokens.decode_access_token(token)
    if principal.scope is not None:
        raise Forbidden("This token is narrowed to SMART scopes and works only on the FHIR API.", code="scoped-token")
    async with db.transaction(principal.tenant_id, principal.account_id) as session:
        for check in _session_validators:
            await check(session, principal)
    return principal


async def _soft_principal(request: Request) -> Principal | None:
    """For pages: the caller if their token is valid, else None (the page redirects or refreshes)."""
    try:
        return await _principal(request)
    except NotAuthenticated:
        return None


async def adopt_principal(request: Request, principal: Principal) -> None:
    """Act as a principal obtained mid-request (the portal refreshing an expired cookie)."""
    rscope = request_scope(request)
    session = await rscope.open()
    await set_context(session, principal.tenant_id, principal.account_id)
    rscope.principal = principal
    context.update(actor_id=principal.account_id, tenant_id=principal.tenant_id)


async def _optional_principal(request: Request) -> Principal | None:
    if _bearer(request.scope) is None:
        return None
    return await _principal(request)


async def db_session(request: Request) -> AsyncSession:
    """The request's session (what ``DbSession`` resolves to; plain Starlette routes call it)."""
    rscope = request_scope(request)
    if rscope.session is None:
        session = await rscope.open()
        await set_context(session, None, None)
    return rscope.session


CurrentPrincipal = Annotated[Principal, Depends(_principal)]
OptionalPrincipal = Annotated[Principal | None, Depends(_optional_principal)]
PagePrincipal = Annotated[Principal | None, Depends(_soft_principal)]
DbSession = Annotated[AsyncSession, Depends(db_session)]


def _idempotency_key_required(request: Request) -> str:
    key = request.headers.get("idempotency-key")
    if not key:
        raise ValidationFailed("This request moves money: send an Idempotency-Key header (any unique string, such "
                               "as a UUID) so that a retry cannot pay or refund twice.",
                               code="idempotency-key-required", status=428)
    return key


# For routes that move money: the key is mandatory there (RequestMiddleware does the rest).
IdempotencyKey = Annotated[str, Depends(_idempotency_key_required)]


def pdf_response(filename: str, body: bytes) -> Response:
    """A PDF download (a record, a prescription, an invoice, a receipt): never cached, since they
    hold PHI or money."""
    return Response(body, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})
