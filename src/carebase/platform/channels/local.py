"""The built-in channels: every message lands in the ``outbound_messages`` table (the demo's
inbox, the tests' outbox) in the delivery's own transaction, so it is stored exactly once, and
nothing leaves the machine."""

from __future__ import annotations

import json

from psycopg import AsyncConnection

from carebase.platform.channels import CHANNELS, Message, PermanentFailure, Sent, register
from carebase.platform.ids import new_id


class LocalOutbox:
    provider = "local"
    transactional = True

    def __init__(self, channel: str):
        self.channel = channel

    async def send(self, message: Message, conn: AsyncConnection | None) -> Sent:
        if self.channel == "push":
            if not message.to:  # like a real push service: nobody to push to is a refusal
                raise PermanentFailure("no push device registered", provider=self.provider, code="no-device")
            recipient = f"{len(message.to)} device(s)"
            body = json.dumps({"title": message.title, "body": message.short, "url": message.link})
        else:
            recipient = str(message.to)
            body = message.body if self.channel == "email" else message.short
        message_id = new_id()
        await conn.execute(
            "INSERT INTO outbound_messages (id, tenant_id, channel, recipient, subject, body, status) "
            "VALUES (%s, %s, %s, %s, %s, %s, 'local')",
            (message_id, message.tenant_id, self.channel, recipient[:320],
             message.title[:300] if self.channel == "email" else None, body))
        return Sent(self.provider, str(message_id))


for _channel in CHANNELS:
    register(_channel, "local")(lambda settings, c=_channel: LocalOutbox(c))
