"""Delivery channels: one small interface, a real adapter per provider and a local one.

A channel is what a person receives a message on: ``email``, ``sms``, ``whatsapp``, ``push`` (Web
Push and FCM devices). Settings pick each channel's provider (``CAREBASE_SMS_PROVIDER=twilio`` …);
``local`` (the default) keeps the message in the ``outbound_messages`` table, in the delivery's own
transaction, and nothing leaves the machine: the demo's inbox and the tests' outbox.

An adapter either accepts the message (``Sent``, with the provider's message id, for its status
webhooks) or raises:

* ``TransientFailure``: worth retrying on the same channel after a backoff (timeouts, 429, 5xx);
* ``PermanentFailure``: this channel will not take it (bad number, unsubscribed, no device, 4xx):
  the delivery moves on to the next channel of its chain at once.

Remote adapters talk to the provider's documented HTTP API with httpx (base URLs are settings, so
the tests point them at local stand-ins speaking the same wire format); they never touch the
database. Local adapters set ``transactional`` and write on the connection they are given: the
delivery's own psycopg connection, inside its transaction.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from psycopg import AsyncConnection

from carebase.settings import Settings

CHANNELS = ("email", "sms", "whatsapp", "push")


@dataclass(frozen=True)
class Message:
    channel: str
    # E-mail address, E.164 phone number, or for push the account's devices:
    # [{"kind": "webpush", "endpoint": …, "keys": {"p256dh": …, "auth": …}}, {"kind": "fcm", "token": …}]
    to: Any
    title: str  # e-mail subject, push title
    body: str  # e-mail body (plain text)
    short: str  # SMS, WhatsApp and push text
    link: str | None = None
    # "<delivery id>:<channel>": the idempotency key, for providers that take one.
    reference: str = ""
    tenant_id: Any = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sent:
    provider: str
    provider_message_id: str | None = None


class ChannelFailure(Exception):
    def __init__(self, reason: str, *, provider: str, code: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.provider = provider
        self.code = code  # the provider's own error code, when it gave one


class TransientFailure(ChannelFailure):
    """Retry on this channel after a backoff."""


class PermanentFailure(ChannelFailure):
    """This channel will not deliver it; go to the next one."""


class Adapter(Protocol):
    provider: str
    # True: ``send`` writes on ``conn`` inside the delivery's transaction (exactly once).
    transactional: bool

    async def send(self, message: Message, conn: AsyncConnection | None) -> Sent: ...


AdapterFactory = Callable[[Settings], Adapter]
_factories: dict[tuple[str, str], AdapterFactory] = {}


def register(channel: str, provider: str) -> Callable[[AdapterFactory], AdapterFactory]:
    """``@register("sms", "twilio")`` on a factory ``(settings) -> Adapter``."""

    def add(factory: AdapterFactory) -> AdapterFactory:
        _factories[(channel, provider)] = factory
        return factory

    return add


def provider_setting(settings: Settings, channel: str) -> str:
    return {"email": settings.email_provider, "sms": settings.sms_provider,
            "whatsapp": settings.whatsapp_provider, "push": settings.push_provider}[channel]


def adapter_for(settings: Settings, channel: str) -> Adapter:
    provider = provider_setting(settings, channel)
    _load_adapters()
    try:
        return _factories[(channel, provider)](settings)
    except KeyError:
        known = sorted(p for c, p in _factories if c == channel)
        raise ValueError(f"CAREBASE_{channel.upper()}_PROVIDER={provider!r}: not one of {known}") from None


@functools.cache
def _load_adapters() -> None:
    # Every module of this package registers its adapters when imported; imported on first use,
    # not at the top, so the interface above depends on none of them. Once per process: listing
    # the package on every delivery was work on the hot path.
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
