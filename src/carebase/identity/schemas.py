"""Request and response models of the identity API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from carebase.platform.fields import Email, Phone, Strict


class RegisterIn(Strict):
    email: Email
    password: str = Field(min_length=10, max_length=128)
    display_name: str = Field(min_length=1, max_length=200)
    phone: Phone | None = None
    tenant: str | None = Field(default=None, max_length=63,
                               description="Slug of the clinic or pharmacy to join as a patient")


class MembershipOut(BaseModel):
    tenant_id: uuid.UUID
    tenant_slug: str
    tenant_name: str
    role: str


class AccountOut(BaseModel):
    id: uuid.UUID
    email: str | None
    phone: str | None
    display_name: str | None
    created_at: datetime
    memberships: list[MembershipOut] = []


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str | None = Field(description="None for an integration's client-credentials token")
    token_type: str = "bearer"
    expires_in: int
    tenant_id: uuid.UUID | None
    roles: list[str]
    scope: str | None = Field(default=None, description="The SMART scopes the token is narrowed to, if any")


class RefreshIn(Strict):
    refresh_token: str = Field(min_length=10, max_length=200)


class LogoutIn(Strict):
    refresh_token: str | None = Field(default=None, max_length=200)


class OtpRequestIn(Strict):
    phone: Phone | None = None
    email: Email | None = None
    channel: str = Field(default="sms", pattern="^(sms|whatsapp|email)$")


class OtpRequestOut(BaseModel):
    challenge_id: uuid.UUID
    expires_in: int
    detail: str


class OtpVerifyIn(Strict):
    challenge_id: uuid.UUID
    code: str = Field(pattern=r"^[0-9]{6}$")
    tenant: str | None = Field(default=None, max_length=63)
    totp_code: str | None = Field(default=None, pattern=r"^[0-9]{6}$")


class MeOut(AccountOut):
    tenant_id: uuid.UUID | None
    roles: list[str]
    permissions: list[str]
    mfa_enabled: bool


class TotpEnrollOut(BaseModel):
    secret: str
    otpauth_uri: str


class TotpVerifyIn(Strict):
    code: str = Field(pattern=r"^[0-9]{6}$")


class PasswordForgotIn(Strict):
    email: Email


class PasswordResetIn(Strict):
    token: str = Field(min_length=20, max_length=200)
    new_password: str = Field(min_length=10, max_length=128)


class Accepted(BaseModel):
    detail: str


class ApiKeyIn(Strict):
    name: str = Field(min_length=1, max_length=100, description="What the key is for, e.g. 'ADT feed from the HIS'")
    scope: str = Field(min_length=1, max_length=500, examples=["hl7:ingest", "system/*.read"])


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    scope: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    key: str | None = Field(default=None, description="The key itself: in the response that created it, never again")
