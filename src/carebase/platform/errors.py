"""One error type for every refusal, rendered as RFC 9457 problem+json (or HTML, or FHIR).

Services raise ``DomainError`` subclasses; nothing below the routes raises HTTPException.
``type`` is a stable URI per code so clients can branch on it.
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://carebase.dev/problems/"


class DomainError(Exception):
    code = "error"
    status = 400
    title = "Request refused"
    # True when the refusal's own bookkeeping (a failed-attempt counter, a revocation) must be
    # committed even though the request is refused.
    keep_writes = False

    def __init__(self, detail: str | None = None, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None, keep_writes: bool = False, **extra: Any):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if code:
            self.code = code
        if status:
            self.status = status
        self.headers = headers or {}
        self.keep_writes = keep_writes
        self.extra = extra

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class ValidationFailed(DomainError):
    code, status, title = "validation-failed", 422, "The request is not valid"


class NotAuthenticated(DomainError):
    code, status, title = "not-authenticated", 401, "Authentication required"

    def __init__(self, detail: str | None = None, *, error: str = "invalid_token", **kw: Any):
        super().__init__(detail, **kw)
        self.headers.setdefault("WWW-Authenticate", f'Bearer realm="carebase", error="{error}"')


class Malformed(DomainError):
    """400: the request cannot be read as meant (malformed JSON, a bad search value)."""
    code, status, title = "malformed", 400, "Malformed request"


def nul_character(where: str) -> Malformed:
    """The refusal of text holding the NUL character: PostgreSQL cannot store it, so it would
    otherwise fail deep in a query, as a 500."""
    return Malformed(f"{where} holds the NUL character (%00, \\u0000), which no text may.", code="nul-character")


class Forbidden(DomainError):
    code, status, title = "forbidden", 403, "Not allowed"


class NotFound(DomainError):
    code, status, title = "not-found", 404, "Not found"


class NotSupported(DomainError):
    code, status, title = "not-supported", 405, "Interaction not supported"


class Conflict(DomainError):
    code, status, title = "conflict", 409, "Conflict with the current state"


class Gone(DomainError):
    code, status, title = "deleted", 410, "It was deleted"


class PreconditionFailed(DomainError):
    code, status, title = "precondition-failed", 412, "Precondition failed"


class TooManyRequests(DomainError):
    code, status, title = "too-many-requests", 429, "Too many attempts"


class PayloadTooLarge(DomainError):
    code, status, title = "payload-too-large", 413, "Request body too large"


class ServiceUnavailable(DomainError):
    code, status, title = "unavailable", 503, "Service unavailable"
