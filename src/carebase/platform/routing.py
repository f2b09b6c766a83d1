"""Route matching that does not walk every route of every domain on every request.

FastAPI (0.165) keeps each included router as one entry of the app's route list and matches a
request by asking each of them in turn, and each asks every one of its routes (a regex and some
bookkeeping apiece). With ~30 domain routers and ~550 routes, a path served near the end of the
list (``/health``, the portal's pages) spent about a millisecond just being matched — more than
the whole of a FastAPI hello-world request.

``index_routes`` gives each top-level entry a guard: the literal beginnings of the paths it can
serve (a route's path up to its first ``{parameter}``). A request whose path starts with none of
them cannot match that entry, fully or partially, so the entry answers "no match" without
asking its routes. Order and semantics are unchanged: the entries that could match are still
asked in their original order, and they decide exactly as before. An entry whose routes we cannot
read (a kind of route this does not know) is left unguarded.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute

_NO_MATCH = (Match.NONE, {})


def literal_prefixes(route: BaseRoute, prefix: str = "") -> set[str] | None:
    """The literal beginnings of every path ``route`` can match; None if that cannot be told."""
    router = getattr(route, "original_router", None)  # an included router (FastAPI's _IncludedRouter)
    if router is not None:
        context = getattr(route, "include_context", None)
        inner = prefix + (getattr(context, "prefix", "") or "")
        if getattr(router, "_low_priority_routes", None):
            return None  # catch-all front-end routes: matched outside the list below
        found: set[str] = set()
        for child in router.routes:
            child_prefixes = literal_prefixes(child, inner)
            if child_prefixes is None:
                return None
            found |= child_prefixes
        return found
    if isinstance(route, (Route, WebSocketRoute, Mount)):  # APIRoute and APIWebSocketRoute included
        return {prefix + route.path.split("{", 1)[0]}
    return None


def _guard_for(route: BaseRoute) -> tuple[str, ...] | None:
    """The sorted prefixes to guard ``route`` by; None where a guard cannot be told or would only
    cost (a path that may match anything)."""
    prefixes = literal_prefixes(route)
    if not prefixes or "" in prefixes or "/" in prefixes:
        return None
    return tuple(sorted(prefixes))


def _guarded(route: BaseRoute, prefixes: tuple[str, ...]) -> Callable:
    matches = route.matches
    router = getattr(route, "original_router", None)
    known = [prefixes, len(router.routes) if router is not None else 0]

    def guarded_matches(scope):
        if router is not None and len(router.routes) != known[1]:
            # A route was added to the router after indexing (tests do): read its paths again.
            fresh = _guard_for(route)
            if fresh is None:
                return matches(scope)
            known[:] = [fresh, len(router.routes)]
        if not get_route_path(scope).startswith(known[0]):
            return _NO_MATCH
        return matches(scope)

    return guarded_matches


def index_routes(app: FastAPI) -> int:
    """Guard each top-level route entry of ``app`` by its paths' literal beginnings (call it once
    every route is added). Returns how many entries got a guard."""
    guarded = 0
    for route in app.router.routes:
        prefixes = _guard_for(route)
        if prefixes is not None:
            route.matches = _guarded(route, prefixes)
            guarded += 1
    return guarded
