"""The SMS (Twilio, MSG91) and WhatsApp (Meta Cloud API) adapters against local stand-ins speaking
each provider's wire format, and the delivery-status webhooks those providers send back.

Adapters are driven directly, as the delivery engine does (``adapter_for(settings, channel)``):
what the provider received, byte for byte where it matters, and how each of its answers is
classified. The webhooks go over real HTTP to a real Carebase server, signed as each provider
signs them, and land on the delivery attempt the real adapter made.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from carebase.platform import channels
from carebase.platform.channels import Message, PermanentFailure, Sent, TransientFailure
from carebase.platform.channels import twilio as twilio_channel
from carebase.platform.channels import whatsapp as whatsapp_channel
from carebase.settings import Settings, set_settings
from tests.conftest import ThreadServer, assert_problem, free_port
from tests.standins.base import StandIn
from tests.standins.msg91 import Msg91StandIn
from tests.standins.twilio import TwilioStandIn
from tests.standins.whatsapp import WhatsAppStandIn

PUBLIC_URL = "https://carebase.example"
TO = "+919812345678"
TIMEOUT = 0.5  # channel_timeout_seconds in these tests; "slow" answers take SLOW
SLOW = TIMEOUT * 4
BASE_URL_SETTING = {"twilio": "twilio_base_url", "msg91": "msg91_base_url", "meta": "whatsapp_base_url"}


def message(to: Any = TO, channel: str = "sms", link: str | None = "https://carebase.example/a/1") -> Message:
    return Message(channel=channel, to=to, title="Appointment reminder", body="Your appointment is tomorrow.",
                   short="Appointment tomorrow 10:00", link=link, reference=f"{uuid.uuid4()}:{channel}")


def send(settings: Settings, channel: str, msg: Message) -> Sent:
    return asyncio.run(channels.adapter_for(settings, channel).send(msg, None))


def failure_of(settings: Settings, channel: str, msg: Message) -> TransientFailure | PermanentFailure:
    with pytest.raises((TransientFailure, PermanentFailure)) as caught:
        send(settings, channel, msg)
    return caught.value


# -- the stand-ins, and settings pointing at them ---------------------------------------------


@contextmanager
def running(standin: StandIn) -> Iterator[StandIn]:
    with standin:
        yield standin


@pytest.fixture(scope="module")
def twilio() -> Iterator[TwilioStandIn]:
    with running(TwilioStandIn()) as s:
        yield s


@pytest.fixture(scope="module")
def msg91() -> Iterator[Msg91StandIn]:
    with running(Msg91StandIn()) as s:
        yield s


@pytest.fixture(scope="module")
def meta() -> Iterator[WhatsAppStandIn]:
    with running(WhatsAppStandIn()) as s:
        yield s


def provider_settings(twilio: TwilioStandIn, msg91: Msg91StandIn, meta: WhatsAppStandIn, **extra: Any) -> dict:
    return dict(
        public_url=PUBLIC_URL, channel_timeout_seconds=TIMEOUT,
        twilio_base_url=twilio.url, twilio_account_sid=twilio.account_sid,
        twilio_auth_token=SecretStr(twilio.auth_token), twilio_from="+15005550006",
        msg91_base_url=msg91.url, msg91_auth_key=SecretStr(msg91.auth_key), msg91_template_id=msg91.template_id,
        whatsapp_base_url=meta.base_url, whatsapp_phone_number_id=meta.phone_number_id,
        whatsapp_token=SecretStr(meta.token)) | extra


@dataclass
class Provider:
    """One adapter and its stand-in, for the behaviour every remote adapter shares."""

    name: str
    channel: str
    standin: StandIn
    settings: Settings
    wrong_credentials: dict[str, Any]
    unconfigured: dict[str, Any]

    def with_(self, **changes: Any) -> Settings:
        return self.settings.model_copy(update=changes)


def provider_for(name: str, standins: dict[str, StandIn], home) -> Provider:
    for s in standins.values():
        s.reset()
    base = provider_settings(standins["twilio"], standins["msg91"], standins["meta"],  # type: ignore[arg-type]
                             home=home)
    if name == "meta":
        return Provider(name, "whatsapp", standins[name], Settings(whatsapp_provider="meta", **base),
                        {"whatsapp_token": SecretStr("EAAGnot-the-token")}, {"whatsapp_token": None})
    return Provider(name, "sms", standins[name], Settings(sms_provider=name, **base),
                    {"twilio": {"twilio_auth_token": SecretStr("0" * 32)},
                     "msg91": {"msg91_auth_key": SecretStr("not-the-key")}}[name],
                    {"twilio": {"twilio_account_sid": None}, "msg91": {"msg91_template_id": None}}[name])


@pytest.fixture
def standins(twilio, msg91, meta) -> dict[str, StandIn]:
    return {"twilio": twilio, "msg91": msg91, "meta": meta}


@pytest.fixture(params=["twilio", "msg91", "meta"])
def provider(request, standins, tmp_path) -> Provider:
    return provider_for(request.param, standins, tmp_path)


@pytest.fixture
def via_twilio(standins, tmp_path) -> Provider:
    return provider_for("twilio", standins, tmp_path)


@pytest.fixture
def via_msg91(standins, tmp_path) -> Provider:
    return provider_for("msg91", standins, tmp_path)


@pytest.fixture
def via_meta(standins, tmp_path) -> Provider:
    return provider_for("meta", standins, tmp_path)


# -- what every remote adapter does ------------------------------------------------------------


def test_a_message_is_sent_once_and_the_provider_id_returned(provider):
    sent = send(provider.settings, provider.channel, message(channel=provider.channel))
    assert sent.provider == provider.name
    assert sent.provider_message_id
    assert len(provider.standin.received) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_provider_trouble_is_transient(provider, status):
    provider.standin.fail_next(1, status, "<html>upstream trouble</html>")
    failure = failure_of(provider.settings, provider.channel, message(channel=provider.channel))
    assert isinstance(failure, TransientFailure), failure
    assert failure.provider == provider.name and failure.code == str(status)
    assert len(provider.standin.received) == 1  # no retry inside the adapter: the engine decides


def test_throttling_is_transient(provider):
    body = {"twilio": {"code": 20429, "message": "Too Many Requests", "status": 429},
            "msg91": {"type": "error", "message": "Too many requests"},
            "meta": {"error": {"message": "Rate limit hit", "type": "OAuthException", "code": 130429}}}
    provider.standin.fail_next(1, 429, body[provider.name])
    failure = failure_of(provider.settings, provider.channel, message(channel=provider.channel))
    assert isinstance(failure, TransientFailure), failure
    assert failure.code == {"twilio": "20429", "msg91": "429", "meta": "130429"}[provider.name]


def test_a_timeout_is_transient(provider):
    provider.standin.slow_next(1, SLOW)
    failure = failure_of(provider.settings, provider.channel, message(channel=provider.channel))
    assert isinstance(failure, TransientFailure), failure
    assert failure.code == "timeout"
    assert len(provider.standin.received) == 1


def test_an_unreachable_provider_is_transient(provider):
    closed = f"http://127.0.0.1:{free_port()}"
    failure = failure_of(provider.with_(**{BASE_URL_SETTING[provider.name]: closed}), provider.channel, message(channel=provider.channel))
    assert isinstance(failure, TransientFailure), failure
    assert failure.code == "network"


def test_a_base_url_that_is_no_url_is_a_configuration_error(provider):
    failure = failure_of(provider.with_(**{BASE_URL_SETTING[provider.name]: "api.example.com"}), provider.channel,
                         message(channel=provider.channel))
    assert isinstance(failure, PermanentFailure) and failure.code == "not-configured"


def test_wrong_credentials_are_permanent(provider):
    failure = failure_of(provider.with_(**provider.wrong_credentials), provider.channel,
                         message(channel=provider.channel))
    assert isinstance(failure, PermanentFailure), failure
    assert failure.code == {"twilio": "20003", "msg91": "401", "meta": "190"}[provider.name]
    assert "credentials" in failure.reason
    assert len(provider.standin.received) == 1


def test_an_unconfigured_provider_is_permanent_and_calls_nobody(provider):
    failure = failure_of(provider.with_(**provider.unconfigured), provider.channel, message(channel=provider.channel))
    assert isinstance(failure, PermanentFailure)
    assert failure.code == "not-configured"
    assert "CAREBASE_" in failure.reason
    assert provider.standin.received == []


@pytest.mark.parametrize("to", ["98123 45678", "", None, ["+919812345678"], "+0123456789"])
def test_a_recipient_that_is_not_a_phone_number_is_permanent_and_calls_nobody(provider, to):
    failure = failure_of(provider.settings, provider.channel, message(to=to, channel=provider.channel))
    assert isinstance(failure, PermanentFailure)
    assert failure.code == "invalid-number"
    assert provider.standin.received == []


def test_a_success_without_a_message_id_is_not_taken_for_a_send(provider):
    provider.standin.fail_next(1, 200, {"status": "ok"})
    failure = failure_of(provider.settings, provider.channel, message(channel=provider.channel))
    assert isinstance(failure, PermanentFailure)
    assert failure.code == "unexpected-response"


# -- Twilio ------------------------------------------------------------------------------------



def test_twilio_receives_the_documented_request(via_twilio):
    twilio: TwilioStandIn = via_twilio.standin  # type: ignore[assignment]
    sent = send(via_twilio.settings, "sms", message())
    (req,) = twilio.received
    assert req.method == "POST"
    assert req.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(
        f"{twilio.account_sid}:{twilio.auth_token}".encode()).decode()
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"
    assert req.form() == {"To": TO, "From": "+15005550006",
                          "Body": "Appointment tomorrow 10:00\nhttps://carebase.example/a/1",
                          "StatusCallback": PUBLIC_URL + "/api/v1/webhooks/twilio/status"}
    assert sent == Sent("twilio", list(twilio.messages)[-1])
    assert sent.provider_message_id.startswith("SM")


def test_twilio_is_asked_for_status_callbacks_only_when_the_install_is_reachable(via_twilio):
    send(via_twilio.with_(public_url=None), "sms", message(link=None))
    (req,) = via_twilio.standin.received
    assert req.form() == {"To": TO, "From": "+15005550006", "Body": "Appointment tomorrow 10:00"}


@pytest.mark.parametrize("suffix,code", [("0000", "21211"), ("0001", "21610"), ("0002", "21614"), ("0003", "21408")])
def test_twilio_refusals_are_permanent_with_twilios_code(via_twilio, suffix, code):
    to = "+9198123" + suffix
    failure = failure_of(via_twilio.settings, "sms", message(to=to))
    assert isinstance(failure, PermanentFailure), failure
    assert failure.code == code and failure.provider == "twilio"
    assert to not in failure.reason and to[1:] not in failure.reason  # Twilio quotes the number; we never keep it


def test_twilio_throttling_reported_with_a_400_is_still_transient(via_twilio):
    via_twilio.standin.fail_next(1, 400, {"code": 20429, "message": "Too Many Requests", "status": 400})
    failure = failure_of(via_twilio.settings, "sms", message())
    assert isinstance(failure, TransientFailure) and failure.code == "20429"


# -- MSG91 -------------------------------------------------------------------------------------


def test_msg91_receives_the_documented_request(via_msg91):
    msg91: Msg91StandIn = via_msg91.standin  # type: ignore[assignment]
    sent = send(via_msg91.settings, "sms", message())
    (req,) = msg91.received
    assert (req.method, req.path) == ("POST", "/api/v5/flow/")
    assert req.headers["authkey"] == msg91.auth_key
    assert req.headers["content-type"] == "application/json"
    assert req.json() == {"template_id": msg91.template_id, "short_url": "0", "recipients": [
        {"mobiles": "919812345678", "body": "Appointment tomorrow 10:00\nhttps://carebase.example/a/1"}]}
    # The id the stand-in gave this very request (not merely the newest: a previous test's slowed
    # request may be recorded after this one, since the stand-in records it after its delay).
    assert sent.provider == "msg91" and msg91.requests_by_id[sent.provider_message_id] == req.json()


@pytest.mark.parametrize("suffix,code", [("0000", "400"), ("0001", "rejected")])  # a 400; a 200 "type": "error"
def test_msg91_refusals_are_permanent(via_msg91, suffix, code):
    failure = failure_of(via_msg91.settings, "sms", message(to="+9198123" + suffix))
    assert isinstance(failure, PermanentFailure), failure
    assert failure.provider == "msg91" and failure.code == code
    assert "9198123" + suffix not in failure.reason


# -- WhatsApp (Meta) ---------------------------------------------------------------------------


def test_whatsapp_receives_the_documented_request(via_meta):
    meta: WhatsAppStandIn = via_meta.standin  # type: ignore[assignment]
    sent = send(via_meta.settings, "whatsapp", message(channel="whatsapp"))
    (req,) = meta.received
    assert (req.method, req.path) == ("POST", f"/v19.0/{meta.phone_number_id}/messages")
    assert req.headers["authorization"] == f"Bearer {meta.token}"
    assert req.json() == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "919812345678",
                          "type": "text", "text": {"body": "Appointment tomorrow 10:00\nhttps://carebase.example/a/1",
                                                   "preview_url": False}}
    assert sent == Sent("meta", list(meta.messages)[-1])
    assert sent.provider_message_id.startswith("wamid.")


@pytest.mark.parametrize("suffix,kind,code", [
    ("0000", PermanentFailure, "131026"),  # not on WhatsApp
    ("0001", PermanentFailure, "131047"),  # outside the 24-hour window
    ("0002", TransientFailure, "130429"),  # a rate limit, though Meta answers it with a 400
    ("0003", TransientFailure, "131000"),  # Meta's own trouble
])
def test_whatsapp_errors_are_classified_by_metas_code(via_meta, suffix, kind, code):
    failure = failure_of(via_meta.settings, "whatsapp", message(to="+9198123" + suffix, channel="whatsapp"))
    assert type(failure) is kind, failure
    assert failure.code == code and failure.provider == "meta"


@pytest.mark.parametrize("code", [131056, 2])
def test_whatsapp_pair_rate_limit_and_temporary_outage_are_transient(via_meta, code):
    via_meta.standin.fail_next(1, 400, {"error": {"message": "try later", "type": "OAuthException", "code": code}})
    failure = failure_of(via_meta.settings, "whatsapp", message(channel="whatsapp"))
    assert isinstance(failure, TransientFailure) and failure.code == str(code)


def test_whatsapp_unknown_phone_number_id_is_permanent(via_meta):
    failure = failure_of(via_meta.with_(whatsapp_phone_number_id="123"), "whatsapp", message(channel="whatsapp"))
    assert isinstance(failure, PermanentFailure) and failure.code == "100"


# -- webhook signatures, as pure functions -----------------------------------------------------

# Twilio's worked example (its webhook-security docs and the validators in its SDKs).
TWILIO_EXAMPLE_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_EXAMPLE_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
                         "From": "+14158675309", "To": "+18005551212"}


def test_twilio_signature_matches_twilios_published_example():
    params = list(TWILIO_EXAMPLE_PARAMS.items())
    assert twilio_channel.signature("12345", TWILIO_EXAMPLE_URL, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio_channel.signature_is_valid("12345", TWILIO_EXAMPLE_URL, reversed(params),
                                             "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


def test_twilio_signature_covers_repeated_parameters_like_twilios_sdks():
    params = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")]
    assert twilio_channel.signature("12345", TWILIO_EXAMPLE_URL, params) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


@pytest.mark.parametrize("token,url,params,header", [
    ("12345", TWILIO_EXAMPLE_URL, {**TWILIO_EXAMPLE_PARAMS, "Digits": "9999"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    ("12345", TWILIO_EXAMPLE_URL + "&x=1", TWILIO_EXAMPLE_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    ("54321", TWILIO_EXAMPLE_URL, TWILIO_EXAMPLE_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    ("12345", TWILIO_EXAMPLE_URL, TWILIO_EXAMPLE_PARAMS, ""),
    ("12345", TWILIO_EXAMPLE_URL, TWILIO_EXAMPLE_PARAMS, None),
    ("12345", TWILIO_EXAMPLE_URL, TWILIO_EXAMPLE_PARAMS, "invalid 王"),
])
def test_twilio_signature_refuses_any_change(token, url, params, header):
    assert not twilio_channel.signature_is_valid(token, url, list(params.items()), header)


def test_meta_signature_is_hmac_sha256_of_the_raw_body():
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    # Computed apart from the code: printf '%s' "$body" | openssl dgst -sha256 -hmac app-secret
    expected = "sha256=d3e4f9da0ce6c71ab3dba55929b8eeeee2455349e534924ead19f98d143e904f"
    assert whatsapp_channel.signature("app-secret", body) == expected
    assert whatsapp_channel.signature_is_valid("app-secret", body, expected)
    assert not whatsapp_channel.signature_is_valid("app-secret", body + b" ", expected)
    assert not whatsapp_channel.signature_is_valid("other-secret", body, expected)
    assert not whatsapp_channel.signature_is_valid("app-secret", body, expected.removeprefix("sha256="))
    assert not whatsapp_channel.signature_is_valid("app-secret", body, None)


def test_msg91_reports_are_read_in_each_of_msg91s_layouts():
    from carebase.notifications.webhooks import _msg91_reports

    v2 = {"data": json.dumps([{"senderId": "CRBASE", "requestId": "r2", "report": [
        {"date": "2024-05-22 10:06:20", "number": "919812345678", "status": "2", "desc": "FAILED",
         "failedReason": "Absent subscriber"}]}])}
    v3 = {"requestId": "r3", "number": "919812345678", "status": "1", "desc": "DELIVERED"}
    new = {"requestId": "r4", "telNum": "919812345678", "status": "Rejected", "failureReason": "DLT mismatch"}
    assert list(_msg91_reports(v2)) == [("r2", "failed", "Absent subscriber")]
    assert list(_msg91_reports(v3)) == [("r3", "delivered", None)]
    assert list(_msg91_reports([new, v3])) == [("r4", "failed", "DLT mismatch"), ("r3", "delivered", None)]
    junk = [{"data": "not json"}, {"status": "1"}, {"requestId": "r5", "status": "42", "desc": "?"}, 7, None]
    assert list(_msg91_reports(junk)) == []


def test_whatsapp_notifications_yield_statuses_only():
    from carebase.notifications.webhooks import _whatsapp_statuses

    payload = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {"messages": [{"from": "919812345678", "text": {"body": "hi"}}]}},
        {"field": "messages", "value": {"statuses": [
            {"id": "wamid.A", "status": "read", "recipient_id": "919812345678"},
            {"id": "wamid.B", "status": "failed", "errors": [{"code": 131047, "title": "Re-engagement message"}]},
            {"id": "wamid.C", "status": "deleted"}, {"status": "sent"}, "junk"]}},
        {"field": "account_update", "value": {"statuses": [{"id": "wamid.D", "status": "sent"}]}}]}]}
    assert list(_whatsapp_statuses(payload)) == [("wamid.A", "read", None),
                                                 ("wamid.B", "failed", "131047 Re-engagement message")]
    assert list(_whatsapp_statuses({"entry": "nope"})) == []
    assert list(_whatsapp_statuses([1, 2])) == []


# -- the webhooks, over HTTP, on the attempts the real adapters made --------------------------

WEBHOOKS = "/api/v1/webhooks"


@dataclass
class Hooks:
    server: ThreadServer
    settings: Settings
    backend: Any

    def url(self, path: str) -> str:
        return self.server.url + WEBHOOKS + path

    @contextmanager
    def without(self, setting: str) -> Iterator[None]:
        """The server as an install without this provider secret (read per request)."""
        set_settings(self.settings.model_copy(update={setting: None}))
        try:
            yield
        finally:
            set_settings(self.settings)


@pytest.fixture(scope="module")
def hooks(backend, twilio, msg91, meta) -> Iterator[Hooks]:
    from carebase import domains
    from carebase.notifications import webhooks

    settings = backend.settings.model_copy(update=provider_settings(
        twilio, msg91, meta, channel_timeout_seconds=10.0, whatsapp_app_secret=SecretStr(meta.app_secret),
        whatsapp_verify_token=SecretStr(uuid.uuid4().hex), msg91_webhook_token=SecretStr(uuid.uuid4().hex)))
    server = ThreadServer(settings)
    if "carebase.notifications.webhooks" not in domains.ROUTERS:  # until the router is registered there
        server.app.include_router(webhooks.router)
    try:
        with server:
            yield Hooks(server, settings, backend)
    finally:
        set_settings(backend.settings)


def sent_through(hooks: Hooks, owner: psycopg.Connection, channel: str, provider: str, to: str = TO) -> str:
    """Deliver one message on ``channel`` with the real adapter, as the worker does; its message id."""
    from carebase.platform import delivery
    from carebase.platform.db import Database

    settings = hooks.settings.model_copy(update={f"{channel}_provider": provider})

    async def go() -> uuid.UUID:
        set_settings(settings)
        db = Database(settings, hooks.backend.urls)
        try:
            async with db.transaction(owner=True) as session:
                delivery_id = await delivery.deliver(
                    session, kind="test.status-webhook", chain=[channel], addresses={channel: to},
                    content=delivery.Content(title="Reminder", body="Your appointment is tomorrow.",
                                             short="Appointment tomorrow 10:00"))
            await delivery.run(db, delivery_id)
            return delivery_id
        finally:
            await db.dispose()
            set_settings(hooks.settings)

    delivery_id = asyncio.run(go())
    rows = owner.execute("SELECT provider, outcome, provider_message_id FROM delivery_attempts "
                         "WHERE delivery_id = %s", (delivery_id,)).fetchall()
    assert len(rows) == 1 and rows[0][:2] == (provider, "sent"), rows
    return rows[0][2]


def provider_status(owner: psycopg.Connection, provider: str, message_id: str) -> tuple[str | None, str | None]:
    return owner.execute("SELECT provider_status, provider_status_detail FROM delivery_attempts "
                         "WHERE provider = %s AND provider_message_id = %s", (provider, message_id)).fetchone()


def test_twilio_status_callbacks_are_recorded_on_the_attempt(hooks, owner, twilio):
    sid = sent_through(hooks, owner, "sms", "twilio")
    assert twilio.messages[sid]["StatusCallback"] == PUBLIC_URL + WEBHOOKS + "/twilio/status"
    r = twilio.send_status(sid, "sent", deliver_to=hooks.url("/twilio/status"))
    assert r.status_code == 200, r.text
    assert provider_status(owner, "twilio", sid) == ("sent", None)
    r = twilio.send_status(sid, "undelivered", deliver_to=hooks.url("/twilio/status"), error_code="30003")
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 1, "matched": 1}
    assert provider_status(owner, "twilio", sid) == ("failed", "Twilio error 30003")


def test_twilio_progress_statuses_are_acknowledged_without_a_change(hooks, owner, twilio):
    sid = sent_through(hooks, owner, "sms", "twilio")
    r = twilio.send_status(sid, "queued", deliver_to=hooks.url("/twilio/status"))
    assert r.status_code == 200 and r.json() == {"received": 0, "matched": 0}
    assert provider_status(owner, "twilio", sid) == (None, None)


@pytest.mark.parametrize("forgery", ["wrong token", "no signature", "tampered", "signed for another URL"])
def test_twilio_callbacks_not_signed_by_twilio_are_refused(hooks, owner, twilio, forgery):
    from tests.standins.twilio import sign

    sid = sent_through(hooks, owner, "sms", "twilio")
    url = hooks.url("/twilio/status")
    if forgery == "wrong token":
        r = twilio.send_status(sid, "delivered", deliver_to=url, auth_token="0" * 32)
    elif forgery == "no signature":
        r = twilio.send_status(sid, "delivered", deliver_to=url, signature="")
    else:
        params = {"AccountSid": twilio.account_sid, "MessageSid": sid, "MessageStatus": "failed"}
        signed_url = url if forgery == "signed for another URL" else PUBLIC_URL + WEBHOOKS + "/twilio/status"
        signature = sign(twilio.auth_token, signed_url, params)
        if forgery == "tampered":
            params["MessageStatus"] = "delivered"
        r = httpx.post(url, data=params, headers={"X-Twilio-Signature": signature})
    assert_problem(r, 403, "bad-signature")
    assert provider_status(owner, "twilio", sid) == (None, None)


def test_a_status_for_an_unknown_message_is_acknowledged(hooks, owner, twilio, meta):
    # Sent straight through the adapters: the providers know these messages, Carebase's log does not.
    sid = send(hooks.settings.model_copy(update={"sms_provider": "twilio"}), "sms", message()).provider_message_id
    r = twilio.send_status(sid, "delivered", deliver_to=hooks.url("/twilio/status"))
    assert r.status_code == 200 and r.json() == {"received": 1, "matched": 0}
    wamid = send(hooks.settings.model_copy(update={"whatsapp_provider": "meta"}), "whatsapp",
                 message(channel="whatsapp")).provider_message_id
    r = meta.send_status(wamid, "delivered", url=hooks.url("/whatsapp"))
    assert r.status_code == 200 and r.json() == {"received": 1, "matched": 0}
    log = hooks.backend.log_file.read_text()
    assert "provider_status_unknown_message" in log and sid in log
    assert TO not in log and TO[1:] not in log  # the numbers the providers echo never reach the log


def test_msg91_reports_are_recorded_on_the_attempt(hooks, owner, msg91):
    token = hooks.settings.msg91_webhook_token.get_secret_value()
    request_id = sent_through(hooks, owner, "sms", "msg91")
    r = msg91.send_report(request_id, url=hooks.url("/msg91/reports"), token=token)  # v3: JSON
    assert r.status_code == 200 and r.json() == {"received": 1, "matched": 1}, r.text
    assert provider_status(owner, "msg91", request_id) == ("delivered", None)
    request_id = sent_through(hooks, owner, "sms", "msg91")
    r = msg91.send_report(request_id, url=hooks.url("/msg91/reports"), token=token, version="v2", status="2",
                          desc="FAILED", failed_reason="Absent subscriber")
    assert r.status_code == 200 and r.json() == {"received": 1, "matched": 1}, r.text
    assert provider_status(owner, "msg91", request_id) == ("failed", "Absent subscriber")


@pytest.mark.parametrize("token", [None, "", "not-the-token"])
def test_msg91_reports_without_the_shared_token_are_refused(hooks, owner, msg91, token):
    request_id = sent_through(hooks, owner, "sms", "msg91")
    r = msg91.send_report(request_id, url=hooks.url("/msg91/reports"), token=token)
    assert_problem(r, 403, "bad-signature")
    assert provider_status(owner, "msg91", request_id) == (None, None)


def test_whatsapp_subscription_handshake(hooks, meta):
    verify = hooks.settings.whatsapp_verify_token.get_secret_value()
    r = meta.subscribe(hooks.url("/whatsapp"), verify, challenge="1158201444")
    assert r.status_code == 200 and r.text == "1158201444"
    assert r.headers["content-type"].startswith("text/plain")
    assert_problem(meta.subscribe(hooks.url("/whatsapp"), "not-" + verify), 403, "bad-verify-token")
    r = httpx.get(hooks.url("/whatsapp"), params={"hub.mode": "unsubscribe", "hub.verify_token": verify,
                                                 "hub.challenge": "1"})
    assert_problem(r, 403, "bad-verify-token")


def test_whatsapp_statuses_are_recorded_on_the_attempt(hooks, owner, meta):
    wamid = sent_through(hooks, owner, "whatsapp", "meta")
    for status in ("sent", "delivered", "read"):
        r = meta.send_status(wamid, status, url=hooks.url("/whatsapp"))
        assert r.status_code == 200 and r.json() == {"received": 1, "matched": 1}, r.text
        assert provider_status(owner, "meta", wamid) == (status, None)
    wamid = sent_through(hooks, owner, "whatsapp", "meta")
    r = meta.send_status(wamid, "failed", url=hooks.url("/whatsapp"),
                         errors=[{"code": 131026, "title": "Message undeliverable"}])
    assert r.status_code == 200, r.text
    assert provider_status(owner, "meta", wamid) == ("failed", "131026 Message undeliverable")


@pytest.mark.parametrize("forgery", ["wrong secret", "no signature", "tampered body"])
def test_whatsapp_notifications_not_signed_by_meta_are_refused(hooks, owner, meta, forgery):
    wamid = sent_through(hooks, owner, "whatsapp", "meta")
    url = hooks.url("/whatsapp")
    if forgery == "wrong secret":
        r = meta.send_status(wamid, "failed", url=url, app_secret="0" * 32)
    elif forgery == "no signature":
        r = meta.send_status(wamid, "failed", url=url, signature="")
    else:
        signature = whatsapp_channel.signature(meta.app_secret, meta.notification(wamid, "delivered"))
        r = meta.send_status(wamid, "failed", url=url, signature=signature)
    assert_problem(r, 403, "bad-signature")
    assert provider_status(owner, "meta", wamid) == (None, None)


@pytest.mark.parametrize("path,setting,call", [
    ("/twilio/status", "twilio_auth_token", lambda url: httpx.post(url, data={"MessageSid": "SM1"})),
    ("/msg91/reports", "msg91_webhook_token", lambda url: httpx.post(url, params={"token": ""}, json={})),
    ("/whatsapp", "whatsapp_app_secret", lambda url: httpx.post(url, json={"object": "whatsapp_business_account"})),
    ("/whatsapp", "whatsapp_verify_token", lambda url: httpx.get(url, params={"hub.mode": "subscribe"})),
])
def test_a_provider_without_its_secret_configured_has_no_webhook(hooks, path, setting, call: Callable):
    with hooks.without(setting):
        r = call(hooks.url(path))
    problem = assert_problem(r, 404, "webhook-not-configured")
    assert f"CAREBASE_{setting.upper()}" in problem["detail"]


def test_webhooks_are_public_and_outside_the_api_description(hooks):
    spec = httpx.get(hooks.server.url + "/api/v1/openapi.json").json()
    assert not [p for p in spec["paths"] if p.startswith(WEBHOOKS)]
    r = httpx.post(hooks.url("/whatsapp"), content=b"{}", headers={"Content-Type": "application/json"})
    assert_problem(r, 403, "bad-signature")  # not 401: no Carebase sign-in is asked of providers
