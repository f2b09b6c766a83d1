"""Configuration from CAREBASE_* environment variables.

Secrets come only from here. With no secret key configured, a random one is generated once and
kept in ``$CAREBASE_HOME/secret.key`` (mode 0600) so a laptop install needs no setup and tokens,
sealed PHI and chain signatures survive restarts.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "carebase"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAREBASE_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    # Owner connection (migrations, seed, admin commands). None -> embedded PostgreSQL under home.
    database_url: str | None = None
    # Connection of the request path. None -> database_url with the user swapped for app_db_role,
    # so row-level security applies (the app role owns no table).
    app_database_url: str | None = None
    app_db_role: str = "carebase_app"
    db_pool_size: int = 10

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None

    secret_key: SecretStr | None = None

    demo_password: SecretStr = SecretStr("carebase-demo")

    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    otp_ttl_seconds: int = 5 * 60
    otp_max_attempts: int = 5
    # Sign-in, code, reset and registration requests per client address and minute.
    auth_rate_limit_per_minute: int = 30
    login_max_failures: int = 5
    login_lockout_seconds: int = 15 * 60
    password_reset_ttl_seconds: int = 30 * 60

    # "local" keeps outgoing mail and SMS in the local outbox table (demo, tests);
    # "smtp" sends e-mail through smtp_host:smtp_port.
    mail_backend: str = "local"
    mail_from: str = "Carebase <no-reply@carebase.local>"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False

    # Background jobs: run k (0-based) waits base × 2^k seconds; after job_max_attempts runs the
    # job is dead-lettered.
    job_max_attempts: int = 6
    job_retry_base_seconds: float = 5.0
    worker_poll_seconds: float = 2.0
    worker_heartbeat_seconds: float = 10.0
    worker_stalled_seconds: float = 30.0
    # Extra modules whose @job handlers a worker should load (plugins, tests).
    job_modules: str = ""

    log_level: str = "INFO"
    log_file: Path | None = None
    # Fault injection for crash tests, e.g. "eventstore.before_commit=sleep:5". Empty in production.
    failpoints: str = ""

    max_body_bytes: int = 2 * 1024 * 1024
    # The portal polls this often when Server-Sent Events are unavailable (the seed's 30 s).
    portal_poll_seconds: int = 30
    # Send portal cookies only over HTTPS (turn off for plain-HTTP local use).
    secure_cookies: bool = False

    @cached_property
    def master_secret(self) -> bytes:
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.home / "secret.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process won the race; use its key
                pass
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_urlsafe(48))
        return path.read_text().strip().encode()


_settings: Settings | None = None


def get_settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings()
    return _settings


def set_settings(settings: Settings | None) -> None:
    global _settings
    _settings = settings
