"""The Stripe and Razorpay adapters, through their official SDKs, against local stand-ins that
speak each provider's HTTP API and sign webhooks with each provider's scheme; and reconciliation
of our books against each provider's list."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from carebase.settings import set_settings
from tests.conftest import assert_problem, run_db
from tests.payments.test_payments import books, held_for, key, online_order, order_of, patient, pharmacist  # noqa: F401
from tests.pharmacy.test_pharmacy import shopper  # noqa: F401
from tests.standins.razorpay import RazorpayStandIn
from tests.standins.stripe import StripeStandIn


@pytest.fixture(scope="module")
def stripe_api():
    with StripeStandIn() as standin:
        yield standin


@pytest.fixture(scope="module")
def razorpay_api():
    with RazorpayStandIn() as standin:
        yield standin


@contextmanager
def provider(backend, **over):
    settings = backend.settings.model_copy(update=over)
    set_settings(settings)
    try:
        yield settings
    finally:
        set_settings(backend.settings)


def stripe_settings(api: StripeStandIn) -> dict:
    return {"payment_provider": "stripe", "stripe_api_key": SecretStr(api.api_key),
            "stripe_webhook_secret": SecretStr(api.webhook_secret), "stripe_api_base": api.url}


def razorpay_settings(api: RazorpayStandIn) -> dict:
    return {"payment_provider": "razorpay", "razorpay_key_id": api.key_id,
            "razorpay_key_secret": SecretStr(api.key_secret), "razorpay_webhook_secret": SecretStr(api.webhook_secret),
            "razorpay_api_base": api.url}


def post_webhook(server, name: str, signed: tuple[bytes, dict[str, str]]) -> httpx.Response:
    body, headers = signed
    return httpx.post(f"{server.url}/api/v1/payments/webhook/{name}", content=body, headers=headers)


def reconcile(backend, settings, name: str):
    from carebase.payments import service as payments

    return run_db(backend, lambda s: payments.reconcile(s, provider=name,
                                                        since=datetime.now(UTC) - timedelta(minutes=10)),
                  settings=settings)


def test_stripe_payment_intents_webhooks_refunds_and_reconciliation(backend, server, client, owner, pharmacist,
                                                                    patient, stripe_api):
    stripe_api.reset()
    with provider(backend, **stripe_settings(stripe_api)) as settings:
        order = online_order(client, pharmacist, patient, price=2500, quantity=2)
        oid, total = order["id"], order["total_minor"]
        # Stripe down: 503, nothing created here.
        stripe_api.fail_next(1, 500, {"error": {"type": "api_error", "message": "down"}})
        before = owner.execute("SELECT count(*) FROM payments").fetchone()[0]
        assert_problem(client.post("/api/v1/payments/create-intent", headers={**patient, **key()},
                                   json={"purpose": "order", "reference_id": oid}), 503, "provider-unavailable")
        assert owner.execute("SELECT count(*) FROM payments").fetchone()[0] == before

        r = client.post("/api/v1/payments/create-intent", headers={**patient, **key()},
                        json={"purpose": "order", "reference_id": oid})
        assert r.status_code == 201, r.text
        p = r.json()
        assert p["provider"] == "stripe" and p["provider_ref"].startswith("pi_") and p["checkout_url"] is None
        assert p["client_secret"].startswith(p["provider_ref"] + "_secret_")
        sent = stripe_api.received[-1]
        assert sent.headers["authorization"] == f"Bearer {stripe_api.api_key}" and sent.headers["idempotency-key"]
        assert f"amount={total}" in sent.body.decode() and "currency=inr" in sent.body.decode()

        # Forged, stale and unsigned events are refused; nothing changes.
        paid = stripe_api.pay(p["provider_ref"])
        forged = stripe_api.event("payment_intent.succeeded", stripe_api.intents[p["provider_ref"]],
                                  secret="whsec_not_it")
        assert_problem(post_webhook(server, "stripe", forged), 400, "bad-signature")
        stale = stripe_api.event("payment_intent.succeeded", stripe_api.intents[p["provider_ref"]],
                                 at=int(datetime.now(UTC).timestamp()) - 3600)
        assert_problem(post_webhook(server, "stripe", stale), 400, "bad-signature")
        assert_problem(post_webhook(server, "stripe", (paid[0], {"Content-Type": "application/json"})), 400,
                       "bad-signature")
        assert order_of(client, patient, oid)["payment_status"] == "pending"
        # The real one: paid; its replay: nothing.
        assert post_webhook(server, "stripe", paid).json()["outcome"] == "succeeded"
        assert post_webhook(server, "stripe", paid).json()["outcome"] == "duplicate"
        assert order_of(client, patient, oid)["payment_status"] == "paid" and held_for(owner, oid) == total

        # A partial refund goes through Stripe, keyed by our refund's id.
        r = client.post("/api/v1/payments/refund", headers={**pharmacist, **key()},
                        json={"payment_id": p["id"], "amount_minor": 1000, "reason": "one pack short"})
        assert r.status_code == 201, r.text
        assert r.json()["provider_ref"].startswith("re_")
        assert stripe_api.intents[p["provider_ref"]]["amount_refunded"] == 1000
        assert stripe_api.received[-1].headers["idempotency-key"] == f"refund-{r.json()['id']}"

        # A declined card on another order: failed, and the order stays unpaid.
        other = online_order(client, pharmacist, patient, price=1500, quantity=1)
        q = client.post("/api/v1/payments/create-intent", headers={**patient, **key()},
                        json={"purpose": "order", "reference_id": other["id"]}).json()
        assert post_webhook(server, "stripe", stripe_api.decline(q["provider_ref"])).json()["outcome"] == "failed"
        assert client.get(f"/api/v1/payments/{q['id']}", headers=patient).json()["failure_reason"] == \
            "Your card was declined."

        # Our books agree with Stripe's list; a payment Stripe took that we never heard of is reported.
        assert reconcile(backend, settings, "stripe") == []
        stripe_api.intents[q["provider_ref"]].update(status="succeeded", amount_received=1500,
                                                     latest_charge="ch_unheard")
        found = reconcile(backend, settings, "stripe")
        assert [m.provider_ref for m in found] == [q["provider_ref"]] and "failed" in found[0].ours
    assert books(backend) == []


def test_razorpay_orders_checkout_signature_webhooks_and_refunds(backend, server, client, owner, pharmacist, patient,
                                                                 razorpay_api):
    razorpay_api.reset()
    with provider(backend, **razorpay_settings(razorpay_api)) as settings:
        order = online_order(client, pharmacist, patient, price=3000, quantity=1)
        oid, total = order["id"], order["total_minor"]
        r = client.post("/api/v1/payments/create-intent", headers={**patient, **key()},
                        json={"purpose": "order", "reference_id": oid})
        assert r.status_code == 201, r.text
        p = r.json()
        assert p["provider"] == "razorpay" and p["provider_ref"].startswith("order_")
        sent = razorpay_api.received[-1].json()
        assert sent["amount"] == total and sent["currency"] == "INR" and sent["notes"]["payment_id"] == p["id"]

        checkout, captured = razorpay_api.pay(p["provider_ref"])
        # A signature that does not match is refused.
        bad = {"payment_id": p["id"], "razorpay_payment_id": checkout["razorpay_payment_id"],
               "razorpay_signature": "0" * 64}
        assert_problem(client.post("/api/v1/payments/confirm", headers=patient, json=bad), 400, "bad-signature")
        assert order_of(client, patient, oid)["payment_status"] == "pending"
        ok = client.post("/api/v1/payments/confirm", headers=patient, json={
            "payment_id": p["id"], "razorpay_payment_id": checkout["razorpay_payment_id"],
            "razorpay_signature": checkout["razorpay_signature"]})
        assert ok.status_code == 200 and ok.json()["status"] == "succeeded", ok.text
        assert order_of(client, patient, oid)["payment_status"] == "paid" and held_for(owner, oid) == total
        # Razorpay's own webhook arrives later: forged refused, real one changes nothing more.
        body, headers = captured
        assert_problem(post_webhook(server, "razorpay", (body, {**headers, "X-Razorpay-Signature": "f" * 64})), 400,
                       "bad-signature")
        assert post_webhook(server, "razorpay", captured).json()["outcome"] == "ignored: already succeeded"

        # Refunds go to the captured payment (pay_…).
        r = client.post("/api/v1/payments/refund", headers={**pharmacist, **key()},
                        json={"payment_id": p["id"], "amount_minor": 1200, "reason": "strip short"})
        assert r.status_code == 201 and r.json()["provider_ref"].startswith("rfnd_"), r.text
        assert razorpay_api.payments[checkout["razorpay_payment_id"]]["amount_refunded"] == 1200
        # Razorpay says that refund failed after all: the money goes back into escrow.
        refund_ref = r.json()["provider_ref"]
        failed = razorpay_api.webhook("refund.failed", {
            "refund": {"entity": {"id": refund_ref, "payment_id": checkout["razorpay_payment_id"], "amount": 1200,
                                  "currency": "INR", "status": "failed"}}})
        escrow_before = held_for(owner, oid)
        assert post_webhook(server, "razorpay", failed).json()["outcome"] == "refund failed: money back in escrow"
        assert held_for(owner, oid) == escrow_before + 1200
        assert client.get(f"/api/v1/payments/{p['id']}", headers=patient).json()["refunded_minor"] == 0

        # A failed UPI payment on another order, told by webhook only.
        other = online_order(client, pharmacist, patient, price=2000, quantity=1)
        q = client.post("/api/v1/payments/create-intent", headers={**patient, **key()},
                        json={"purpose": "order", "reference_id": other["id"]}).json()
        _, failed_pay = razorpay_api.pay(q["provider_ref"], fail=True)
        assert post_webhook(server, "razorpay", failed_pay).json()["outcome"] == "failed"
        # The stand-in really refunded 1200 while we put it back in escrow: reconciliation says so.
        found = reconcile(backend, settings, "razorpay")
        assert [m.provider_ref for m in found] == [p["provider_ref"]], found
    assert books(backend) == []


def test_a_provider_that_is_not_set_up_has_no_webhook(server):
    r = httpx.post(f"{server.url}/api/v1/payments/webhook/stripe", content=b"{}",
                   headers={"Stripe-Signature": "t=1,v1=00"})
    assert_problem(r, 404, "webhook-not-configured")
    assert_problem(httpx.post(f"{server.url}/api/v1/payments/webhook/paypal", content=b"{}"), 404, "unknown-provider")
