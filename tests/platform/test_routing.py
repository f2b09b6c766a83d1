"""Route matching with guards (platform/routing.py): the app's domain routers are asked only about
paths they could serve, and every match comes out as it would without the guards."""

from __future__ import annotations

import re

import pytest
from starlette.routing import Match, Mount

from carebase.platform import routing

UUID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def _paths(route, prefix: str = "") -> list[str]:
    router = getattr(route, "original_router", None)
    if router is not None:
        return [p for child in router.routes for p in _paths(child, prefix + route.include_context.prefix)]
    return [prefix + route.path]


def _concrete(path: str) -> list[str]:
    """A path pattern made into request paths: a UUID (or a word) in every parameter."""
    return [re.sub(r"\{[^}]+\}", value, path) for value in (UUID, "x")]


def _scope(app, method: str, path: str) -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": "", "query_string": b"", "headers": [],
            "app": app}


def test_most_entries_are_guarded_and_none_answers_differently_from_its_unguarded_self(server):
    app = server.app
    entries = app.router.routes
    guarded = [e for e in entries if "matches" in vars(e)]
    assert len(guarded) >= 25, "the domain routers should carry guards"
    paths = {p for e in entries for pattern in _paths(e) for p in _concrete(pattern)}
    paths |= {"/", "/nothing", "/api/v1", "/api/v1/", "/api/v1/nothing", "/static/app.css", "/fhir/R4/",
              "/fhir/R4/Patient/1/_history/2", "/api/v1/me/", "/health/", "/portal", "/portal/"}
    skipped = 0
    for path in sorted(paths):
        for method in ("GET", "POST", "DELETE"):
            for entry in guarded:
                scope = _scope(app, method, path)
                guard_says = entry.matches(scope)[0]
                itself_says = type(entry).matches(entry, _scope(app, method, path))[0]
                assert guard_says == itself_says, (path, method, entry)
                skipped += guard_says == Match.NONE
    # The point of the guards: most (entry, request) pairs are settled without asking the routes.
    assert skipped > 0.8 * len(paths) * 3 * len(guarded)


def test_a_path_no_domain_serves_is_answered_without_asking_any_domain_router(server, client, monkeypatch):
    def must_not_be_asked(scope):
        raise AssertionError(f"asked about {scope['path']}")

    for entry in server.app.router.routes:
        if "matches" in vars(entry) and getattr(entry, "original_router", None) is not None:
            monkeypatch.setattr(entry.original_router, "matches", must_not_be_asked)
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/metrics").status_code == 200


def test_a_route_added_to_a_router_after_indexing_is_still_found():
    from fastapi import APIRouter, FastAPI
    from starlette.testclient import TestClient

    app, router = FastAPI(), APIRouter()
    router.add_api_route("/a/x", lambda: {"route": "a"}, methods=["GET"])
    app.include_router(router)
    routing.index_routes(app)
    assert "matches" in vars(app.router.routes[-1])  # the included router is guarded
    with TestClient(app) as client:
        assert client.get("/a/x").json() == {"route": "a"}
        assert client.get("/b/y").status_code == 404
        router.add_api_route("/b/y", lambda: {"route": "b"}, methods=["GET"])
        assert client.get("/b/y").json() == {"route": "b"}
        assert client.get("/c").status_code == 404


@pytest.mark.parametrize("path, prefixes", [
    ("/api/v1/patients/{patient_id}", {"/api/v1/patients/"}),
    ("/health", {"/health"}),
])
def test_a_route_is_known_by_its_path_up_to_the_first_parameter(path, prefixes):
    from starlette.routing import Route

    assert routing.literal_prefixes(Route(path, lambda r: None)) == prefixes
    assert routing.literal_prefixes(Mount("/static", app=lambda s, r, t: None)) == {"/static"}
