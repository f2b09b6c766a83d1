"""Identity API: /api/v1/auth/* and /api/v1/me. Thin: parse, call the service, shape."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Response, status

from carebase.identity import schemas, service
from carebase.platform.errors import NotAuthenticated
from carebase.platform.web import CurrentPrincipal, DbSession
from carebase.tenants import service as tenants_service

router = APIRouter(prefix="/api/v1", tags=["identity"])


def _tokens(pair: service.TokenPair) -> schemas.TokenOut:
    return schemas.TokenOut(access_token=pair.access_token, refresh_token=pair.refresh_token,
                            expires_in=pair.expires_in, tenant_id=pair.tenant_id, roles=pair.roles)


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
                         "and `totp_code` for staff with an authenticator. Returns access and refresh tokens.")
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
                                             totp_code=totp_code)
    return _tokens(pair)


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
