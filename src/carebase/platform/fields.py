"""Field types shared by every domain's schemas (one concept, one definition)."""

from __future__ import annotations

from typing import Annotated, Any

import email_validator
from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

# Self-hosted clinics run on intranet domains (clinic.local, lab.test): accept them. Unknown TLDs
# are still fine; syntax is still checked.
for _name in ("local", "test"):
    if _name in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        email_validator.SPECIAL_USE_DOMAIN_NAMES.remove(_name)

Email = Annotated[EmailStr, Field(max_length=320)]
Phone = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164, e.g. +919812345678")]


class Strict(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped; no text may hold the NUL
    character (PostgreSQL cannot store it, and no person types it)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if has_nul(value):
            raise ValueError("cannot contain the NUL character (\\u0000)")
        return value


def has_nul(value: Any) -> bool:
    """Whether a string, or any string inside lists and objects, holds the NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, (list, tuple)):
        return any(has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    return False
