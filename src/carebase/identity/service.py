"""Identity: accounts, passwords, tokens, one-time codes, TOTP and password resets.

Every business rule of signing in lives here; routes only parse and shape. Failed attempts,
lockouts and refresh-token-reuse revocations are recorded even though the request is refused
(``keep_writes``), otherwise an attacker could simply retry forever.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.identity import events as ev
from carebase.identity.models import (
    accounts,
    api_keys,
    auth_sessions,
    credentials,
    otp_challenges,
    password_resets,
    refresh_tokens,
)
from carebase.platform import crypto, delivery, eventstore, ratelimit, tokens
from carebase.platform.authz import Principal, parse_smart_scopes, require, require_tenant
from carebase.platform.db import first_row, set_context
from carebase.platform.errors import Conflict, Forbidden, NotAuthenticated, NotFound, TooManyRequests, ValidationFailed
from carebase.platform.ids import new_id
from carebase.platform.logging import get_logger
from carebase.settings import get_settings, public_base_url

log = get_logger("carebase.identity")
_hasher = PasswordHasher()
# Verified against when the e-mail is unknown, so a miss costs as long as a hit.
_DUMMY_HASH = _hasher.hash("carebase-timing-equaliser")


@dataclass
class Account:
    id: uuid.UUID
    email: str | None
    phone: str | None
    display_name: str | None
    is_superadmin: bool
    created_at: datetime
    version: int


@dataclass
class TokenPair:
    access_token: str
    refresh_token: str | None
    expires_in: int
    tenant_id: uuid.UUID | None
    roles: list[str]
    scope: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def _verify_password(stored: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


def _check_password_policy(password: str, email: str | None) -> None:
    if email and password.lower() == email.lower():
        raise ValidationFailed("The password must not be your e-mail address.", code="weak-password")
    if len(set(password)) < 4:
        raise ValidationFailed("The password is too simple: use at least 4 different characters.",
                               code="weak-password")


def _row_to_account(row) -> Account:
    return Account(row.id, row.email, row.phone, row.display_name, row.is_superadmin, row.created_at, row.version)


async def _throttle(session: AsyncSession, what: str) -> None:
    await ratelimit.hit(session, f"auth.{what}", get_settings().auth_rate_limit_per_minute)


# -- accounts ----------------------------------------------------------------------------------


# Plain SQL: every GET /api/v1/me reads these (see db.first_row).
_ACCOUNT_SQL = (f"SELECT id, email, phone, display_name, is_superadmin, created_at, version FROM {accounts.name} "
                "WHERE id = %s")
_MFA_SQL = f"SELECT totp_enabled_at FROM {credentials.name} WHERE account_id = %s"


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> Account | None:
    row = await first_row(session, _ACCOUNT_SQL, (account_id,))
    return Account(*row) if row else None


async def find_account_by_email(session: AsyncSession, email: str) -> Account | None:
    row = (await session.execute(select(accounts).where(accounts.c.email == email.lower()))).first()
    return _row_to_account(row) if row else None


async def create_account(
    session: AsyncSession, *, email: str, password: str | None, display_name: str,
    phone: str | None = None, is_superadmin: bool = False,
) -> Account:
    email = email.lower()
    if password is not None:
        _check_password_policy(password, email)
    if await find_account_by_email(session, email):
        raise Conflict("An account with this e-mail address already exists. Sign in, or reset the password.",
                       code="email-taken")
    if phone and (await session.execute(select(accounts.c.id).where(accounts.c.phone == phone))).first():
        raise Conflict("An account with this phone number already exists.", code="phone-taken")
    account_id = new_id()
    await eventstore.append(
        session, **ev.account_stream(account_id), expected_version=0,
        new_events=[eventstore.NewEvent(ev.REGISTERED, {"is_superadmin": is_superadmin},
                                        phi={"email": email, "phone": phone, "display_name": display_name})],
    )
    await session.execute(insert(credentials).values(
        account_id=account_id, password_hash=await hash_password(password) if password else None,
        password_changed_at=_now() if password else None))
    account = await get_account(session, account_id)
    assert account is not None
    return account


async def ensure_account(session: AsyncSession, *, email: str, display_name: str) -> tuple[Account, bool]:
    """The account with this e-mail, created without a password if new (an invitation)."""
    existing = await find_account_by_email(session, email)
    if existing:
        return existing, False
    return await create_account(session, email=email, password=None, display_name=display_name), True


async def register(session: AsyncSession, *, email: str, password: str, display_name: str,
                   phone: str | None, tenant: str | None) -> Account:
    from carebase.tenants import service as tenants_service

    await _throttle(session, "register")
    target = None
    if tenant:
        target = await tenants_service.get_tenant_by_ref(session, tenant)
        if target is None or target.kind == "platform":
            raise NotFound(f"No clinic or pharmacy called '{tenant}' accepts registrations.", code="tenant-not-found")
    account = await create_account(session, email=email, password=password, display_name=display_name, phone=phone)
    if target is not None:
        await tenants_service.join_as_patient(session, target, account.id)
    return account


# -- sessions and tokens -----------------------------------------------------------------------


async def _roles_in(session: AsyncSession, account_id: uuid.UUID, tenant_id: uuid.UUID | None) -> list[str]:
    from carebase.tenants import service as tenants_service

    if tenant_id is None:
        return []
    return sorted({m.role for m in await tenants_service.memberships_of(session, account_id)
                   if m.tenant_id == tenant_id})


async def _choose_tenant(session: AsyncSession, account: Account, tenant: str | None) -> tuple[uuid.UUID | None, list[str]]:
    from carebase.tenants import service as tenants_service

    await set_context(session, None, account.id)  # memberships of this account become visible
    memberships = await tenants_service.memberships_of(session, account.id)
    if tenant:
        chosen = [m for m in memberships if m.tenant_slug == tenant or str(m.tenant_id) == tenant]
        if not chosen:
            raise Forbidden(f"You are not a member of '{tenant}'.", code="not-a-member")
        tenant_id = chosen[0].tenant_id
    elif memberships:
        tenant_id = memberships[0].tenant_id
    else:
        tenant_id = None
    roles = sorted({m.role for m in memberships if m.tenant_id == tenant_id})
    if account.is_superadmin:
        roles = sorted(set(roles) | {"superadmin"})
    return tenant_id, roles


def smart_scope(requested: str, roles: list[str]) -> str | None:
    """The SMART scopes a sign-in keeps (None: none asked for, the token acts with the roles' full
    permissions), or 400 invalid_scope."""
    scopes, unknown = parse_smart_scopes(requested)
    if unknown:
        raise ValidationFailed(f"Unknown scope(s): {' '.join(unknown)}. Use SMART scopes such as patient/*.read or "
                               "user/Patient.write.", code="invalid-scope", status=400, error="invalid_scope")
    if not scopes:
        return None
    contexts = {s.context for s in scopes}
    if "system" in contexts:
        raise ValidationFailed("system/ scopes are for integrations signing in with an API key, not for people.",
                               code="invalid-scope", status=400, error="invalid_scope")
    if "patient" in contexts and "patient" not in roles:
        raise ValidationFailed("patient/ scopes are for a patient's own sign-in; staff ask for user/ scopes.",
                               code="invalid-scope", status=400, error="invalid_scope")
    return " ".join(w for w in requested.split() if "/" in w and not w.startswith("launch"))


async def _issue(session: AsyncSession, account_id: uuid.UUID, tenant_id: uuid.UUID | None, roles: list[str],
                 mfa: bool, session_id: uuid.UUID | None = None, scope: str | None = None) -> TokenPair:
    settings = get_settings()
    now = _now()
    if session_id is None:
        session_id = new_id()
        await session.execute(insert(auth_sessions).values(
            id=session_id, account_id=account_id, active_tenant_id=tenant_id, roles=",".join(roles), mfa=mfa,
            scope=scope, created_at=now))
    refresh = secrets.token_urlsafe(32)
    await session.execute(insert(refresh_tokens).values(
        token_hash=crypto.keyring().keyed_hash(refresh), session_id=session_id, account_id=account_id, issued_at=now,
        expires_at=now + timedelta(seconds=settings.refresh_token_ttl_seconds)))
    principal = Principal.of(account_id, tenant_id, roles, session_id, mfa, scope)
    access = tokens.issue_access_token(principal, settings.access_token_ttl_seconds)
    return TokenPair(access, refresh, settings.access_token_ttl_seconds, tenant_id, roles, scope)


async def _credentials_for_update(session: AsyncSession, account_id: uuid.UUID):
    return (await session.execute(
        select(credentials).where(credentials.c.account_id == account_id).with_for_update())).first()


def _locked(creds) -> None:
    if creds is not None and creds.locked_until and creds.locked_until > _now():
        wait = int((creds.locked_until - _now()).total_seconds()) + 1
        raise TooManyRequests(
            f"Too many failed attempts: this account is locked for {wait // 60 + 1} more minute(s). "
            "Reset your password to unlock it now.", code="account-locked", headers={"Retry-After": str(wait)})


async def _record_failure(session: AsyncSession, creds) -> None:
    settings = get_settings()
    failures = creds.failed_logins + 1
    values: dict = {"failed_logins": failures}
    if failures >= settings.login_max_failures:
        values = {"failed_logins": 0, "locked_until": _now() + timedelta(seconds=settings.login_lockout_seconds)}
        log.warning("account_locked", account_id=str(creds.account_id))
    await session.execute(credentials.update().where(credentials.c.account_id == creds.account_id).values(**values))


async def _check_totp(session: AsyncSession, creds, code: str | None) -> bool:
    """True if the account has TOTP and the code is right; raises if it has TOTP and it is not."""
    if creds is None or creds.totp_enabled_at is None:
        return False
    if not code:
        raise NotAuthenticated("Enter the 6-digit code from your authenticator app (totp_code).",
                               code="mfa-required")
    secret = _open_totp_secret(creds.totp_secret)
    totp = pyotp.TOTP(secret)
    now = _now()
    step = int(now.timestamp()) // 30
    for offset in (0, -1, 1):
        s = step + offset
        if hmac.compare_digest(totp.at(s * 30), code) and (creds.totp_last_step is None or s > creds.totp_last_step):
            await session.execute(credentials.update().where(credentials.c.account_id == creds.account_id)
                                  .values(totp_last_step=s))
            return True
    await _record_failure(session, creds)
    raise NotAuthenticated("The authenticator code is wrong or was already used.", code="mfa-invalid",
                           keep_writes=True)


async def login_with_password(session: AsyncSession, *, email: str, password: str, tenant: str | None,
                              totp_code: str | None, scope: str = "") -> TokenPair:
    await _throttle(session, "login")
    account = await find_account_by_email(session, email)
    creds = await _credentials_for_update(session, account.id) if account else None
    _locked(creds)
    ok = await _verify_password(creds.password_hash if creds else None, password)
    if not ok:
        if creds is not None:
            await _record_failure(session, creds)
        raise NotAuthenticated("The e-mail or password is wrong.", code="invalid-credentials", keep_writes=True)
    mfa = await _check_totp(session, creds, totp_code)
    await session.execute(credentials.update().where(credentials.c.account_id == account.id)
                          .values(failed_logins=0, locked_until=None))
    tenant_id, roles = await _choose_tenant(session, account, tenant)
    kept_scope = smart_scope(scope, roles)
    log.info("login", via="password", account_id=str(account.id))
    return await _issue(session, account.id, tenant_id, roles, mfa, scope=kept_scope)


async def refresh(session: AsyncSession, token: str) -> TokenPair:
    token_hash = crypto.keyring().keyed_hash(token)
    owner = (await session.execute(select(refresh_tokens.c.account_id)
                                   .where(refresh_tokens.c.token_hash == token_hash))).first()
    if owner is None:
        raise NotAuthenticated("This refresh token is not valid; sign in again.", code="invalid-refresh-token")
    await set_context(session, None, owner.account_id)  # the account's sessions become visible
    row = (await session.execute(
        select(refresh_tokens, auth_sessions.c.active_tenant_id, auth_sessions.c.revoked_at, auth_sessions.c.mfa,
               auth_sessions.c.scope)
        .join(auth_sessions, auth_sessions.c.id == refresh_tokens.c.session_id)
        .where(refresh_tokens.c.token_hash == token_hash)
        .with_for_update(of=refresh_tokens)
    )).first()
    if row is None or row.revoked_at is not None:
        raise NotAuthenticated("This refresh token is not valid; sign in again.", code="invalid-refresh-token")
    if row.used_at is not None:
        # A used token came back: someone holds a copy. End the whole family, thief and owner alike.
        await _revoke_session(session, row.session_id, "refresh-token-reuse")
        log.warning("refresh_token_reuse", account_id=str(row.account_id))
        raise NotAuthenticated("This refresh token was already used, so the session was ended for safety. "
                               "Sign in again.", code="refresh-token-reused", keep_writes=True)
    if row.expires_at <= _now():
        raise NotAuthenticated("This refresh token has expired; sign in again.", code="invalid-refresh-token")
    await session.execute(refresh_tokens.update().where(refresh_tokens.c.token_hash == token_hash)
                          .values(used_at=_now()))
    await set_context(session, row.active_tenant_id, row.account_id)
    roles = await _roles_in(session, row.account_id, row.active_tenant_id)
    account = await get_account(session, row.account_id)
    if account is None:
        raise NotAuthenticated("This account no longer exists.", code="invalid-refresh-token")
    if account.is_superadmin:
        roles = sorted(set(roles) | {"superadmin"})
    return await _issue(session, row.account_id, row.active_tenant_id, roles, row.mfa, session_id=row.session_id,
                        scope=row.scope)


async def _revoke_session(session: AsyncSession, session_id: uuid.UUID, reason: str) -> None:
    await session.execute(auth_sessions.update()
                          .where(auth_sessions.c.id == session_id, auth_sessions.c.revoked_at.is_(None))
                          .values(revoked_at=_now(), revoked_reason=reason))


async def _revoke_all_sessions(session: AsyncSession, account_id: uuid.UUID, reason: str) -> None:
    await session.execute(auth_sessions.update()
                          .where(auth_sessions.c.account_id == account_id, auth_sessions.c.revoked_at.is_(None))
                          .values(revoked_at=_now(), revoked_reason=reason))


async def logout(session: AsyncSession, principal: Principal, refresh_token: str | None) -> None:
    if principal.session_id:
        await _revoke_session(session, principal.session_id, "logout")
    if refresh_token:
        row = (await session.execute(
            select(refresh_tokens.c.session_id, auth_sessions.c.account_id)
            .join(auth_sessions, auth_sessions.c.id == refresh_tokens.c.session_id)
            .where(refresh_tokens.c.token_hash == crypto.keyring().keyed_hash(refresh_token)))).first()
        if row and row.account_id == principal.account_id:
            await _revoke_session(session, row.session_id, "logout")


_SESSION_SQL = f"SELECT revoked_at FROM {auth_sessions.name} WHERE id = %s"


async def check_session_active(session: AsyncSession, principal: Principal) -> None:
    """Access tokens die with their session: logout and reuse detection take effect at once (and
    an integration's with its API key: revoking the key ends its tokens)."""
    if principal.session_id is None and principal.roles == ("integration",):
        active = (await session.execute(select(api_keys.c.id).where(
            api_keys.c.id == principal.account_id, api_keys.c.revoked_at.is_(None)))).first()
        if active is None:
            raise NotAuthenticated("This API key was revoked.", code="invalid-api-key")
        return
    if principal.session_id is None:
        raise NotAuthenticated("The access token is not valid.", code="invalid-token")
    # Every authenticated request asks this: one pipelined round trip with the tenant context.
    revoked = await first_row(session, _SESSION_SQL, (principal.session_id,))
    if revoked is None or revoked[0] is not None:
        raise NotAuthenticated("This session has ended; sign in again.", code="session-ended")


# -- one-time codes ----------------------------------------------------------------------------


def _destination(phone: str | None, email: str | None) -> str:
    if bool(phone) == bool(email):
        raise ValidationFailed("Give either a phone number or an e-mail address.", code="otp-destination")
    return phone if phone else email.lower()


async def request_otp(session: AsyncSession, *, phone: str | None, email: str | None, channel: str) -> tuple[uuid.UUID, int]:
    settings = get_settings()
    await _throttle(session, "otp")
    dest = _destination(phone, email)
    dest_hash = crypto.keyring().keyed_hash("otp:" + dest)
    recent = await session.scalar(select(func.count()).select_from(otp_challenges).where(
        otp_challenges.c.destination_hash == dest_hash,
        otp_challenges.c.created_at > _now() - timedelta(hours=1)))
    if recent >= 5:
        raise TooManyRequests("Too many codes requested for this number in the last hour; try again later.",
                              code="otp-rate-limited", headers={"Retry-After": "3600"})
    challenge_id = new_id()
    code = f"{secrets.randbelow(1_000_000):06d}"
    now = _now()
    column = accounts.c.phone if phone else accounts.c.email
    exists = (await session.execute(select(accounts.c.id).where(column == dest))).first()
    await session.execute(insert(otp_challenges).values(
        id=challenge_id, destination_hash=dest_hash, account_id=exists.id if exists else None,
        code_hash=crypto.keyring().keyed_hash(f"{challenge_id}:{code}"),
        created_at=now, expires_at=now + timedelta(seconds=settings.otp_ttl_seconds)))
    # The answer is the same whether or not the account exists: no enumeration of patients.
    if exists:
        text = f"Your Carebase sign-in code is {code}. It expires in {settings.otp_ttl_seconds // 60} minutes."
        if phone:
            await delivery.send_sms(session, phone, text)
        else:
            await delivery.send_email(session, dest, "Your Carebase sign-in code", text)
    return challenge_id, settings.otp_ttl_seconds


async def verify_otp(session: AsyncSession, *, challenge_id: uuid.UUID, code: str, tenant: str | None,
                     totp_code: str | None) -> TokenPair:
    settings = get_settings()
    await _throttle(session, "otp")
    ch = (await session.execute(select(otp_challenges).where(otp_challenges.c.id == challenge_id)
                                .with_for_update())).first()
    if ch is None or ch.consumed_at is not None or ch.expires_at <= _now():
        raise NotAuthenticated("This code has expired or was already used; request a new one.",
                               code="otp-expired")
    if ch.attempts >= settings.otp_max_attempts:
        raise TooManyRequests("Too many wrong codes; request a new one.", code="otp-attempts-exceeded")
    expected = crypto.keyring().keyed_hash(f"{challenge_id}:{code}")
    if not hmac.compare_digest(expected, ch.code_hash):
        attempts = ch.attempts + 1
        values: dict = {"attempts": attempts}
        if attempts >= settings.otp_max_attempts:
            values["consumed_at"] = _now()
        await session.execute(otp_challenges.update().where(otp_challenges.c.id == challenge_id).values(**values))
        left = settings.otp_max_attempts - attempts
        raise NotAuthenticated(f"The code is wrong. {left} attempt(s) left." if left else
                               "The code is wrong and no attempts are left; request a new code.",
                               code="otp-invalid", keep_writes=True, attempts_left=left)
    await session.execute(otp_challenges.update().where(otp_challenges.c.id == challenge_id)
                          .values(consumed_at=_now()))
    account = await get_account(session, ch.account_id) if ch.account_id else None
    if account is None:
        raise NotAuthenticated("The code is wrong.", code="otp-invalid")
    creds = await _credentials_for_update(session, account.id)
    _locked(creds)
    mfa = await _check_totp(session, creds, totp_code)
    tenant_id, roles = await _choose_tenant(session, account, tenant)
    log.info("login", via="otp", account_id=str(account.id))
    return await _issue(session, account.id, tenant_id, roles, mfa)


# -- TOTP second factor ------------------------------------------------------------------------

_TOTP_AAD = b"totp-secret"


def _seal_totp_secret(secret: str) -> bytes:
    return crypto.seal(crypto.keyring().derive("totp-secrets"), secret.encode(), _TOTP_AAD).encode()


def _open_totp_secret(sealed: bytes) -> str:
    return crypto.open_sealed(crypto.keyring().derive("totp-secrets"), sealed.decode(), _TOTP_AAD).decode()


async def totp_enroll(session: AsyncSession, principal: Principal) -> tuple[str, str]:
    if not principal.is_staff:
        raise Forbidden("Authenticator codes are for staff accounts.", code="totp-staff-only")
    account = await get_account(session, principal.account_id)
    creds = await _credentials_for_update(session, principal.account_id)
    if creds is None or account is None:
        raise NotFound("Account not found.")
    if creds.totp_enabled_at is not None:
        raise Conflict("An authenticator is already set up for this account.", code="totp-already-enabled")
    secret = pyotp.random_base32()
    await session.execute(credentials.update().where(credentials.c.account_id == principal.account_id)
                          .values(totp_secret=_seal_totp_secret(secret), totp_last_step=None))
    uri = pyotp.TOTP(secret).provisioning_uri(name=account.email or str(account.id), issuer_name="Carebase")
    return secret, uri


async def totp_confirm(session: AsyncSession, principal: Principal, code: str) -> None:
    creds = await _credentials_for_update(session, principal.account_id)
    if creds is None or creds.totp_secret is None:
        raise Conflict("Start enrolment first (POST /api/v1/auth/totp/enroll).", code="totp-not-enrolled")
    if creds.totp_enabled_at is not None:
        raise Conflict("An authenticator is already set up for this account.", code="totp-already-enabled")
    totp = pyotp.TOTP(_open_totp_secret(creds.totp_secret))
    if not totp.verify(code, valid_window=1):
        raise ValidationFailed("The code does not match; check the time on your phone and try again.",
                               code="totp-invalid")
    await session.execute(credentials.update().where(credentials.c.account_id == principal.account_id)
                          .values(totp_enabled_at=_now(), totp_last_step=int(_now().timestamp()) // 30))


async def mfa_enabled(session: AsyncSession, account_id: uuid.UUID) -> bool:
    row = await first_row(session, _MFA_SQL, (account_id,))
    return bool(row and row[0])


# -- password reset ----------------------------------------------------------------------------


async def forgot_password(session: AsyncSession, email: str) -> None:
    """The public 'forgot password' request: throttled per address, silent about unknown e-mails."""
    await _throttle(session, "reset")
    await request_password_reset(session, email)


async def request_password_reset(session: AsyncSession, email: str) -> None:
    """E-mail a single-use reset link (also how new staff are invited)."""
    settings = get_settings()
    account = await find_account_by_email(session, email)
    if account is None or account.email is None:
        return  # same answer either way: no enumeration
    token = secrets.token_urlsafe(32)
    now = _now()
    await session.execute(insert(password_resets).values(
        token_hash=crypto.keyring().keyed_hash(token), account_id=account.id, created_at=now,
        expires_at=now + timedelta(seconds=settings.password_reset_ttl_seconds)))
    base = public_base_url(settings)
    link = f"{base}/reset-password?token={quote(token)}"
    await delivery.send_email(
        session, account.email, "Reset your Carebase password",
        f"Someone asked to reset the password of your Carebase account.\n\n"
        f"Open this link within {settings.password_reset_ttl_seconds // 60} minutes to choose a new one:\n{link}\n\n"
        f"Or use this reset token: {token}\n\nIf it was not you, ignore this message.")


async def reset_password(session: AsyncSession, token: str, new_password: str) -> None:
    row = (await session.execute(select(password_resets).where(
        password_resets.c.token_hash == crypto.keyring().keyed_hash(token)).with_for_update())).first()
    if row is None or row.used_at is not None or row.expires_at <= _now():
        raise ValidationFailed("This reset link is invalid, expired or already used. Ask for a new one.",
                               code="reset-token-invalid")
    account = await get_account(session, row.account_id)
    if account is None:
        raise ValidationFailed("This reset link is invalid.", code="reset-token-invalid")
    _check_password_policy(new_password, account.email)
    await set_context(session, None, account.id)  # the token proves the account: act as it
    await session.execute(password_resets.update().where(password_resets.c.token_hash == row.token_hash)
                          .values(used_at=_now()))
    await session.execute(credentials.update().where(credentials.c.account_id == account.id).values(
        password_hash=await hash_password(new_password), password_changed_at=_now(), failed_logins=0,
        locked_until=None))
    await eventstore.append(session, **ev.account_stream(account.id), expected_version=None,
                            new_events=[eventstore.NewEvent(ev.PASSWORD_CHANGED, {"via": "reset"})])
    await _revoke_all_sessions(session, account.id, "password-reset")


# -- API keys (integrations) ---------------------------------------------------------------------

API_KEY_PREFIX = "cbk"


@dataclass
class ApiKey:
    id: uuid.UUID
    name: str
    scope: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    key: str | None = None  # the secret itself: only when just created, never again


def _check_key_scope(scope: str) -> str:
    words = scope.split()
    scopes, unknown = parse_smart_scopes(scope)
    if unknown or not words or any(s.context != "system" for s in scopes):
        raise ValidationFailed("An API key's scope is hl7:ingest and/or SMART system scopes such as system/*.read.",
                               code="invalid-scope")
    return " ".join(dict.fromkeys(words))


async def create_api_key(session: AsyncSession, principal: Principal, *, name: str, scope: str) -> ApiKey:
    """A new key for an integration of the caller's organization; its secret is returned once."""
    require(principal, "manage:settings")
    tenant_id = require_tenant(principal)
    scope = _check_key_scope(scope)
    key = f"{API_KEY_PREFIX}_{tenant_id.hex}_{secrets.token_urlsafe(32)}"
    row = {"id": new_id(), "tenant_id": tenant_id, "name": name, "key_hash": crypto.keyring().keyed_hash(key),
           "scope": scope, "created_by": principal.account_id, "created_at": _now()}
    await session.execute(insert(api_keys).values(**row))
    log.info("api_key_created", key_id=str(row["id"]))
    return ApiKey(row["id"], name, scope, row["created_at"], None, None, key)


async def list_api_keys(session: AsyncSession, principal: Principal) -> list[ApiKey]:
    require(principal, "manage:settings")
    rows = (await session.execute(select(api_keys).where(api_keys.c.tenant_id == require_tenant(principal))
                                  .order_by(api_keys.c.created_at))).all()
    return [ApiKey(r.id, r.name, r.scope, r.created_at, r.last_used_at, r.revoked_at) for r in rows]


async def revoke_api_key(session: AsyncSession, principal: Principal, key_id: uuid.UUID) -> None:
    require(principal, "manage:settings")
    done = await session.execute(api_keys.update().where(
        api_keys.c.id == key_id, api_keys.c.tenant_id == require_tenant(principal), api_keys.c.revoked_at.is_(None))
        .values(revoked_at=_now()).returning(api_keys.c.id))
    if done.first() is None:
        raise NotFound("No such active API key in your organization.", code="api-key-not-found")


async def authenticate_api_key(session: AsyncSession, key: str) -> Principal:
    """Who an API key acts as: its own id, in its organization, as "integration", narrowed by its
    scope. The organization is part of the key, so the lookup runs under that tenant's row policy."""
    parts = key.split("_", 2)
    invalid = NotAuthenticated("The API key is not valid (or was revoked).", code="invalid-api-key")
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX:
        raise invalid
    try:
        tenant_id = uuid.UUID(hex=parts[1])
    except ValueError:
        raise invalid from None
    await set_context(session, tenant_id, None)
    row = (await session.execute(api_keys.update().where(
        api_keys.c.key_hash == crypto.keyring().keyed_hash(key), api_keys.c.revoked_at.is_(None))
        .values(last_used_at=_now()).returning(api_keys.c.id, api_keys.c.scope))).first()
    if row is None:
        raise invalid
    principal = Principal.of(row.id, tenant_id, ["integration"], scope=row.scope)
    await set_context(session, tenant_id, row.id)
    return principal


async def integration(session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID) -> Principal | None:
    """The principal of an organization's active API key (a replayed HL7 message acts as its sender)."""
    row = (await session.execute(select(api_keys.c.scope).where(
        api_keys.c.id == key_id, api_keys.c.tenant_id == tenant_id, api_keys.c.revoked_at.is_(None)))).first()
    return Principal.of(key_id, tenant_id, ["integration"], scope=row.scope) if row else None


async def token_for_api_key(session: AsyncSession, key: str) -> TokenPair:
    """OAuth2 client credentials: an access token (no refresh token) acting as the key."""
    principal = await authenticate_api_key(session, key)
    ttl = get_settings().access_token_ttl_seconds
    return TokenPair(tokens.issue_access_token(principal, ttl), None, ttl, principal.tenant_id, list(principal.roles),
                     principal.scope)
