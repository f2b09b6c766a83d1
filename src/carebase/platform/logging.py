"""Structured JSON logs. No PHI: log ids, routes and outcomes, never bodies, query strings or
exception messages from the database (they quote row values)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import structlog

from carebase.platform import context


def _add_request(_, __, event_dict):
    ctx = context.get()
    if ctx.request_id:
        event_dict.setdefault("request_id", ctx.request_id)
    if ctx.tenant_id:
        event_dict.setdefault("tenant_id", str(ctx.tenant_id))
    if ctx.actor_id:
        event_dict.setdefault("account_id", str(ctx.actor_id))
    return event_dict


def configure(level: str = "INFO", log_file: Path | None = None) -> None:
    stream = open(log_file, "a", buffering=1) if log_file else sys.stdout  # noqa: SIM115 - lives as long as the process
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log prints raw paths with query strings, which may carry PHI.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("uvicorn.access").propagate = False
    # httpx logs every outgoing URL at INFO; provider URLs can carry phone numbers or names.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            # First: a line below the level is dropped before it is stamped and rendered (every
            # request logs at INFO; a server at WARNING would otherwise render it for nothing).
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_request,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str = "carebase"):
    return structlog.get_logger(name)
