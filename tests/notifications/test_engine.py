"""The notification engine: templates in the recipient's language, preferences and quiet hours,
the fallback chain with backoff, never twice on one channel, dead letters with every attempt."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from aiosmtpd.controller import Controller
from pydantic import SecretStr

from carebase.notifications import service as notifications
from carebase.platform import delivery
from carebase.platform.db import Database
from carebase.settings import set_settings
from tests.conftest import assert_problem, bearer, free_port, login, run_db, tenant_id_of

PASSWORD = "notify me please"


def _person(client, phone: bool = True) -> dict:
    """A fresh patient account of the demo clinic (e-mail, and a phone unless told otherwise)."""
    email = f"notify-{uuid.uuid4().hex[:10]}@example.org"
    body = {"email": email, "password": PASSWORD, "display_name": "Noti Fy", "tenant": "demo"}
    if phone:
        body["phone"] = f"+9198{uuid.uuid4().int % 10**8:08d}"
    r = client.post("/api/v1/auth/register", json=body)
    assert r.status_code == 201, r.text
    token = login(client, email, PASSWORD)
    return {"id": r.json()["id"], "email": email, "phone": body.get("phone"), "token": token}


def _notify(backend, owner, person, type="order.status", event_key=None, **data) -> bool:
    tenant = tenant_id_of(owner, "demo")
    data = data or {"order_number": "ORD-1", "status_text": "out for delivery"}

    async def go(session):
        return await notifications.notify(session, tenant_id=tenant, account_id=uuid.UUID(person["id"]), type=type,
                                          data=data, event_key=event_key or uuid.uuid4().hex)

    return run_db(backend, go, tenant_id=tenant)


def _delivery(owner, person, type="order.status"):
    return owner.execute("SELECT id, status, chain, step, not_before, reason, delivered_channel FROM deliveries "
                         "WHERE account_id = %s AND kind = %s ORDER BY created_at DESC LIMIT 1",
                         (person["id"], type)).fetchone()


def _attempts(owner, delivery_id) -> list[tuple]:
    return owner.execute("SELECT channel, provider, outcome, error_code FROM delivery_attempts "
                         "WHERE delivery_id = %s ORDER BY started_at, channel", (delivery_id,)).fetchall()


def _run(backend, delivery_id, **settings) -> None:
    """The worker's turn at one delivery, as `delivery.run` job would take it, with ``settings``."""
    changed = backend.settings.model_copy(update=settings)

    async def go():
        set_settings(changed)
        db = Database(changed, backend.urls)
        try:
            await delivery.run(db, delivery_id)
        finally:
            await db.dispose()
            set_settings(backend.settings)

    asyncio.run(go())


def _outbox(owner, recipient) -> list[tuple]:
    return owner.execute("SELECT channel, subject, body FROM outbound_messages WHERE recipient = %s ORDER BY "
                         "created_at", (recipient,)).fetchall()


def test_an_order_update_falls_back_from_push_to_sms_and_is_logged(client, owner, backend):
    person = _person(client)
    assert _notify(backend, owner, person)
    # The in-app notice is there at once; the outside channels wait for the worker.
    notices = client.get("/api/v1/notifications", headers=bearer(person["token"])).json()
    assert [n["title"] for n in notices] == ["Order ORD-1: out for delivery"]
    d = _delivery(owner, person)
    assert d[1] == "queued" and d[2] == ["push", "sms", "email"]
    assert owner.execute("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'delivery.run' "
                         "AND args->>'delivery_id' = %s", (str(d[0]),)).fetchone()[0] == 1
    _run(backend, d[0])
    d = _delivery(owner, person)
    assert d[1] == "delivered" and d[6] == "sms"
    assert _attempts(owner, d[0]) == [("push", "-", "skipped", None), ("sms", "local", "sent", None)]  # no device
    assert _outbox(owner, person["phone"]) == [("sms", None, "Carebase: your order ORD-1 is out for delivery.")]
    # Finished: what it said and to whom is gone from the delivery, the outcome stays.
    row = owner.execute("SELECT addresses, content FROM deliveries WHERE id = %s", (d[0],)).fetchone()
    assert row[0] == {} and row[1] == {"title": "Order ORD-1: out for delivery", "link": None}
    _run(backend, d[0])  # the job again: nothing new
    assert len(_outbox(owner, person["phone"])) == 1


