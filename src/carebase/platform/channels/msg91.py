"""SMS through MSG91's Flow API (v5), the way Indian senders reach phones under TRAI's DLT rules:
every SMS is a template registered with the operators, so Carebase sends one template whose only
variable carries the text.

Built to MSG91's public documentation (msg91.com/help, the API reference); assumptions where the
documentation is thin, which the stand-in in tests/standins/msg91.py encodes:

* ``POST {msg91_base_url}/api/v5/flow/`` with header ``authkey``, JSON
  ``{"template_id": …, "short_url": "0", "recipients": [{"mobiles": "91…", "body": "<text>"}]}``:
  ``mobiles`` is the number with country code and no ``+``; each recipient's other keys are the
  template's variables, so the template must contain ``##body##``.
* Success is ``{"type": "success", "message": "<request id>"}``; that request id is what MSG91's
  delivery reports name (``requestId``), so it is the provider message id.
* Refusals are ``{"type": "error", "message": …}`` (sometimes with a ``code``); a wrong authkey is
  HTTP 401, and MSG91 also answers some refusals (invalid number, unknown template) with HTTP 200
  and ``"type": "error"``, which is as final as a 400.
"""

from __future__ import annotations

from psycopg import AsyncConnection

from carebase.platform.channels import Message, Sent, register
from carebase.platform.channels.http import RemoteAdapter, json_object, text_of

TEMPLATE_VARIABLE = "body"


@register("sms", "msg91")
class Msg91Adapter(RemoteAdapter):
    provider = "msg91"

    async def send(self, message: Message, conn: AsyncConnection | None = None) -> Sent:
        s = self.settings
        if not (s.msg91_auth_key and s.msg91_template_id):
            raise self.not_configured("msg91_auth_key", "msg91_template_id")
        payload = {"template_id": s.msg91_template_id, "short_url": "0",
                   "recipients": [{"mobiles": self.phone(message).lstrip("+"), TEMPLATE_VARIABLE: text_of(message)}]}
        response = await self.request("POST", f"{s.msg91_base_url.rstrip('/')}/api/v5/flow/", json=payload,
                                      headers={"authkey": s.msg91_auth_key.get_secret_value(),
                                               "accept": "application/json"})
        body = json_object(response)
        kind = body.get("type")
        if response.is_success and kind == "success":
            if isinstance(body.get("message"), str) and body["message"]:
                return Sent(self.provider, body["message"])
            raise self.unexpected(response)
        if response.is_success and kind != "error":
            raise self.unexpected(response)
        message_text = body.get("message") if isinstance(body.get("message"), str) else None
        # A refusal inside a 200 has no HTTP status worth quoting as its code.
        code = body.get("code") or ("rejected" if response.is_success else None)
        raise self.failure(response, code, message_text)
