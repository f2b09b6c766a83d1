"""Configuration from CAREBASE_* environment variables.

Secrets come only from here. With no secret key configured, a random one is generated once and
kept in ``$CAREBASE_HOME/secret.key`` (mode 0600) so a laptop install needs no setup and tokens,
sealed PHI and chain signatures survive restarts.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from typing import Literal
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

    # The intake assistant: the built-in offline engine unless an OpenAI-compatible endpoint is set
    # (CAREBASE_LLM_BASE_URL, e.g. http://127.0.0.1:8080/v1). Only de-identified text goes there.
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str = "gpt-4o-mini"
    llm_timeout_seconds: float = 30.0

    # Aadhaar eSign (India's eSign API 2.1) beside Carebase's own signature on prescriptions:
    # none | aadhaar. The ASP's key and certificate (PEM) sign requests; the ESP's certificate
    # checks its answers.
    esign_provider: str = "none"
    esign_esp_url: str | None = None
    esign_asp_id: str | None = None
    esign_asp_key: SecretStr | None = None
    esign_asp_certificate: str | None = None
    esign_esp_certificate: str | None = None

    # Who delivers pharmacy orders (pharmacy/couriers.py): local (the built-in courier, which
    # moves an order on by itself every local_courier_step_seconds) | borzo (Borzo's business API:
    # the token authenticates requests, the callback secret checks its signed status callbacks).
    courier_provider: Literal["local", "borzo"] = "local"
    courier_base_url: str | None = None
    courier_api_token: SecretStr | None = None
    courier_callback_secret: SecretStr | None = None
    courier_timeout_seconds: float = 15.0
    local_courier_step_seconds: int = 120

    # Who takes card/UPI payments (payments/gateways.py): sandbox (built in: a hosted checkout page
    # you can pay or fail, webhooks signed like Stripe's with payment_webhook_secret; the default,
    # for demos and tests). The webhook secret is derived from the secret key when unset.
    # stripe: PaymentIntents (CAREBASE_STRIPE_API_KEY; webhooks checked with
    # CAREBASE_STRIPE_WEBHOOK_SECRET). razorpay: orders and Razorpay Checkout
    # (CAREBASE_RAZORPAY_KEY_ID / _KEY_SECRET; webhooks with CAREBASE_RAZORPAY_WEBHOOK_SECRET).
    # The *_API_BASE settings point an adapter at another address (the tests' stand-ins).
    payment_provider: Literal["sandbox", "stripe", "razorpay"] = "sandbox"
    payment_webhook_secret: SecretStr | None = None
    payment_timeout_seconds: float = 15.0
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    razorpay_key_id: str | None = None
    razorpay_key_secret: SecretStr | None = None
    razorpay_webhook_secret: SecretStr | None = None
    razorpay_api_base: str | None = None
    # What the provider keeps of each captured payment, in basis points (200 = 2 %), recorded
    # against the merchant when the escrow is released.
    payment_fee_bps: int = 200
    # A merchant's released money is paid out in one batch this long after the first release.
    payout_batch_seconds: int = 3600
    # OTP on delivery: lifetime, tries, and the wait between resends.
    delivery_otp_ttl_seconds: int = 30 * 60
    delivery_otp_max_attempts: int = 5
    delivery_otp_resend_seconds: int = 60

    # Who carries each channel (platform/channels). "local" keeps the message in the
    # outbound_messages table and nothing leaves the machine (demo, tests).
    email_provider: str = "local"  # local | smtp (smtp_host:smtp_port)
    sms_provider: str = "local"  # local | twilio | msg91
    whatsapp_provider: str = "local"  # local | meta (WhatsApp Cloud API)
    push_provider: str = "local"  # local | remote (each device by its kind: Web Push with VAPID, or FCM HTTP v1)
    # A provider call that takes longer is a transient failure (retried, then the next channel).
    channel_timeout_seconds: float = 10.0
    # Transient failures are retried this many times on the same channel (base × 2^n seconds apart)
    # before the delivery moves to the next channel of its chain.
    delivery_retries_per_channel: int = 3
    delivery_retry_base_seconds: float = 30.0
    # Non-urgent notifications one person gets per hour; past it, optional ones are suppressed.
    notification_rate_per_hour: int = 20
    # A chat message still unread after this long becomes a notification (push, then e-mail).
    message_nudge_seconds: float = 60.0
    # Chat attachments: the largest file, and the kinds accepted (images, PDFs, plain text).
    attachment_max_bytes: int = 2 * 1024 * 1024 - 64 * 1024  # under max_body_bytes with the form around it
    attachment_types: str = "image/jpeg,image/png,image/webp,application/pdf,text/plain"
    mail_from: str = "Carebase <no-reply@carebase.local>"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    twilio_base_url: str = "https://api.twilio.com"
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None  # also verifies X-Twilio-Signature on status callbacks
    twilio_from: str | None = None
    msg91_base_url: str = "https://control.msg91.com"
    msg91_auth_key: SecretStr | None = None
    msg91_template_id: str | None = None  # MSG91 sends DLT-registered templates (Flow API)
    msg91_webhook_token: SecretStr | None = None  # shared secret MSG91 puts on its delivery reports
    whatsapp_base_url: str = "https://graph.facebook.com/v19.0"
    whatsapp_phone_number_id: str | None = None
    whatsapp_token: SecretStr | None = None
    whatsapp_app_secret: SecretStr | None = None  # verifies X-Hub-Signature-256 on webhooks
    whatsapp_verify_token: SecretStr | None = None  # Meta's webhook subscription handshake
    vapid_private_key: SecretStr | None = None  # PEM or base64url raw key (pywebpush)
    vapid_public_key: str | None = None  # base64url, given to browsers to subscribe
    vapid_subject: str = "mailto:operations@carebase.local"
    fcm_project_id: str | None = None
    fcm_service_account_file: Path | None = None  # the Google service-account JSON (its private key signs)
    fcm_base_url: str = "https://fcm.googleapis.com"
    fcm_token_url: str = "https://oauth2.googleapis.com/token"

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

    # File storage (platform/storage): attachments, prescription PDFs, lab files. "local" keeps them
    # under storage_path (None -> home/storage) and serves its own signed links; "s3" keeps them in
    # an S3-compatible bucket (AWS S3, MinIO, Ceph) and hands out presigned URLs.
    storage_provider: str = "local"  # local | s3
    storage_path: Path | None = None
    # A storage call that takes longer is a transient failure (the caller may retry).
    storage_timeout_seconds: float = 30
    s3_endpoint_url: str | None = None  # None -> AWS, https://s3.<s3_region>.amazonaws.com
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    # endpoint/bucket/key, as MinIO and Ceph expect; false -> bucket.endpoint/key (AWS's preference).
    s3_path_style: bool = True

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


def public_base_url(settings: Settings) -> str:
    """Where people reach this Carebase (links in e-mails, QR codes): ``public_url``, or the
    address it serves on."""
    return (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")


_settings: Settings | None = None


def get_settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings()
    return _settings


def set_settings(settings: Settings | None) -> None:
    global _settings
    _settings = settings