def test_hindi_templates_for_hindi_speakers(client, owner, backend):
    person = _person(client)
    h = bearer(person["token"])
    r = client.put("/api/v1/me/notification-preferences", headers=h, json={"language": "hi"})
    assert r.status_code == 200 and r.json()["language"] == "hi", r.text
    _notify(backend, owner, person, "payment.received", amount="₹450.00", reference="PAY-9", purpose="a consultation")
    notice = client.get("/api/v1/notifications", headers=h).json()[0]
    assert notice["title"] == "भुगतान प्राप्त हुआ: ₹450.00" and "संदर्भ: PAY-9" in notice["body"]
    d = _delivery(owner, person, "payment.received")
    _run(backend, d[0])
    assert _outbox(owner, person["email"])[-1][1] == "भुगतान प्राप्त हुआ: ₹450.00"


def test_preferences_suppress_promotions_but_never_order_updates(client, owner, backend):
    person = _person(client)
    h = bearer(person["token"])
    assert_problem(client.put("/api/v1/me/notification-preferences", headers=h,
                              json={"categories_off": ["orders"]}), 422, "mandatory-category")
    assert_problem(client.put("/api/v1/me/notification-preferences", headers=h,
                              json={"quiet_start": "22:00"}), 422, "bad-quiet-hours")
    r = client.put("/api/v1/me/notification-preferences", headers=h,
                   json={"categories_off": ["promotions"], "channels_off": ["sms", "push"]})
    assert r.status_code == 200 and r.json()["mandatory"] == ["orders", "payments", "security"]
    assert not _notify(backend, owner, person, "promotion", headline="20% off vitamins", text="This week only.")
    promo = _delivery(owner, person, "promotion")
    assert promo[1] == "suppressed" and "promotions switched off" in promo[5]
    assert _notify(backend, owner, person, "health_tip", headline="Drink water", text="Eight glasses a day.")
    assert _delivery(owner, person, "health_tip")[2] == ["email"]  # push switched off
    # Order updates go out on every channel, whatever is switched off.
    assert _notify(backend, owner, person)
    order = _delivery(owner, person)
    assert order[2] == ["push", "sms", "email"]
    titles = [n["title"] for n in client.get("/api/v1/notifications", headers=h).json()]
    assert "20% off vitamins" not in titles and "Order ORD-1: out for delivery" in titles


