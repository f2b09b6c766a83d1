"""The push channel's remote adapter against a local Web Push service and a local FCM."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid
from pydantic import SecretStr

from carebase.platform.channels import Message, PermanentFailure, Sent, TransientFailure, adapter_for
from carebase.settings import Settings
from tests.standins.fcm import FcmService, fcm_error
from tests.standins.webpush import PushService, b64url, new_vapid_keys

VAPID_PRIVATE, VAPID_PUBLIC = new_vapid_keys()
SUBJECT = "mailto:operations@carebase.test"
LINK = "https://carebase.test/portal/appointments/42"


@pytest.fixture
def push_service():
    with PushService() as service:
        yield service


@pytest.fixture
def fcm():
    with FcmService() as service:
        yield service


@pytest.fixture
def settings(push_service, fcm, tmp_path) -> Settings:
    return Settings(home=tmp_path, push_provider="remote", vapid_private_key=VAPID_PRIVATE,
                    vapid_public_key=VAPID_PUBLIC, vapid_subject=SUBJECT,
                    fcm_service_account_file=fcm.write_service_account(tmp_path / "service-account.json"),
                    fcm_project_id=fcm.project_id, fcm_base_url=fcm.url, fcm_token_url=fcm.token_url,
                    channel_timeout_seconds=3)


def message(*devices) -> Message:
    return Message(channel="push", to=list(devices), title="Appointment tomorrow",
                   body="Your appointment with Dr Rao is tomorrow at 10:30 at Demo Clinic.",
                   short="Dr Rao tomorrow 10:30, Demo Clinic", link=LINK, reference="d-1:push")


def send(settings: Settings, msg: Message) -> Sent:
    # A fresh adapter each time, as the delivery engine builds one per delivery.
    return asyncio.run(adapter_for(settings, "push").send(msg, None))


def refused(settings: Settings, msg: Message, kind: type[Exception]):
    with pytest.raises(kind) as info:
        send(settings, msg)
    return info.value


def fcm_device(token: str = "fcm-registration-token-1") -> dict:
    return {"kind": "fcm", "token": token}


# -- Web Push -------------------------------------------------------------------------------------


def _raw_vapid_key(pem: str) -> str:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    return b64url(key.private_numbers().private_value.to_bytes(32, "big"))


@pytest.mark.parametrize("key_form", ["pem", "raw"])
def test_webpush_delivers_a_payload_only_the_browser_can_read(settings, push_service, key_form):
    if key_form == "raw":
        settings = settings.model_copy(update={"vapid_private_key": SecretStr(_raw_vapid_key(VAPID_PRIVATE))})
    browser = push_service.subscribe(VAPID_PUBLIC)

    sent = send(settings, message(browser.device))

    assert sent.provider == "webpush"
    assert sent.provider_message_id.startswith(f"{push_service.url}/message/")
    assert sent.gone == ()
    [pushed] = push_service.pushed
    assert b"Dr Rao" not in pushed.body
    assert browser.decrypt(pushed.body) == {"title": "Appointment tomorrow",
                                            "body": "Dr Rao tomorrow 10:30, Demo Clinic", "url": LINK}
    # The service verified the VAPID token (signature with k, audience, expiry) before taking it.
    assert pushed.vapid_key == VAPID_PUBLIC
    assert pushed.claims["sub"] == SUBJECT
    assert pushed.claims["aud"] == push_service.url
    assert time.time() < pushed.claims["exp"] <= time.time() + 24 * 3600
    assert pushed.ttl > 0


def test_push_service_verifies_vapid(settings, push_service):
    browser = push_service.subscribe(VAPID_PUBLIC)
    other_private, _ = new_vapid_keys()
    claims = {"sub": SUBJECT, "aud": push_service.url, "exp": int(time.time()) + 3600}
    signed_by_other = Vapid.from_pem(other_private.encode()).sign(claims)["Authorization"]
    token = signed_by_other.split("t=")[1].split(",")[0]
    expired = Vapid.from_pem(VAPID_PRIVATE.encode()).sign({**claims, "exp": int(time.time()) - 60})["Authorization"]
    headers = {"TTL": "60", "Content-Encoding": "aes128gcm"}
    for authorization in (f"vapid t={token}, k={VAPID_PUBLIC}", expired, ""):
        r = httpx.post(browser.endpoint, content=b"x" * 120, headers={**headers, "Authorization": authorization})
        assert r.status_code == 401, (authorization, r.text)

    # Signed correctly, but not with the key the browser subscribed with.
    failure = refused(settings.model_copy(update={"vapid_private_key": SecretStr(other_private)}), message(browser.device),
                      PermanentFailure)
    assert failure.code == "403" and failure.gone == ()
    assert push_service.pushed == []


def test_expired_subscription_is_reported_gone(settings, push_service):
    browser = push_service.subscribe(VAPID_PUBLIC)
    push_service.unsubscribe(browser)

    failure = refused(settings, message(browser.device), PermanentFailure)

    assert failure.code == "410"
    assert failure.gone == (browser.endpoint,)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_webpush_overload_is_transient(settings, push_service, status):
    browser = push_service.subscribe(VAPID_PUBLIC)
    push_service.fail_next(status=status)

    failure = refused(settings, message(browser.device), TransientFailure)

    assert failure.code == str(status) and failure.gone == ()
    assert send(settings, message(browser.device)).provider == "webpush"


def test_webpush_timeout_is_transient(settings, push_service):
    browser = push_service.subscribe(VAPID_PUBLIC)
    push_service.slow_next(seconds=1.5)

    failure = refused(settings.model_copy(update={"channel_timeout_seconds": 0.3}), message(browser.device),
                      TransientFailure)

    assert failure.code == "ReadTimeout"


# -- FCM ------------------------------------------------------------------------------------------


def test_fcm_token_is_exchanged_once_and_reused(settings, fcm):
    first = send(settings, message(fcm_device()))
    second = send(settings, message(fcm_device()))

    assert fcm.grants == 1
    assert [r.path for r in fcm.received].count("/token") == 1
    assert first.provider == second.provider == "fcm"
    assert first.provider_message_id.startswith(f"projects/{fcm.project_id}/messages/")
    assert first.provider_message_id != second.provider_message_id
    assert fcm.delivered[0] == {"token": "fcm-registration-token-1",
                                "notification": {"title": "Appointment tomorrow",
                                                 "body": "Dr Rao tomorrow 10:30, Demo Clinic"},
                                "data": {"url": LINK}}


def test_fcm_revoked_access_token_is_replaced_once(settings, fcm):
    send(settings, message(fcm_device()))
    fcm.revoke_tokens()

    assert send(settings, message(fcm_device())).provider == "fcm"
    assert fcm.grants == 2
    assert len(fcm.delivered) == 2


def test_fcm_unregistered_token_is_reported_gone(settings, fcm):
    fcm.unregistered.add("uninstalled-app")

    failure = refused(settings, message(fcm_device("uninstalled-app")), PermanentFailure)

    assert failure.code == "UNREGISTERED"
    assert failure.gone == ("uninstalled-app",)


def test_fcm_invalid_argument_is_permanent_but_keeps_the_device(settings, fcm):
    fcm.malformed.add("not-a-token")

    failure = refused(settings, message(fcm_device("not-a-token")), PermanentFailure)

    assert failure.code == "INVALID_ARGUMENT"
    assert failure.gone == ()


@pytest.mark.parametrize(("status", "fcm_code"), [("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
                                                  ("INTERNAL", "INTERNAL"), ("UNAVAILABLE", "UNAVAILABLE")])
def test_fcm_overload_is_transient(settings, fcm, status, fcm_code):
    send(settings, message(fcm_device()))  # the access token is cached: the next request is the send
    body = fcm_error(status, "try later", fcm_code=fcm_code)
    fcm.fail_next(status=body["error"]["code"], body=body)

    failure = refused(settings, message(fcm_device()), TransientFailure)

    assert failure.code == fcm_code


def test_fcm_unreachable_token_endpoint_is_transient(settings, fcm):
    fcm.slow_next(seconds=1.5)

    failure = refused(settings.model_copy(update={"channel_timeout_seconds": 0.3}), message(fcm_device()),
                      TransientFailure)

    assert failure.code == "ReadTimeout"
    assert fcm.delivered == []


def test_fcm_rejected_service_account_is_permanent(settings, fcm, tmp_path):
    impostor = FcmService(fcm.project_id)  # same project, a key FCM's token endpoint never saw
    account = impostor.write_service_account(tmp_path / "impostor.json")

    failure = refused(settings.model_copy(update={"fcm_service_account_file": account}), message(fcm_device()),
                      PermanentFailure)

    assert failure.code == "invalid_grant"
    assert fcm.grants == 0


# -- every device of the account ------------------------------------------------------------------


def test_one_device_accepting_is_enough_and_the_gone_one_is_reported(settings, push_service, fcm):
    old_browser = push_service.subscribe(VAPID_PUBLIC)
    push_service.unsubscribe(old_browser)

    sent = send(settings, message(old_browser.device, fcm_device()))

    assert sent.provider == "fcm"
    assert sent.gone == (old_browser.endpoint,)
    assert len(fcm.delivered) == 1


def test_every_device_gets_it(settings, push_service, fcm):
    laptop, phone_browser = push_service.subscribe(VAPID_PUBLIC), push_service.subscribe(VAPID_PUBLIC)

    sent = send(settings, message(laptop.device, fcm_device(), phone_browser.device))

    assert sent.provider == "webpush+fcm"
    assert len(sent.provider_message_id.split(",")) == 3
    assert {p.subscription_id for p in push_service.pushed} == {laptop.id, phone_browser.id}
    assert len(fcm.delivered) == 1


def test_nothing_accepted_is_transient_if_any_device_may_still_take_it(settings, push_service, fcm):
    old_browser = push_service.subscribe(VAPID_PUBLIC)
    push_service.unsubscribe(old_browser)
    send(settings, message(fcm_device()))
    fcm.fail_next(status=503, body=fcm_error("UNAVAILABLE", "try later", fcm_code="UNAVAILABLE"))

    failure = refused(settings, message(old_browser.device, fcm_device()), TransientFailure)

    assert failure.provider == "fcm"
    assert failure.gone == (old_browser.endpoint,)


def test_no_usable_device_is_permanent(settings):
    assert refused(settings, message(), PermanentFailure).reason == "no push device"
    failure = refused(settings, message({"kind": "pager", "number": "1"}, {"kind": "webpush"}), PermanentFailure)
    assert "unknown push device kind 'pager'" in failure.reason
    assert "without a valid endpoint" in failure.reason
    assert failure.gone == ()


def test_unconfigured_provider_is_permanent(settings, push_service):
    browser = push_service.subscribe(VAPID_PUBLIC)
    bare = settings.model_copy(update={"vapid_private_key": None, "fcm_service_account_file": None})

    failure = refused(bare, message(browser.device, fcm_device()), PermanentFailure)

    assert "CAREBASE_VAPID_PRIVATE_KEY" in failure.reason
    assert "CAREBASE_FCM_SERVICE_ACCOUNT_FILE" in failure.reason
