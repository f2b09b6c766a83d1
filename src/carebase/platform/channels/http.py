"""What the remote adapters (Twilio, MSG91, WhatsApp Cloud API, …) share: one HTTP call bounded by
``channel_timeout_seconds``, and the rules that turn a provider's answer into ``Sent`` or a failure.

The split follows what a retry can change: no answer (timeout, network), 429 and 5xx may go
through later, so they are transient; any other 4xx means this request will never be accepted as
it is (bad number, unsubscribed, wrong credentials) and retrying it only spends quota. A provider
error code documented as "try again later" wins over the HTTP status (WhatsApp answers some rate
limits with 400), and so does one documented as final.

Provider error messages quote the recipient's number; failures keep them only with every digit run
long enough to be a phone number masked, since failure reasons are stored with the attempt and
shown to admins.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import httpx
from psycopg import AsyncConnection

from carebase.platform.channels import ChannelFailure, Message, PermanentFailure, Sent, TransientFailure
from carebase.settings import Settings

_PHONE_LIKE = re.compile(r"\+?\d[\d \-().]{5,}\d")
_E164 = re.compile(r"\+[1-9]\d{6,14}")


def redact(text: str | None, limit: int = 300) -> str:
    return _PHONE_LIKE.sub("<number>", text or "")[:limit]


class RemoteAdapter:
    """Base of the adapters that call a provider over HTTP; subclasses set ``provider`` and write
    ``send``. Never transactional: the call happens outside the delivery's transaction."""

    provider: str
    settings_prefix = ""  # of its CAREBASE_* settings, when not the provider's name
    transactional = False

    def __init__(self, settings: Settings):
        self.settings = settings
        self.timeout = settings.channel_timeout_seconds

    async def send(self, message: Message, conn: AsyncConnection | None) -> Sent:
        raise NotImplementedError

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        # A client per call: one adapter may serve calls on several event loops (the worker's, a
        # test's asyncio.run), and a pooled client is bound to the loop that opened it.
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                return await client.request(method, url, **kwargs)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:  # the base URL setting, not the network
            raise PermanentFailure(f"{self.provider}'s base URL is not a valid http(s) URL",
                                   provider=self.provider, code="not-configured") from exc
        except httpx.TimeoutException as exc:
            raise TransientFailure(f"{self.provider} did not answer within {self.timeout:g} s",
                                   provider=self.provider, code="timeout") from exc
        except httpx.HTTPError as exc:  # refused, reset, DNS, TLS: worth another try later
            raise TransientFailure(f"could not reach {self.provider} ({type(exc).__name__})",
                                   provider=self.provider, code="network") from exc

    def failure(self, response: httpx.Response, code: Any = None, message: str | None = None, *,
                transient_codes: Collection[str] = (), permanent_codes: Collection[str] = ()) -> ChannelFailure:
        """The failure for a refused request; ``code`` is the provider's own error code, if any."""
        code = None if code in (None, "") else str(code)
        status = response.status_code
        what = f"{self.provider} answered HTTP {status}" + (f", error {code}" if code else "")
        reason = f"{what}: {redact(message)}" if message else what
        if status in (401, 403):
            prefix = (self.settings_prefix or self.provider).upper()
            reason += f" (credentials refused: check the CAREBASE_{prefix}_* settings)"
        transient = code not in permanent_codes and (code in transient_codes or status == 429 or status >= 500)
        return (TransientFailure if transient else PermanentFailure)(reason, provider=self.provider,
                                                                     code=code or str(status))

    def unexpected(self, response: httpx.Response) -> PermanentFailure:
        # A 2xx without the message id is not a provider speaking its API (a proxy, a wrong base
        # URL). It may have been taken, so it is not retried here: the chain moves on.
        return PermanentFailure(f"{self.provider} answered HTTP {response.status_code} without a message id",
                                provider=self.provider, code="unexpected-response")

    def not_configured(self, *names: str) -> PermanentFailure:
        return PermanentFailure(f"{self.provider} is not configured: set " + ", ".join(
            f"CAREBASE_{n.upper()}" for n in names), provider=self.provider, code="not-configured")

    def phone(self, message: Message) -> str:
        """The recipient as E.164 (``+`` and digits), or a permanent failure: no retry fixes it."""
        to = message.to if isinstance(message.to, str) else ""
        to = re.sub(r"[\s\-().]", "", to)
        if not _E164.fullmatch(to):
            raise PermanentFailure("the recipient is not an E.164 phone number", provider=self.provider,
                                   code="invalid-number")
        return to


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The body as a JSON object, or {} (an HTML error page from a proxy, an empty body)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def text_of(message: Message) -> str:
    """What a text channel says: the short text, then the link unless the text already has it."""
    if message.link and message.link not in message.short:
        return f"{message.short}\n{message.link}"
    return message.short
