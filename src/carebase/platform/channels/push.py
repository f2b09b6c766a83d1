"""The ``push`` channel's ``remote`` provider: every device of the account, each by its own kind.

``Message.to`` is the account's device list. A Web Push subscription (a browser) goes to its push
service with VAPID (``webpush.py``); an FCM registration token (a mobile app) goes to Firebase Cloud
Messaging HTTP v1 (``fcm.py``). All devices are tried at once, and the message counts as delivered
when one of them accepted it: a person reads it on whichever device is at hand.

Devices die quietly (the app is uninstalled, the browser's permission revoked), and the provider
says so only when we push to them. Those devices are reported, not retried: the ``Sent`` this
adapter returns (a ``PushSent``) and every failure it raises carry ``gone``, the endpoints and tokens
the provider declared expired, so the caller can forget them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from psycopg import AsyncConnection

from carebase.platform.channels import (
    ChannelFailure,
    Message,
    PermanentFailure,
    Sent,
    TransientFailure,
    register,
)
from carebase.settings import Settings

# Kinds in the order they are named in ``Sent.provider`` ("webpush+fcm").
KINDS = ("webpush", "fcm")


@dataclass(frozen=True)
class PushSent(Sent):
    # Endpoints / tokens the provider said no longer exist (while another device accepted).
    gone: tuple[str, ...] = ()


class DeviceGone(PermanentFailure):
    """The provider says this device no longer exists (Web Push 404/410, FCM UNREGISTERED)."""

    def __init__(self, reason: str, *, provider: str, address: str, code: str | None = None):
        super().__init__(reason, provider=provider, code=code)
        self.address = address


def push_payload(message: Message) -> dict[str, str]:
    """What the service worker / app shows: the same fields for both kinds of device."""
    return {"title": message.title, "body": message.short, "url": message.link or ""}


def timeout_failure(provider: str, exc: httpx.HTTPError) -> TransientFailure:
    # Timeouts and refused or dropped connections say nothing about the device: try again later.
    return TransientFailure(f"{provider} unreachable: {type(exc).__name__}", provider=provider,
                            code=type(exc).__name__)


class DeviceSender(Protocol):
    kind: str

    async def send(self, client: httpx.AsyncClient, device: Mapping[str, Any], message: Message) -> str | None:
        """The provider's message id; raises ``TransientFailure``/``PermanentFailure``/``DeviceGone``."""


class RemotePush:
    provider = "remote"
    transactional = False

    def __init__(self, settings: Settings, senders: Sequence[DeviceSender]):
        self.timeout = settings.channel_timeout_seconds
        self.senders = {s.kind: s for s in senders}

    async def send(self, message: Message, conn: AsyncConnection | None = None) -> Sent:
        devices = list(message.to or [])
        if not devices:
            failure = PermanentFailure("no push device", provider=self.provider)
            failure.gone = ()  # type: ignore[attr-defined]
            raise failure
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            outcomes = await asyncio.gather(*(self._one(client, d, message) for d in devices))

        accepted = [(kind, mid) for kind, mid in outcomes if not isinstance(mid, ChannelFailure)]
        failures = [f for _, f in outcomes if isinstance(f, ChannelFailure)]
        gone = tuple(f.address for f in failures if isinstance(f, DeviceGone))
        if accepted:
            ids = [mid for _, mid in accepted if mid]
            return PushSent(provider=_named({kind for kind, _ in accepted}),
                            provider_message_id=",".join(ids) or None, gone=gone)

        # Nothing took it. Worth retrying if any device may take it later; the reason names them all.
        transient = [f for f in failures if isinstance(f, TransientFailure)]
        deciding = transient or failures
        cls = TransientFailure if transient else PermanentFailure
        failure = cls("; ".join(f"{f.provider}: {f.reason}" for f in failures),
                      provider=_named({f.provider for f in deciding}) or self.provider, code=deciding[0].code)
        failure.gone = gone  # type: ignore[attr-defined]
        raise failure

    async def _one(self, client: httpx.AsyncClient, device: Any,
                   message: Message) -> tuple[str, str | None | ChannelFailure]:
        kind = device.get("kind") if isinstance(device, Mapping) else None
        sender = self.senders.get(kind)
        if sender is None:
            return str(kind), PermanentFailure(f"unknown push device kind {kind!r}", provider=self.provider)
        try:
            return kind, await sender.send(client, device, message)
        except ChannelFailure as failure:
            return kind, failure


def _named(kinds: set[str]) -> str:
    return "+".join(k for k in KINDS if k in kinds)


@register("push", "remote")
def remote_push(settings: Settings) -> RemotePush:
    # The senders import DeviceGone from here, so they are imported when an adapter is built.
    from carebase.platform.channels.fcm import FcmSender
    from carebase.platform.channels.webpush import WebPushSender

    return RemotePush(settings, [WebPushSender(settings), FcmSender(settings)])