def test_quiet_hours_hold_the_non_urgent_until_morning(client, owner, backend):
    person = _person(client)
    now = datetime.now(UTC)
    r = client.put("/api/v1/me/notification-preferences", headers=bearer(person["token"]), json={
        "timezone": "UTC", "quiet_start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "quiet_end": (now + timedelta(hours=1)).strftime("%H:%M")})
    assert r.status_code == 200, r.text
    _notify(backend, owner, person, "health_tip", headline="Sleep", text="Seven hours.")
    held = _delivery(owner, person, "health_tip")
    assert held[1] == "waiting" and timedelta(minutes=50) < held[4] - now < timedelta(minutes=61)
    job_at = owner.execute("SELECT scheduled_at FROM procrastinate_jobs WHERE args->>'delivery_id' = %s",
                           (str(held[0]),)).fetchone()[0]
    assert job_at == held[4]
    _run(backend, held[0])  # a stray early run sends nothing
    assert _attempts(owner, held[0]) == []
    # Urgent messages do not wait.
    _notify(backend, owner, person, "security.alert", event_key="new-device", event="A new sign-in")
    assert _delivery(owner, person, "security.alert")[1] == "queued"


def test_transient_failures_back_off_then_fall_back_then_dead_letter(client, owner, backend):
    person = _person(client, phone=False)
    _notify(backend, owner, person, "document.ready", document="Your lab report")
    d = _delivery(owner, person, "document.ready")
    assert d[2] == ["email", "whatsapp"]
    dead_smtp = {"email_provider": "smtp", "smtp_host": "127.0.0.1", "smtp_port": free_port(),
                 "delivery_retries_per_channel": 2, "delivery_retry_base_seconds": 0.0}
    _run(backend, d[0], **dead_smtp)
    d = _delivery(owner, person, "document.ready")
    assert d[1] == "waiting" and d[3] == 0  # first failure: back off, same channel
    jobs = owner.execute("SELECT count(*) FROM procrastinate_jobs WHERE args->>'delivery_id' = %s",
                         (str(d[0]),)).fetchone()[0]
    assert jobs == 2  # the retry is its own job, at the backoff time
    _run(backend, d[0], **dead_smtp)
    _run(backend, d[0], **dead_smtp)
    d = _delivery(owner, person, "document.ready")
    assert d[1] == "dead", d
    assert _attempts(owner, d[0]) == [("email", "smtp", "transient", "unreachable")] * 3 + [
        ("whatsapp", "-", "skipped", None)]
    # The admin sees the dead letter with every attempt.
    admin = bearer(login(client, "admin@demo.carebase.local"))
    dead = client.get("/api/v1/notifications/deliveries", params={"status": "dead"}, headers=admin).json()
    mine = [x for x in dead if x["id"] == str(d[0])][0]
    assert [a["outcome"] for a in mine["attempts"]] == ["transient", "transient", "transient", "skipped"]
    assert client.get("/api/v1/notifications/deliveries", headers=bearer(person["token"])).status_code == 403
    stats = client.get("/api/v1/notifications/channel-stats", headers=admin).json()
    smtp = [s for s in stats if s["channel"] == "email" and s["provider"] == "smtp"][0]
    assert smtp["attempts"] >= 3 and smtp["rate"] is not None


def test_real_smtp_delivery_and_a_crash_mid_call_is_not_sent_twice(client, owner, backend):
    received = []

    class Inbox:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            received.append(envelope.content)
            return "250 OK"

    port = free_port()
    smtp = Controller(Inbox(), hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        person = _person(client)
        settings = {"email_provider": "smtp", "smtp_host": "127.0.0.1", "smtp_port": port}
        _notify(backend, owner, person, "document.ready", document="Your discharge summary")
        d = _delivery(owner, person, "document.ready")
        _run(backend, d[0], **settings)
        assert len(received) == 1 and b"Your discharge summary is ready" in received[0]
        assert _attempts(owner, d[0]) == [("email", "smtp", "sent", None)]
        # A worker that died during the provider call leaves a "sending" try behind: the next run
        # cannot know whether the message went out, so it moves on instead of sending it again.
        _notify(backend, owner, person, "document.ready", document="Your X-ray")
        d = _delivery(owner, person, "document.ready")
        owner.execute("INSERT INTO delivery_attempts (id, delivery_id, tenant_id, channel, provider, outcome) "
                      "SELECT gen_random_uuid(), id, tenant_id, 'email', 'smtp', 'sending' FROM deliveries "
                      "WHERE id = %s", (d[0],))
        owner.execute("UPDATE deliveries SET addresses = %s WHERE id = %s",
                      ('{"email": "%s", "whatsapp": "%s"}' % (person["email"], person["phone"]), d[0]))
        _run(backend, d[0], **settings)
        assert len(received) == 1  # not sent again by e-mail
        d = _delivery(owner, person, "document.ready")
        assert d[1] == "delivered" and d[6] == "whatsapp"
        assert [a[2] for a in _attempts(owner, d[0])] == ["unknown", "sent"]
    finally:
        smtp.stop()


def test_one_notice_per_event_and_own_notices_only(client, owner, backend):
    person = _person(client)
    assert _notify(backend, owner, person, event_key="order-7-shipped")
    assert not _notify(backend, owner, person, event_key="order-7-shipped")  # a sender that ran twice
    assert owner.execute("SELECT count(*) FROM deliveries WHERE account_id = %s", (person["id"],)).fetchone()[0] == 1
    h = bearer(person["token"])
    assert client.get("/api/v1/notifications/unread-count", headers=h).json() == {"unread": 1}
    notice = client.get("/api/v1/notifications", headers=h).json()[0]
    other = _person(client)
    assert client.delete(f"/api/v1/notifications/{notice['id']}", headers=bearer(other["token"])).status_code == 404
    assert client.patch("/api/v1/notifications/mark-all-read", headers=h).json() == {"unread": 0}
    assert client.get("/api/v1/notifications/unread-count", headers=h).json() == {"unread": 0}
    assert client.delete(f"/api/v1/notifications/{notice['id']}", headers=h).status_code == 204
    assert client.get("/api/v1/notifications", headers=h).json() == []


def test_rate_limit_suppresses_optional_messages_only(client, owner, backend):
    person = _person(client)
    backend.settings.notification_rate_per_hour = 2
    try:
        results = [_notify(backend, owner, person, "health_tip", headline=f"Tip {i}", text="…") for i in range(3)]
        assert results == [True, True, False]
        assert "in the last hour" in _delivery(owner, person, "health_tip")[5]
        assert _notify(backend, owner, person)  # order updates are never rate-limited
    finally:
        backend.settings.notification_rate_per_hour = 20


def test_push_devices_are_the_person_s_own(client, owner, backend):
    person = _person(client)
    h = bearer(person["token"])
    r = client.post("/api/v1/me/push-devices", headers=h, json={
        "kind": "webpush", "endpoint": f"https://push.example/{uuid.uuid4().hex}",
        "keys": {"p256dh": "BPub", "auth": "secret"}})
    assert r.status_code == 201, r.text
    assert_problem(client.post("/api/v1/me/push-devices", headers=h, json={"kind": "webpush",
                                                                           "endpoint": "https://x.example/1"}),
                   422, "bad-subscription")
    # With a device, the local push channel takes the order update first.
    _notify(backend, owner, person)
    d = _delivery(owner, person)
    _run(backend, d[0])
    assert _delivery(owner, person)[6] == "push"
    other = _person(client)
    assert client.delete(f"/api/v1/me/push-devices/{r.json()['id']}", headers=bearer(other["token"])).status_code == 404
    assert client.delete(f"/api/v1/me/push-devices/{r.json()['id']}", headers=h).status_code == 204


def test_web_push_through_the_engine_and_a_gone_browser_is_forgotten(client, owner, backend):
    from tests.standins.webpush import PushService, new_vapid_keys

    private, public = new_vapid_keys()
    with PushService() as service:
        person = _person(client)
        h = bearer(person["token"])
        browser = service.subscribe(public)
        r = client.post("/api/v1/me/push-devices", headers=h, json=browser.device)
        assert r.status_code == 201, r.text
        push = {"push_provider": "remote", "vapid_private_key": SecretStr(private), "vapid_public_key": public,
                "vapid_subject": "mailto:ops@carebase.test"}
        _notify(backend, owner, person, "appointment.reminder", visit_type="office visit", hours_ahead=2,
                when="Monday 30 November at 10:00", timezone="Asia/Kolkata", place="Main clinic")
        d = _delivery(owner, person, "appointment.reminder")
        _run(backend, d[0], **push)
        assert _delivery(owner, person, "appointment.reminder")[6] == "push"
        payload = browser.decrypt(service.pushed[-1].body)
        assert payload["title"] == "Your office visit is in 2 hours"
        attempt = owner.execute("SELECT provider, outcome, provider_message_id, latency_ms FROM delivery_attempts "
                                "WHERE delivery_id = %s", (d[0],)).fetchone()
        assert attempt[:2] == ("webpush", "sent") and attempt[2] and attempt[3] is not None
        # The browser unsubscribes: the next push is refused as gone, the device is forgotten and
        # the chain carries on to SMS.
        service.unsubscribe(browser)
        _notify(backend, owner, person)
        d = _delivery(owner, person)
        _run(backend, d[0], **push)
        d = _delivery(owner, person)
        assert d[1] == "delivered" and d[6] == "sms"
        assert [a[:3] for a in _attempts(owner, d[0])] == [("push", "webpush", "failed"), ("sms", "local", "sent")]
        assert owner.execute("SELECT count(*) FROM push_devices WHERE account_id = %s",
                             (person["id"],)).fetchone()[0] == 0


def test_twilio_transient_errors_back_off_and_a_timeout_moves_on_without_a_second_copy(client, owner, backend):
    from tests.standins.twilio import TwilioStandIn

    with TwilioStandIn() as twilio:
        sms = {"sms_provider": "twilio", "twilio_base_url": twilio.url, "twilio_account_sid": twilio.account_sid,
               "twilio_auth_token": SecretStr(twilio.auth_token), "twilio_from": "+15005550006",
               "delivery_retry_base_seconds": 0.0, "channel_timeout_seconds": 1.0}
        person = _person(client)
        # A 503 is retried on SMS after a backoff, then Twilio takes it.
        twilio.fail_next(1, status=503, body={"code": 20503, "message": "Service unavailable", "status": 503})
        _notify(backend, owner, person)
        d = _delivery(owner, person)
        _run(backend, d[0], **sms)
        assert _delivery(owner, person)[1] == "waiting"
        _run(backend, d[0], **sms)
        d = _delivery(owner, person)
        assert d[1] == "delivered" and d[6] == "sms"
        assert [a[1:3] for a in _attempts(owner, d[0])] == [("-", "skipped"), ("twilio", "transient"),
                                                           ("twilio", "sent")]
        sent = len([r for r in twilio.received if r.path.endswith("/Messages.json")])
        # Twilio answers too late: it may have sent the text, so SMS is not tried again; e-mail is.
        twilio.slow_next(1, seconds=2.5)
        _notify(backend, owner, person)
        d = _delivery(owner, person)
        _run(backend, d[0], **sms)
        d = _delivery(owner, person)
        assert d[1] == "delivered" and d[6] == "email"
        assert [a[1:4] for a in _attempts(owner, d[0])] == [("-", "skipped", None), ("twilio", "unknown", "timeout"),
                                                           ("local", "sent", None)]
        assert len([r for r in twilio.received if r.path.endswith("/Messages.json")]) == sent + 1
