"""E-mail over SMTP (aiosmtplib) to ``smtp_host:smtp_port``."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
from psycopg import AsyncConnection

from carebase.platform.channels import Message, PermanentFailure, Sent, TransientFailure, register
from carebase.settings import Settings


class Smtp:
    provider = "smtp"
    transactional = False

    def __init__(self, settings: Settings):
        self.settings = settings

    async def send(self, message: Message, conn: AsyncConnection | None) -> Sent:
        s = self.settings
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = s.mail_from, message.to, message.title
        msg["Message-ID"] = make_msgid(idstring=message.reference.replace(":", "."), domain="carebase.local")
        msg.set_content(message.body + (f"\n\n{message.link}" if message.link and message.link not in message.body
                                        else ""))
        try:
            await aiosmtplib.send(
                msg, hostname=s.smtp_host, port=s.smtp_port, start_tls=s.smtp_starttls, username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                timeout=s.channel_timeout_seconds)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise PermanentFailure(f"recipient refused: {exc}", provider=self.provider, code="recipient-refused") from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx: the server will not take it; 4xx: try again later (greylisting, full mailbox).
            failure = PermanentFailure if exc.code >= 500 else TransientFailure
            raise failure(f"SMTP {exc.code}: {exc.message}", provider=self.provider, code=str(exc.code)) from exc
        except (aiosmtplib.SMTPReadTimeoutError, asyncio.TimeoutError) as exc:
            # The server went quiet mid-conversation: it may have the message (see delivery.run).
            raise TransientFailure("SMTP server did not answer in time", provider=self.provider,
                                   code="timeout") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientFailure(f"SMTP server unreachable: {type(exc).__name__}", provider=self.provider,
                                   code="unreachable") from exc
        return Sent(self.provider, msg["Message-ID"])


register("email", "smtp")(Smtp)
