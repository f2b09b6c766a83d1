"""Per-request context (request id, client address, acting account) carried in a contextvar.

It feeds log lines and event metadata without threading arguments through every call.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RequestContext:
    request_id: str = ""
    ip: str | None = None
    actor_id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None
    on_behalf_of: uuid.UUID | None = None


_ctx: ContextVar[RequestContext] = ContextVar("carebase_request", default=RequestContext())


def get() -> RequestContext:
    return _ctx.get()


def set(ctx: RequestContext):  # noqa: A001 - mirrors ContextVar.set
    return _ctx.set(ctx)


def reset(token) -> None:
    _ctx.reset(token)


def update(**changes) -> None:
    _ctx.set(replace(_ctx.get(), **changes))
