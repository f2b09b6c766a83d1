"""The built-in channels: every message lands in the ``outbound_messages`` table (the demo's
inbox, the tests' outbox) in the delivery's own transaction, so it is stored exactly once, and
nothing leaves the machine."""

from __future__ import annotations

import json

from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform.channels import CHANNELS, Message, PermanentFailure, Sent, register
from carebase.platform.ids import new_id
from carebase.settings import Settings


class LocalOutbox:
    provider = "local"
    transactional = True

    def __init__(self, channel: str):
        self.channel = channel

    async def send(self, message: Message, session: AsyncSession | None) -> Sent:
        from carebase.platform.delivery import outbound_messages  # the table lives with the engine

        if self.channel == "push":
            if not message.to:  # like a real push service: nobody to push to is a refusal
                raise PermanentFailure("no push device registered", provider=self.provider, code="no-device")
            recipient = f"{len(message.to)} device(s)"
            body = json.dumps({"title": message.title, "body": message.short, "url": message.link})
        else:
            recipient = str(message.to)
            body = message.body if self.channel == "email" else message.short
        message_id = new_id()
        await session.execute(outbound_messages.insert().values(
            id=message_id, tenant_id=message.tenant_id, channel=self.channel, recipient=recipient[:320],
            subject=message.title[:300] if self.channel == "email" else None, body=body, status="local"))
        return Sent(self.provider, str(message_id))


for _channel in CHANNELS:
    register(_channel, "local")(lambda settings, c=_channel: LocalOutbox(c))
