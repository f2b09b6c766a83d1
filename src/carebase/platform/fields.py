"""Field types shared by every domain's schemas (one concept, one definition)."""

from __future__ import annotations

from typing import Annotated

import email_validator
from pydantic import BaseModel, ConfigDict, EmailStr, Field

# Self-hosted clinics run on intranet domains (clinic.local, lab.test): accept them. Unknown TLDs
# are still fine; syntax is still checked.
for _name in ("local", "test"):
    if _name in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        email_validator.SPECIAL_USE_DOMAIN_NAMES.remove(_name)

Email = Annotated[EmailStr, Field(max_length=320)]
Phone = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164, e.g. +919812345678")]


class Strict(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
