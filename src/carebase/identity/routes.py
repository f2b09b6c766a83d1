"""Identity API: /api/v1/auth/* and /api/v1/me. Thin: parse, call the service, shape."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Response, status

from carebase.identity import schemas, service
from carebase.platform.errors import NotAuthenticated
from carebase.platform.web import CurrentPrincipal, DbSession
from carebase.tenants import service as tenants_service

router = APIRouter(prefix="/api/v1", tags=["identity"])


def _tokens(pair: service.TokenPair) -> schemas.TokenOut:
    return schemas.TokenOut(access_token=pair.access_token, refresh_token=pair.refresh_token,
                            expires_in=pair.expires_in, tenant_id=pair.tenant_id, roles=pair.roles,
                            scope=pair.scope)


async def _account_out(session, account: service.Account) -> schemas.AccountOut:
    ms = await tenants_service.memberships_of(session, account.id)
    return schemas.AccountOut(
        id=account.id, email=account.email, phone=account.phone, display_name=account.display_name,
        created_at=account.created_at,
        memberships=[schemas.MembershipOut(tenant_id=m.tenant_id, tenant_slug=m.tenant_slug,
                                           tenant_name=m.tenant_name, role=m.role) for m in ms])


@router.post("/auth/register", status_code=status.HTTP_201_CREATED, response_model=schemas.AccountOut,
             summary="Create an account (optionally joining a clinic as a patient)")
async def register(body: schemas.RegisterIn, session: DbSession) -> schemas.AccountOut:
    account = await service.register(session, email=body.email, password=body.password,
                                     display_name=body.display_name, phone=body.phone, tenant=body.tenant)
    return await _account_out(session, account)


@router.post("/auth/token", response_model=schemas.TokenOut,
             summary="Sign in with e-mail and password (OAuth2 password grant)",
             description="Form fields: username (the e-mail), password, optional `tenant` (slug or id) "
                         "and `totp_code` for staff with an authenticator. `scope` may narrow the token to SMART "
                         "scopes (`patient/*.read`, `user/*.*`, ...) for the FHIR API. Returns access and refresh "
                         "tokens.")
async def token(
    session: DbSession,
    username: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=128)],
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
    scope: Annotated[str, Form(max_length=500)] = "",
    tenant: Annotated[str | None, Form(max_length=63)] = None,
    totp_code: Annotated[str | None, Form(pattern=r"^[0-9]{6}$")] = None,
) -> schemas.TokenOut:
    if tenant is None:  # also accept the OAuth2 way: scope="tenant:<slug>"
        tenant = next((s.split(":", 1)[1] for s in scope.split() if s.startswith("tenant:")), None)
    pair = await service.login_with_password(session, email=username, password=password, tenant=tenant,
                                             totp_code=totp_code, scope=scope)
    return _tokens(pair)


@router.post("/auth/client-token", response_model=schemas.TokenOut,
             summary="An integration's access token for its API key (OAuth2 client credentials)",
             description="Form fields: grant_type=client_credentials and client_secret (the API key). The token "
                         "carries the key's scope (e.g. system/*.read for the FHIR API); there is no refresh "
                         "token: ask again when it expires. Revoking the key ends its tokens at once.")
async def client_token(
    session: DbSession,
    client_secret: Annotated[str, Form(min_length=1, max_length=200)],
    grant_type: Annotated[str, Form(pattern="^client_credentials$")],
) -> schemas.TokenOut:
    return _tokens(await service.token_for_api_key(session, client_secret))


@router.post("/auth/refresh", response_model=schemas.TokenOut, summary="Trade a refresh token for new tokens",
             description="Refresh tokens rotate: each works once. Presenting a used one ends the whole session.")
async def refresh(body: schemas.RefreshIn, session: DbSession) -> schemas.TokenOut:
    return _tokens(await service.refresh(session, body.refresh_token))


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End this session")
async def logout(principal: CurrentPrincipal, session: DbSession, body: schemas.LogoutIn | None = None) -> Response:
    await service.logout(session, principal, body.refresh_token if body else None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/auth/otp/request", status_code=status.HTTP_202_ACCEPTED, response_model=schemas.OtpRequestOut,
             summary="Send a 6-digit sign-in code by SMS, WhatsApp or e-mail")
async def otp_request(body: schemas.OtpRequestIn, session: DbSession) -> schemas.OtpRequestOut:
    challenge_id, ttl = await service.request_otp(session, phone=body.phone, email=body.email, channel=body.channel)
    return schemas.OtpRequestOut(challenge_id=challenge_id, expires_in=ttl,
                                 detail="If an account uses this address, a code is on its way.")


@router.post("/auth/otp/verify", response_model=schemas.TokenOut, summary="Sign in with a one-time code")
async def otp_verify(body: schemas.OtpVerifyIn, session: DbSession) -> schemas.TokenOut:
    return _tokens(await service.verify_otp(session, challenge_id=body.challenge_id, code=body.code,
                                            tenant=body.tenant, totp_code=body.totp_code))


@router.post("/auth/totp/enroll", response_model=schemas.TotpEnrollOut,
             summary="Start authenticator (TOTP) enrolment for a staff account")
async def totp_enroll(principal: CurrentPrincipal, session: DbSession) -> schemas.TotpEnrollOut:
    secret, uri = await service.totp_enroll(session, principal)
    return schemas.TotpEnrollOut(secret=secret, otpauth_uri=uri)


@router.post("/auth/totp/verify", status_code=status.HTTP_204_NO_CONTENT,
             summary="Confirm enrolment with a first code; sign-ins then need a code")
async def totp_verify(body: schemas.TotpVerifyIn, principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.totp_confirm(session, principal, body.code)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/auth/password/forgot", status_code=status.HTTP_202_ACCEPTED, response_model=schemas.Accepted,
             summary="E-mail a single-use password reset link")
async def password_forgot(body: schemas.PasswordForgotIn, session: DbSession) -> schemas.Accepted:
    await service.forgot_password(session, body.email)
    return schemas.Accepted(detail="If an account uses this address, a reset link is on its way.")


@router.post("/auth/password/reset", status_code=status.HTTP_204_NO_CONTENT,
             summary="Choose a new password with the e-mailed token")
async def password_reset(body: schemas.PasswordResetIn, session: DbSession) -> Response:
    await service.reset_password(session, body.token, body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=schemas.MeOut, summary="Who am I: account, organization, roles, permissions")
async def me(principal: CurrentPrincipal, session: DbSession) -> schemas.MeOut:
    account = await service.get_account(session, principal.account_id)
    if account is None:
        raise NotAuthenticated("This account no longer exists.", code="account-gone")
    base = await _account_out(session, account)
    return schemas.MeOut(**base.model_dump(), tenant_id=principal.tenant_id, roles=list(principal.roles),
                         permissions=sorted(principal.permissions),
                         mfa_enabled=await service.mfa_enabled(session, principal.account_id))


# -- API keys for integrations ---------------------------------------------------------------------


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, response_model=schemas.ApiKeyOut,
             summary="Create an API key for an integration (admins; the key is shown only in this response)",
             description="Scope: `hl7:ingest` (an HL7 v2 feed, POST /api/v1/hl7/v2 or the MLLP listener) and/or "
                         "SMART system scopes such as `system/*.read` (a FHIR backend client: trade the key for a "
                         "token at POST /api/v1/auth/client-token).")
async def create_api_key(body: schemas.ApiKeyIn, principal: CurrentPrincipal, session: DbSession) -> schemas.ApiKeyOut:
    return schemas.ApiKeyOut.model_validate(
        await service.create_api_key(session, principal, name=body.name, scope=body.scope), from_attributes=True)


@router.get("/api-keys", response_model=list[schemas.ApiKeyOut], summary="The organization's API keys (no secrets)")
async def list_api_keys(principal: CurrentPrincipal, session: DbSession) -> list[schemas.ApiKeyOut]:
    return [schemas.ApiKeyOut.model_validate(k, from_attributes=True)
            for k in await service.list_api_keys(session, principal)]


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Revoke an API key (its tokens stop working at once)")
async def revoke_api_key(key_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.revoke_api_key(session, principal, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
