"""What every provider stand-in shares: a Starlette app on a real port (the test server's own
uvicorn-in-a-thread machinery), a log of what it received, and failures on demand.

A subclass lists its routes; each handler gets the request and its ``Received`` record and answers
as the provider does. Tests queue trouble for the next requests with ``fail_next`` (a canned
response) or ``slow_next`` (a delay before the normal answer: the provider takes the message, the
caller has already given up, as happens for real).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import ThreadServer, free_port


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    query: dict[str, str]
    body: bytes

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Request, Received], Awaitable[Response]]


class StandIn(ThreadServer):
    def __init__(self) -> None:
        # ThreadServer's __enter__/__exit__ run any app; only the app differs from the test server's.
        self.received: list[Received] = []
        self._trouble: deque[Response | float] = deque()
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route(path, self._recorded(handler), methods=[method])
                                     for method, path, handler in self.routes()])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A slow answer must not hold the test run at shutdown.
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def routes(self) -> list[tuple[str, str, Handler]]:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget what was received and any trouble still queued (between tests)."""
        with self._lock:
            self.received.clear()
            self._trouble.clear()

    def fail_next(self, n: int = 1, status: int = 500, body: Any = None, headers: dict[str, str] | None = None) -> None:
        """The next ``n`` requests get this answer (a dict or list body is sent as JSON)."""
        for _ in range(n):
            if isinstance(body, dict | list):
                resp: Response = JSONResponse(body, status_code=status, headers=headers)
            else:
                resp = Response(body or "", status_code=status, headers=headers)
            with self._lock:
                self._trouble.append(resp)

    def slow_next(self, n: int = 1, seconds: float = 1.0) -> None:
        """The next ``n`` requests wait this long, then are served normally."""
        with self._lock:
            self._trouble.extend([seconds] * n)

    def _recorded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            received = Received(request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()},
                                dict(request.query_params), await request.body())
            with self._lock:
                self.received.append(received)
                trouble = self._trouble.popleft() if self._trouble else None
            if isinstance(trouble, Response):
                return trouble
            if trouble is not None:
                await asyncio.sleep(trouble)
            return await handler(request, received)

        return endpoint
