"""The FastAPI application: mounts each domain's routes, the platform endpoints and the portal."""

from __future__ import annotations

import importlib
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from carebase import domains
from carebase.identity import service as identity_service
from carebase.platform import failpoints, heap, realtime, routing
from carebase.platform import logging as cblogging
from carebase.platform.db import Database, libpq_url
from carebase.platform.errors import ServiceUnavailable
from carebase.platform.migrations import head_revision
from carebase.platform.web import (
    RequestMiddleware,
    add_session_validator,
    install_error_handlers,
    problem_response,
    reject_unexpected_body,
)
from carebase.settings import Settings, get_settings, set_settings

WEB = Path(__file__).parent / "web"

API_DESCRIPTION = """
Carebase JSON API. Errors are RFC 9457 `application/problem+json` with a stable `type` and `code`.
Authenticate with `POST /api/v1/auth/token` and send `Authorization: Bearer <access_token>`.
Send `Idempotency-Key` on POSTs you may retry: the same key and body return the first response
without a second write; the same key with another body is refused with 422.
"""


def create_app(settings: Settings | None = None, database: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    set_settings(settings)
    cblogging.configure(settings.log_level, settings.log_file)
    failpoints.configure(settings.failpoints)
    state: dict = {"db": database}

    def db() -> Database:
        if state["db"] is None:
            state["db"] = Database(settings)
        return state["db"]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.hub = realtime.Hub(libpq_url(db().urls.app))
        heap.settle()
        yield
        await app.state.hub.stop()
        if database is None and state["db"] is not None:
            await state["db"].dispose()

    app = FastAPI(title="Carebase", version="0.1.0", description=API_DESCRIPTION, lifespan=lifespan,
                  openapi_url="/api/v1/openapi.json", docs_url="/api/v1/docs", redoc_url=None,
                  dependencies=[Depends(reject_unexpected_body)])
    app.state.db = db
    install_error_handlers(app)
    app.add_middleware(RequestMiddleware, db_getter=db, max_body=settings.max_body_bytes)
    add_session_validator(identity_service.check_session_active)

    for name in domains.ROUTERS:
        app.include_router(importlib.import_module(name).router)

    @app.get("/health", tags=["platform"], summary="The process is up")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", tags=["platform"], summary="Database reachable and migrated; 503 otherwise")
    async def ready() -> Response:
        try:
            async with db().app_engine.connect() as conn:
                rev = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        except Exception as exc:  # any failure to reach the database means not ready
            return problem_response(ServiceUnavailable(
                f"The database cannot be reached ({type(exc).__name__}).", code="database-unavailable"))
        if rev != head_revision():
            return problem_response(ServiceUnavailable(
                f"The database is at migration {rev}, the code expects {head_revision()}: run 'carebase migrate'.",
                code="migrations-pending"))
        return JSONResponse({"status": "ready", "database": "ok", "revision": rev})

    @app.get("/metrics", tags=["platform"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    templates = Jinja2Templates(directory=WEB / "templates")
    static = WEB / "static"
    static.mkdir(parents=True, exist_ok=True)
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request):
        return templates.TemplateResponse(request, "index.html", {"demo": settings.demo_password is not None})

    routing.index_routes(app)
    return app
