"""Payments through the API and the sandbox gateway: paying an order (card, wallet, split), signed
webhooks (bad signatures, replays, out-of-order news), refunds within what was captured, the
double-entry ledger under concurrency, OTP-on-delivery escrow release and payouts."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import pytest

from tests.conftest import assert_problem, bearer, login, run_db, tenant_id_of
from tests.encounters.test_export import pdf_text
from tests.pharmacy import test_pharmacy
from tests.pharmacy.test_pharmacy import (  # noqa: F401  (fixtures: the shop's pharmacist, a patient of its own)
    checkout,
    demo_pharmacy,
    patient,
    pharmacist,
    shopper,
)

_keys = iter(range(10**9))


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"test-{uuid.uuid4()}-{next(_keys)}"}


def add(client, pharmacist, **over) -> dict:
    """A medicine of its own kind: the pharmacy tests' searches for paracetamol must not find these."""
    return test_pharmacy.add(client, pharmacist, **{"name": f"Paytestol {uuid.uuid4().hex[:6]}",
                                                    "generic_name": "paytestol", **over})


def online_order(client, pharmacist, patient, *, price=4500, quantity=2, fulfilment="delivery") -> dict:
    pharmacy_id = demo_pharmacy(client, pharmacist)
    m = add(client, pharmacist, stock=10, price_minor=price, mrp_minor=price + 500)
    r = client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": m["id"], "quantity": quantity})
    assert r.status_code == 200, r.text
    extra = {"delivery_address": "4 Park Street, Bengaluru", "contact_phone": "+919800000001"} \
        if fulfilment == "delivery" else {}
    r = checkout(client, patient, pharmacy_id, fulfilment=fulfilment, payment_method="online", **extra)
    assert r.status_code == 201, r.text
    return r.json()


def intent(client, patient, order_id, **over) -> dict:
    r = client.post("/api/v1/payments/create-intent", headers={**patient, **key()},
                    json={"purpose": "order", "reference_id": order_id, **over})
    assert r.status_code == 201, r.text
    return r.json()


def pay_on_sandbox(client, payment: dict, outcome: str = "pay") -> str:
    """The payer on the hosted checkout page: its form, then the redirect back to Carebase."""
    page = client.get(payment["checkout_url"])
    assert page.status_code == 200 and "Sandbox" in page.text, page.text[:300]
    r = client.post(payment["checkout_url"], data={"outcome": outcome}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return r.headers["location"]


def order_of(client, patient, order_id) -> dict:
    return client.get(f"/api/v1/patient/orders/{order_id}", headers=patient).json()


def books(backend) -> list[str]:
    from carebase.payments import ledger

    return run_db(backend, ledger.check)


def held_for(owner, order_id) -> int:
    return owner.execute("SELECT coalesce(sum(e.amount_minor), 0) FROM ledger_entries e JOIN ledger_accounts a "
                         "ON a.id = e.ledger_account_id WHERE a.kind = 'escrow' AND e.reference = %s",
                         (str(order_id),)).fetchone()[0]


def wallet_balance(client, patient, currency="INR") -> int:
    return client.get("/api/v1/wallet", headers=patient, params={"currency": currency}).json()["balance_minor"]


def top_up(client, patient, amount: int) -> dict:
    r = client.post("/api/v1/wallet/top-up", headers={**patient, **key()}, json={"amount_minor": amount})
    assert r.status_code == 201, r.text
    payment = r.json()
    assert pay_on_sandbox(client, payment).startswith("/portal/wallet?payment=succeeded")
    return payment


def delivery_code(owner, order_number: str) -> str:
    body = owner.execute("SELECT body FROM notifications WHERE kind = 'order.delivery_code' AND title LIKE %s "
                         "ORDER BY created_at DESC LIMIT 1", (f"%{order_number}",)).fetchone()
    assert body is not None, "no delivery code was sent"
    return re.search(r"code is (\d{6})", body[0]).group(1)


# -- paying an order -------------------------------------------------------------------------------


def test_a_card_payment_waits_in_escrow_until_the_delivery_code_then_is_paid_out(backend, client, owner, pharmacist,
                                                                                  patient):
    from carebase.payments import service as payments

    order = online_order(client, pharmacist, patient, price=4500, quantity=2)
    oid, total = order["id"], order["total_minor"]
    # Money-moving POSTs need an Idempotency-Key.
    assert_problem(client.post("/api/v1/payments/create-intent", headers=patient,
                               json={"purpose": "order", "reference_id": oid}), 428, "idempotency-key-required")
    # Not paid yet: the pharmacy cannot pack it.
    client.post(f"/api/v1/pharmacy/orders/{oid}/accept", headers=pharmacist)
    assert_problem(client.post(f"/api/v1/pharmacy/orders/{oid}/pack", headers=pharmacist), 409, "awaiting-payment")

    k = key()
    r = client.post("/api/v1/payments/create-intent", headers={**patient, **k},
                    json={"purpose": "order", "reference_id": oid})
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["status"] == "created" and first["amount_minor"] == total and first["wallet_minor"] == 0
    assert first["provider"] == "sandbox" and first["checkout_url"].startswith("/pay/sandbox/sbx_pi_")
    again = client.post("/api/v1/payments/create-intent", headers={**patient, **k},
                        json={"purpose": "order", "reference_id": oid})
    assert again.json()["id"] == first["id"] and again.headers.get("idempotent-replayed") == "true"

    # The card is declined: nothing moves, the order stays unpaid, the attempt is recorded.
    assert pay_on_sandbox(client, first, "fail").endswith("?payment=failed")
    failed = client.get(f"/api/v1/payments/{first['id']}", headers=patient).json()
    assert failed["status"] == "failed" and "declined" in failed["failure_reason"]
    assert order_of(client, patient, oid)["payment_status"] == "pending" and held_for(owner, oid) == 0

    # A second try goes through.
    second = intent(client, patient, oid)
    assert second["id"] != first["id"]
    assert pay_on_sandbox(client, second).endswith("?payment=succeeded")
    paid = order_of(client, patient, oid)
    assert paid["payment_status"] == "paid" and paid["expires_at"] is None
    assert held_for(owner, oid) == total
    assert_problem(client.post("/api/v1/payments/create-intent", headers={**patient, **key()},
                               json={"purpose": "order", "reference_id": oid}), 409, "already-paid")
    history = client.get("/api/v1/payments/transactions", headers=patient).json()
    mine = [(t["type"], t["status"]) for t in history if t["payment_id"] in (first["id"], second["id"])]
    assert ("order_payment", "failed") in mine and ("order_payment", "success") in mine
    assert all(t["provider_ref"] for t in history if t["payment_id"] == second["id"])
    merchant = client.get("/api/v1/payments/transactions", headers=pharmacist, params={"scope": "merchant"}).json()
    assert second["id"] in {t["payment_id"] for t in merchant}

    assert client.post(f"/api/v1/pharmacy/orders/{oid}/pack", headers=pharmacist).status_code == 200
    before = {b["currency"]: b for b in client.get("/api/v1/merchant/balance", headers=pharmacist).json()}["INR"]
    to_the_door_after_pack(backend, client, owner, pharmacist, order)
    # The pharmacy cannot mark it delivered by itself: the money needs the patient's code.
    assert_problem(client.patch(f"/api/v1/pharmacy/orders/{oid}/status", headers=pharmacist,
                                json={"status": "delivered"}), 409, "delivery-code-required")
    code = delivery_code(owner, order["number"])
    wrong = "000000" if code != "000000" else "111111"
    r = client.post(f"/api/v1/pharmacy/orders/{oid}/delivery-code", headers=pharmacist, json={"code": wrong})
    assert assert_problem(r, 422, "wrong-code")["attempts_left"] == 4
    assert owner.execute("SELECT attempts FROM pharmacy_delivery_otps WHERE order_id = %s", (oid,)).fetchone()[0] == 1
    assert order_of(client, patient, oid)["status"] == "out_for_delivery" and held_for(owner, oid) == total
    # The patient's own account cannot enter it for the courier.
    assert client.post(f"/api/v1/pharmacy/orders/{oid}/delivery-code", headers=patient,
                       json={"code": code}).status_code == 403
    r = client.post(f"/api/v1/pharmacy/orders/{oid}/delivery-code", headers=pharmacist, json={"code": code})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    assert [e["status"] for e in r.json()["events"]][-2:] == ["delivered", "completed"]
    assert held_for(owner, oid) == 0
    # The sale's receipt, numbered per pharmacy, for the patient and the pharmacy.
    receipt = r.json()["receipt_number"]
    assert re.fullmatch(r"RCT-\d{4}-\d{6}", receipt)
    for url, who in ((f"/api/v1/patient/orders/{oid}/receipt.pdf", patient),
                     (f"/api/v1/pharmacy/orders/{oid}/receipt.pdf", pharmacist)):
        pdf = client.get(url, headers=who)
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        text = pdf_text(pdf.content)
        assert receipt in text and order["number"] in text and f"INR {total // 100:,}.{total % 100:02d}" in text
    assert_problem(client.get(f"/api/v1/patient/orders/{oid}/receipt.pdf",
                              headers=bearer(login(client, "pharmacist@demo2.carebase.local"))), 403, "forbidden")
    numbers = sorted(int(n.rsplit("-", 1)[1]) for (n,) in owner.execute(
        "SELECT receipt_number FROM pharmacy_orders WHERE tenant_id = (SELECT tenant_id FROM pharmacy_orders "
        "WHERE id = %s) AND receipt_number IS NOT NULL", (oid,)).fetchall())
    assert numbers == list(range(1, len(numbers) + 1))  # no gaps
    fee = total * 200 // 10_000
    after = {b["currency"]: b for b in client.get("/api/v1/merchant/balance", headers=pharmacist).json()}["INR"]
    assert after["payable_minor"] - before["payable_minor"] == total - fee
    assert after["escrow_minor"] == before["escrow_minor"] - total
    assert owner.execute("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'payments.payout' AND "
                         "queueing_lock = %s", (f"payout:{tenant_id_of(owner, 'demo')}",)).fetchone()[0] >= 1
    # The payout job pays the whole payable out in one batch.
    tenant = tenant_id_of(owner, "demo")
    done = run_db(backend, lambda s: payments.payout(s, tenant), owner=False, tenant_id=tenant)
    assert sum(p.amount_minor for p in done if p.currency == "INR") == after["payable_minor"]
    paid_out = {b["currency"]: b for b in client.get("/api/v1/merchant/balance", headers=pharmacist).json()}["INR"]
    assert paid_out["payable_minor"] == 0 and paid_out["payouts"][0]["amount_minor"] == after["payable_minor"]
    assert books(backend) == []


def to_the_door_after_pack(backend, client, owner, pharmacist, order):
    from carebase.pharmacy import service

    oid = order["id"]
    r = client.post(f"/api/v1/pharmacy/orders/{oid}/dispatch", headers=pharmacist)
    assert r.status_code == 200, r.text
    tenant = tenant_id_of(owner, "demo")

    def step():
        return run_db(backend, lambda s: service.local_courier_step(s, uuid.UUID(oid)), owner=False, tenant_id=tenant)

    assert step() == "out_for_delivery"
    assert step() is None  # at the door: it waits for the patient's code
    args = owner.execute("SELECT args FROM procrastinate_jobs WHERE task_name = 'pharmacy.send_delivery_code' "
                         "AND args->>'order_id' = %s", (oid,)).fetchone()[0]
    assert run_db(backend, lambda s: service.send_delivery_code(s, uuid.UUID(oid)), owner=False,
                  tenant_id=uuid.UUID(args["tenant_id"]), account_id=uuid.UUID(args["account_id"])) is True
    # Run twice (a retried job), the first code stands.
    assert run_db(backend, lambda s: service.send_delivery_code(s, uuid.UUID(oid)), owner=False,
                  tenant_id=uuid.UUID(args["tenant_id"]), account_id=uuid.UUID(args["account_id"])) is False
    stored = owner.execute("SELECT code_hash, sends FROM pharmacy_delivery_otps WHERE order_id = %s", (oid,)).fetchone()
    code = delivery_code(owner, order["number"])
    assert code.encode() not in bytes(stored[0]) and stored[1] == 1  # kept as an HMAC, never in clear


def test_the_delivery_code_has_a_cool_down_an_expiry_and_five_tries(backend, client, owner, pharmacist, patient):
    order = online_order(client, pharmacist, patient, price=1000, quantity=1)
    oid = order["id"]
    assert pay_on_sandbox(client, intent(client, patient, oid)).endswith("succeeded")
    for action in ("accept", "pack"):
        assert client.post(f"/api/v1/pharmacy/orders/{oid}/{action}", headers=pharmacist).status_code == 200
    to_the_door_after_pack(backend, client, owner, pharmacist, order)
    old = delivery_code(owner, order["number"])
    # A resend within the cool-down is refused, with when to try again.
    r = client.post(f"/api/v1/patient/orders/{oid}/delivery-code/resend", headers=patient)
    assert assert_problem(r, 429, "resend-too-soon") and int(r.headers["retry-after"]) > 0
    owner.execute("UPDATE pharmacy_delivery_otps SET sent_at = now() - interval '2 minutes' WHERE order_id = %s", (oid,))
    r = client.post(f"/api/v1/patient/orders/{oid}/delivery-code/resend", headers=patient)
    assert r.status_code == 202, r.text
    new = delivery_code(owner, order["number"])
    if new != old:  # one in a million they coincide
        assert_problem(client.post(f"/api/v1/pharmacy/orders/{oid}/delivery-code", headers=pharmacist,
                                   json={"code": old}), 422, "wrong-code")
        owner.execute("UPDATE pharmacy_delivery_otps SET attempts = 0 WHERE order_id = %s", (oid,))
    # Expired: refused even when right.
    owner.execute("UPDATE pharmacy_delivery_otps SET expires_at = now() - interval '1 second' WHERE order_id = %s",
                  (oid,))
    assert_problem(client.post(f"/api/v1/pharmacy/orders/{oid}/delivery-code", headers=pharmacist,
                               json={"code": new}), 409, "code-expired")
    owner.execute("UPDATE pharmacy_delivery_otps SET expires_at = now() + interval '10 minutes' WHERE order_id = %s",
                  (oid,))
    wrong = "000000" if new != "000000" else "111111"
    for left in (4, 3, 2, 1, 0):
        r = client.post(f"/api/v1/pharmacy/orders/{oid}/delivery-code", headers=pharmacist, json={"code": wrong})
        assert assert_problem(r, 422, "wrong-code")["attempts_left"] == left
    # Five wrong: even the right code is refused now, and nothing moved.
    assert_problem(client.post(f"/api/v1/pharmacy/orders/{oid}/delivery-code", headers=pharmacist,
                               json={"code": new}), 429, "too-many-attempts")
    assert order_of(client, patient, oid)["status"] == "out_for_delivery"
    assert held_for(owner, oid) == order["total_minor"]
    assert client.post(f"/api/v1/pharmacy/orders/{oid}/delivery-code", headers=pharmacist,
                       json={"code": "12345"}).status_code == 422  # six digits


# -- webhooks ---------------------------------------------------------------------------------------


def _event(ref: str, type_: str, amount: int, **obj) -> bytes:
    return json.dumps({"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": type_, "created": int(time.time()),
                       "data": {"object": {"id": ref, "object": "payment_intent", "amount": amount,
                                           "amount_received": amount, "currency": "inr", **obj}}}).encode()


def _signed(body: bytes, at: int | None = None, secret: bytes | None = None) -> dict[str, str]:
    from carebase.payments import gateways
    from carebase.settings import get_settings

    return {"Sandbox-Signature": gateways.stripe_style_signature(
        secret or gateways.webhook_secret(get_settings()), body, at), "Content-Type": "application/json"}


def test_webhooks_are_signed_processed_once_and_never_move_backwards(backend, client, owner, patient):
    r = client.post("/api/v1/wallet/top-up", headers={**patient, **key()}, json={"amount_minor": 50_000})
    assert r.status_code == 201, r.text
    pay = r.json()
    ref, start = pay["provider_ref"], wallet_balance(client, patient)
    url = "/api/v1/payments/webhook/sandbox"
    body = _event(ref, "payment_intent.succeeded", 50_000, latest_charge="sbx_ch_test")

    def receipts() -> int:
        return owner.execute("SELECT count(*) FROM payment_webhook_events").fetchone()[0]

    n = receipts()
    # No signature, a wrong one, one from another secret, a stale one: 400 and nothing written.
    assert_problem(client.post(url, content=body, headers={"Content-Type": "application/json"}), 400, "bad-signature")
    bad = _signed(body)
    bad["Sandbox-Signature"] = bad["Sandbox-Signature"][:-4] + "0000"
    assert_problem(client.post(url, content=body, headers=bad), 400, "bad-signature")
    assert_problem(client.post(url, content=body, headers=_signed(body, secret=b"not the secret")), 400,
                   "bad-signature")
    assert_problem(client.post(url, content=body, headers=_signed(body, at=int(time.time()) - 3600)), 400,
                   "stale-signature")
    assert_problem(client.post(url, content=b"{not json", headers=_signed(b"{not json")), 400, "bad-webhook")
    assert receipts() == n and wallet_balance(client, patient) == start

    # The real one, then its replay: credited once.
    r = client.post(url, content=body, headers=_signed(body))
    assert r.status_code == 200 and r.json()["outcome"] == "succeeded", r.text
    r = client.post(url, content=body, headers=_signed(body))
    assert r.status_code == 200 and r.json()["outcome"] == "duplicate"
    assert wallet_balance(client, patient) == start + 50_000
    # Late or out-of-order news changes nothing: a failure after success, a 'processing' after it.
    late = _event(ref, "payment_intent.payment_failed", 50_000, last_payment_error={"message": "late"})
    assert client.post(url, content=late, headers=_signed(late)).json()["outcome"] == "ignored: payment is succeeded"
    slow = _event(ref, "payment_intent.processing", 50_000)
    assert client.post(url, content=slow, headers=_signed(slow)).json()["outcome"] == "ignored: payment is succeeded"
    assert client.get(f"/api/v1/payments/{pay['id']}", headers=patient).json()["status"] == "succeeded"
    assert wallet_balance(client, patient) == start + 50_000
    # An event for a payment we never made is acknowledged (providers retry anything else).
    stranger = _event("sbx_pi_nobody", "payment_intent.succeeded", 100)
    assert client.post(url, content=stranger, headers=_signed(stranger)).json()["outcome"] == "unknown payment"
    # A success for the wrong amount is not credited: left for reconciliation.
    r = client.post("/api/v1/wallet/top-up", headers={**patient, **key()}, json={"amount_minor": 20_000})
    wrong = _event(r.json()["provider_ref"], "payment_intent.succeeded", 2_000)
    assert client.post(url, content=wrong, headers=_signed(wrong)).json()["outcome"].startswith("amount mismatch")
    assert wallet_balance(client, patient) == start + 50_000
    lines = client.get("/api/v1/wallet", headers=patient).json()["lines"]
    assert lines[0]["amount_minor"] == 50_000 and lines[0]["balance_after"] == start + 50_000
    assert books(backend) == []
    sandbox_took(owner, ref)


def sandbox_took(owner, ref: str) -> None:
    """Events made by hand here, not by the sandbox's page: its books must say it took the money
    too, or the reconciliation test finds (rightly) a payment the provider never saw."""
    owner.execute("UPDATE sandbox_gateway_charges SET status = 'succeeded' WHERE ref = %s", (ref,))


def test_concurrent_replays_of_one_webhook_credit_once(backend, client, owner, patient):
    import httpx

    r = client.post("/api/v1/wallet/top-up", headers={**patient, **key()}, json={"amount_minor": 7_000})
    ref, start = r.json()["provider_ref"], wallet_balance(client, patient)
    body = _event(ref, "payment_intent.succeeded", 7_000)
    headers = _signed(body)

    async def fire():
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as c:
            return await asyncio.gather(*(c.post("/api/v1/payments/webhook/sandbox", content=body, headers=headers)
                                          for _ in range(20)))

    answers = asyncio.run(fire())
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    assert sorted(a.json()["outcome"] for a in answers) == ["duplicate"] * 19 + ["succeeded"]
    assert wallet_balance(client, patient) == start + 7_000
    sandbox_took(owner, ref)


# -- the wallet -------------------------------------------------------------------------------------


def test_the_wallet_pays_an_order_alone_or_beside_the_card(backend, client, owner, pharmacist, patient):
    start = wallet_balance(client, patient)
    top_up(client, patient, 10_000)
    assert wallet_balance(client, patient) == start + 10_000
    # The whole order from the wallet: paid at once, no checkout page.
    small = online_order(client, pharmacist, patient, price=3000, quantity=1, fulfilment="pickup")
    p = intent(client, patient, small["id"], wallet_minor=3000)
    assert p["provider"] == "wallet" and p["status"] == "succeeded" and p["checkout_url"] is None
    assert order_of(client, patient, small["id"])["payment_status"] == "paid"
    assert wallet_balance(client, patient) == start + 7_000
    # More than the wallet holds, asked explicitly: refused, nothing taken.
    w = start + 7_000
    big = online_order(client, pharmacist, patient, price=w + 2_000, quantity=1, fulfilment="pickup")
    r = client.post("/api/v1/payments/create-intent", headers={**patient, **key()},
                    json={"purpose": "order", "reference_id": big["id"], "wallet_minor": w + 2_000})
    assert assert_problem(r, 409, "insufficient-funds")["balance_minor"] == w
    # Split: what the wallet holds, the rest by card.
    split = intent(client, patient, big["id"], use_wallet=True)
    assert split["wallet_minor"] == w and split["amount_minor"] == 2_000
    assert wallet_balance(client, patient) == 0
    assert order_of(client, patient, big["id"])["payment_status"] == "pending"  # the card part is still to come
    assert pay_on_sandbox(client, split).endswith("succeeded")
    assert order_of(client, patient, big["id"])["payment_status"] == "paid"
    assert held_for(owner, big["id"]) == w + 2_000
    # A pickup paid online: handing it over completes it and releases its escrow.
    for action in ("accept", "pack", "complete"):
        r = client.post(f"/api/v1/pharmacy/orders/{small['id']}/{action}", headers=pharmacist)
        assert r.status_code == 200, r.text
    assert held_for(owner, small["id"]) == 0

    # Cancelling the split-paid order refunds both parts, each where it came from (by a job in the
    # pharmacy's organization, whose escrow holds the money).
    r = client.patch(f"/api/v1/patient/orders/{big['id']}/cancel", headers=patient, json={"reason": "changed my mind"})
    assert r.status_code == 200, r.text
    job = owner.execute("SELECT args FROM procrastinate_jobs WHERE task_name = 'payments.refund_reference' AND "
                        "args->>'reference_id' = %s", (big["id"],)).fetchone()
    assert job is not None
    refund_job(backend, job[0])
    refund_job(backend, job[0])  # a retried job refunds nothing twice
    assert wallet_balance(client, patient) == start + 7_000
    assert held_for(owner, big["id"]) == 0
    assert order_of(client, patient, big["id"])["payment_status"] == "refunded"
    charge = owner.execute("SELECT refunded_minor FROM sandbox_gateway_charges WHERE ref = %s",
                           (split["provider_ref"],)).fetchone()[0]
    assert charge == split["amount_minor"]  # the card part went back through the provider
    kinds = [t["type"] for t in client.get("/api/v1/payments/transactions", headers=patient).json()
             if t["payment_id"] == split["id"]]
    assert kinds.count("refund") == 1 and "wallet_payment" in kinds
    assert books(backend) == []


def refund_job(backend, args: dict) -> int:
    from carebase.payments import service as payments

    return run_db(backend, lambda s: payments.refund_reference(s, args["purpose"], uuid.UUID(args["reference_id"]),
                                                               args["reason"]),
                  owner=False, tenant_id=uuid.UUID(args["tenant_id"]))


def test_refunds_are_partial_or_full_and_never_more_than_captured(backend, client, owner, pharmacist, patient):
    order = online_order(client, pharmacist, patient, price=5000, quantity=2, fulfilment="pickup")
    p = intent(client, patient, order["id"])
    pay_on_sandbox(client, p)
    refund = {"payment_id": p["id"], "amount_minor": 3000, "reason": "one pack was damaged"}
    assert_problem(client.post("/api/v1/payments/refund", headers=pharmacist, json=refund), 428,
                   "idempotency-key-required")
    assert_problem(client.post("/api/v1/payments/refund", headers={**patient, **key()}, json=refund), 403,
                   "forbidden")
    other = bearer(login(client, "pharmacist@demo2.carebase.local"))
    assert_problem(client.post("/api/v1/payments/refund", headers={**other, **key()}, json=refund), 404,
                   "payment-not-found")
    assert client.get(f"/api/v1/payments/{p['id']}", headers=other).status_code == 404
    r = client.post("/api/v1/payments/refund", headers={**pharmacist, **key()}, json=refund)
    assert r.status_code == 201, r.text
    assert r.json()["amount_minor"] == 3000 and r.json()["provider_ref"].startswith("sbx_re_")
    too_much = client.post("/api/v1/payments/refund", headers={**pharmacist, **key()},
                           json={**refund, "amount_minor": 7001})
    assert assert_problem(too_much, 409, "refund-exceeds-capture")["refundable_minor"] == 7000
    assert_problem(client.post("/api/v1/payments/refund", headers={**pharmacist, **key()},
                               json={**refund, "amount_minor": 0}), 422, "validation-failed")
    r = client.post("/api/v1/payments/refund", headers={**pharmacist, **key()},
                    json={"payment_id": p["id"], "reason": "order cancelled by phone"})
    assert r.status_code == 201 and r.json()["total_minor"] == 7000, r.text
    assert_problem(client.post("/api/v1/payments/refund", headers={**pharmacist, **key()}, json=refund), 409,
                   "refund-exceeds-capture")
    got = client.get(f"/api/v1/payments/{p['id']}", headers=patient).json()
    assert got["refunded_minor"] == got["captured_minor"] == 10_000
    assert owner.execute("SELECT refunded_minor FROM sandbox_gateway_charges WHERE ref = %s",
                         (p["provider_ref"],)).fetchone()[0] == 10_000
    assert order_of(client, patient, order["id"])["payment_status"] == "refunded"
    assert books(backend) == []


def test_bad_payment_requests_are_refused_and_write_nothing(client, owner, pharmacist, patient):
    online = online_order(client, pharmacist, patient, price=1000, quantity=1, fulfilment="pickup")
    before = owner.execute("SELECT count(*) FROM payments").fetchone()[0]
    r = client.post("/api/v1/patient/cart/items", headers=patient,
                    json={"medicine_id": add(client, pharmacist, stock=3)["id"], "quantity": 1})
    cash = checkout(client, patient, demo_pharmacy(client, pharmacist)).json()
    assert_problem(client.post("/api/v1/payments/create-intent", headers={**patient, **key()},
                               json={"purpose": "order", "reference_id": cash["id"]}), 409, "not-paid-online")
    assert_problem(client.post("/api/v1/payments/create-intent", headers={**patient, **key()},
                               json={"purpose": "order", "reference_id": str(uuid.uuid4())}), 404, "order-not-found")
    assert_problem(client.post("/api/v1/payments/create-intent", headers={**patient, **key()},
                               json={"purpose": "order", "reference_id": online["id"], "wallet_minor": 10**6}), 422,
                   "bad-wallet-amount")
    assert client.post("/api/v1/payments/create-intent", headers={**patient, **key()},
                       json={"purpose": "order", "reference_id": online["id"], "wallet_minor": 1.5}).status_code == 422
    assert client.post("/api/v1/wallet/top-up", headers={**patient, **key()},
                       json={"amount_minor": -5}).status_code == 422
    assert_problem(client.post("/api/v1/wallet/top-up", headers={**patient, **key()},
                               json={"amount_minor": 10**9}), 422, "bad-amount")
    # Someone else's order: not theirs to pay.
    staff = bearer(login(client, "doctor@demo.carebase.local"))
    assert client.post("/api/v1/payments/create-intent", headers={**staff, **key()},
                       json={"purpose": "order", "reference_id": online["id"]}).status_code == 403
    assert owner.execute("SELECT count(*) FROM payments").fetchone()[0] == before
    assert r.status_code == 200


# -- the ledger under concurrency ---------------------------------------------------------------------


def test_100_concurrent_debits_against_a_wallet_that_can_pay_10(backend, client, owner, pharmacist):
    """Each debit pays a different order of the same patient from the wallet, in its own
    transaction as the app role: exactly ten go through, and the books still balance."""
    from carebase.payments import ledger
    from carebase.payments import service as payments
    from carebase.pharmacy import service as pharmacy
    from carebase.platform.authz import Principal
    from carebase.platform.db import Database
    from carebase.platform.errors import DomainError
    from carebase.settings import set_settings

    tenant = tenant_id_of(owner, "demo")
    pharmacy_id = uuid.UUID(demo_pharmacy(client, pharmacist))
    m = add(client, pharmacist, stock=200, price_minor=1000, mrp_minor=1000, low_stock_threshold=0)
    account = uuid.uuid4()
    who = Principal.of(account, tenant, ["patient"])

    async def go():
        set_settings(backend.settings)
        db = Database(backend.settings, backend.urls)
        try:
            async with db.transaction(tenant, account) as s:  # ten orders' worth: 10 × ₹10.00
                clearing = await ledger.account(s, ledger.CLEARING, "INR")
                wallet = await ledger.account(s, ledger.WALLET, "INR", owner_account=account)
                await ledger.post(s, "topup", [(clearing, -10_000), (wallet, 10_000)], memo="test top-up")
            order_ids = []
            for _ in range(100):
                async with db.transaction(tenant, account) as s:
                    await pharmacy.add_to_cart(s, who, uuid.UUID(m["id"]), 1)
                    order = await pharmacy.checkout(s, who, pharmacy_id=pharmacy_id, fulfilment="pickup",
                                                    contact_name="Concurrent Payer", payment_method="online")
                    order_ids.append(order.id)

            async def pay(order_id):
                try:
                    async with db.transaction(tenant, account) as s:
                        await payments.create_intent(s, who, purpose="order", reference_id=order_id,
                                                     wallet_minor=1000)
                    return "ok"
                except DomainError as exc:
                    return exc.code

            results = await asyncio.gather(*(pay(o) for o in order_ids))
            # Close them again: the pharmacy's queue (the oldest 100 open orders) is other tests' too.
            for o in order_ids:
                async with db.transaction(tenant, account) as s:
                    await pharmacy.move(s, who, o, "cancelled", note="test over")
            return results
        finally:
            await db.dispose()

    results = asyncio.run(go())
    assert results.count("ok") == 10, sorted(set(results))
    assert results.count("insufficient-funds") == 90
    balance = owner.execute("SELECT balance_minor FROM ledger_accounts WHERE kind = 'patient_wallet' AND "
                            "owner_account_id = %s", (account,)).fetchone()[0]
    assert balance == 0
    lines = owner.execute("SELECT amount_minor, balance_after FROM ledger_entries e JOIN ledger_accounts a ON "
                          "a.id = e.ledger_account_id WHERE a.owner_account_id = %s ORDER BY e.id",
                          (account,)).fetchall()
    assert [b for _, b in lines] == [10_000 - 1000 * i for i in range(11)]
    assert owner.execute("SELECT count(*) FROM pharmacy_orders WHERE patient_account_id = %s AND payment_status = "
                         "'paid'", (account,)).fetchone()[0] == 10
    assert books(backend) == []


def test_money_is_taken_only_from_ones_own_accounts(backend, owner):
    """The database itself refuses a journal that takes from someone else's wallet, one that does
    not balance, and one that would leave a wallet below zero."""
    from carebase.payments import ledger
    from carebase.platform.errors import Conflict, Forbidden

    tenant = tenant_id_of(owner, "demo")
    alice, mallory = uuid.uuid4(), uuid.uuid4()

    async def fund(s):
        clearing = await ledger.account(s, ledger.CLEARING, "INR")
        wallet = await ledger.account(s, ledger.WALLET, "INR", owner_account=alice)
        await ledger.post(s, "topup", [(clearing, -500), (wallet, 500)])
        return clearing, wallet

    clearing, wallet = run_db(backend, fund, owner=False, tenant_id=tenant, account_id=alice)

    async def steal(s):
        await ledger.post(s, "theft", [(wallet, -500), (clearing, 500)])

    with pytest.raises(Forbidden):
        run_db(backend, steal, owner=False, tenant_id=tenant, account_id=mallory)

    async def unbalanced(s):
        await ledger.post(s, "oops", [(wallet, -100), (clearing, 50)])

    import psycopg

    with pytest.raises(Exception) as err:
        run_db(backend, unbalanced, owner=False, tenant_id=tenant, account_id=alice)
    assert "does not balance" in str(err.value)

    async def overdraw(s):
        await ledger.post(s, "spend", [(wallet, -501), (clearing, 501)])

    with pytest.raises(Conflict):
        run_db(backend, overdraw, owner=False, tenant_id=tenant, account_id=alice)
    # The app role cannot write the ledger's tables at all, only call the posting function.
    with psycopg.connect(backend.app_dsn) as app:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("UPDATE ledger_accounts SET balance_minor = 1000000000")
    assert owner.execute("SELECT balance_minor FROM ledger_accounts WHERE id = %s", (wallet,)).fetchone()[0] == 500
    assert books(backend) == []


# -- reconciliation -----------------------------------------------------------------------------------


def test_reconciliation_reports_where_the_provider_and_we_disagree(backend, client, owner, patient):
    from carebase.payments import service as payments
    from carebase.platform.authz import Principal
    from tests.conftest import carebase_cli

    top_up(client, patient, 1_500)  # paid, and both books say so
    r = client.post("/api/v1/wallet/top-up", headers={**patient, **key()}, json={"amount_minor": 2_500})
    ghost = r.json()["provider_ref"]
    done = carebase_cli(backend, "reconcile-payments")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "books agree" in done.stdout
    # The provider took money we never heard of (its webhook was lost).
    owner.execute("UPDATE sandbox_gateway_charges SET status = 'succeeded' WHERE ref = %s", (ghost,))
    try:
        done = carebase_cli(backend, "reconcile-payments")
        assert done.returncode == 1 and f"MISMATCH  {ghost}" in done.stdout, done.stdout + done.stderr
        # Operators read the reports; a clinic's admin may not.
        reports = run_db(backend, lambda s: payments.reconciliation_reports(
            s, Principal.of(uuid.uuid4(), None, ["superadmin"]), limit=2))
        assert [m.provider_ref for m in reports[0].mismatches] == [ghost] and reports[1].mismatches == []
        admin = bearer(login(client, "admin@demo.carebase.local"))
        assert_problem(client.get("/api/v1/payments/reconciliation", headers=admin), 403, "forbidden")
    finally:
        owner.execute("UPDATE sandbox_gateway_charges SET status = 'requires_payment' WHERE ref = %s", (ghost,))


def test_the_worker_reconciles_by_itself(backend, owner):
    from tests.conftest import WorkerProcess, wait_for

    started = owner.execute("SELECT now()").fetchone()[0]
    # Workers started by earlier tests already ran it and queued the next run for tomorrow: a day
    # passes (that run falls due), and this worker must pick it up and queue the one after.
    owner.execute("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE task_name = 'payments.reconcile' "
                  "AND status = 'todo'")
    worker = WorkerProcess(backend)
    try:
        wait_for(lambda: owner.execute("SELECT count(*) FROM payment_reconciliations WHERE ran_at > %s",
                                       (started,)).fetchone()[0] >= 1, timeout=60, message="a reconciliation run")
    finally:
        worker.stop()
    # The next run is queued for tomorrow, once.
    assert owner.execute("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'payments.reconcile' AND "
                         "status = 'todo' AND scheduled_at > now() + interval '23 hours'").fetchone()[0] == 1


def test_an_order_paid_twice_gives_the_excess_back(backend, client, owner, pharmacist, patient):
    """Two checkout tabs: the first payment is replaced by a second, both are paid. The order is
    paid once; the late one's money goes back (by a job in the pharmacy's organization)."""
    from carebase.payments import service as payments

    order = online_order(client, pharmacist, patient, price=4000, quantity=1, fulfilment="pickup")
    first = intent(client, patient, order["id"])
    top_up(client, patient, 1_000)
    second = intent(client, patient, order["id"], wallet_minor=1_000)  # replaces the first
    assert client.get(f"/api/v1/payments/{first['id']}", headers=patient).json()["status"] == "cancelled"
    pay_on_sandbox(client, second)
    assert order_of(client, patient, order["id"])["payment_status"] == "paid"
    pay_on_sandbox(client, first)  # the slow tab
    assert held_for(owner, order["id"]) == 2 * order["total_minor"]  # for now it holds both
    job = owner.execute("SELECT args FROM procrastinate_jobs WHERE task_name = 'payments.refund_payment' AND "
                        "args->>'payment_id' = %s", (first["id"],)).fetchone()[0]
    assert job["amount_minor"] == order["total_minor"]

    def run():
        return run_db(backend, lambda s: payments.refund_excess(s, uuid.UUID(job["payment_id"]), job["amount_minor"],
                                                                job["reason"]),
                      owner=False, tenant_id=uuid.UUID(job["tenant_id"]))

    assert run() == order["total_minor"]
    assert run() == 0  # twice: nothing more
    assert held_for(owner, order["id"]) == order["total_minor"]
    assert order_of(client, patient, order["id"])["payment_status"] == "paid"
    assert books(backend) == []


def test_the_revenue_report_adds_up_per_day(backend, client, owner, pharmacist, patient):
    """Gross takings, refunds and the provider's fee of a delivered order, today, for the pharmacy
    (its admin and pharmacists), and the same figures on the portal page."""
    def today() -> dict:
        r = client.get("/api/v1/payments/revenue", headers=pharmacist, params={"days": 1})
        assert r.status_code == 200, r.text
        rows = [d for d in r.json() if d["currency"] == "INR"]
        return rows[0] if rows else {"gross_minor": 0, "refunds_minor": 0, "fees_minor": 0, "net_minor": 0,
                                     "payments": 0}

    before = today()
    order = online_order(client, pharmacist, patient, price=6000, quantity=1, fulfilment="pickup")
    p = intent(client, patient, order["id"])
    pay_on_sandbox(client, p)
    r = client.post("/api/v1/payments/refund", headers={**pharmacist, **key()},
                    json={"payment_id": p["id"], "amount_minor": 1000, "reason": "a strip short"})
    assert r.status_code == 201, r.text
    for action in ("accept", "pack", "complete"):  # handed over: the escrow is released, the fee charged
        assert client.post(f"/api/v1/pharmacy/orders/{order['id']}/{action}", headers=pharmacist).status_code == 200
    after = today()
    fee = 6000 * 200 // 10_000
    assert after["gross_minor"] - before["gross_minor"] == 6000
    assert after["refunds_minor"] - before["refunds_minor"] == 1000
    assert after["fees_minor"] - before["fees_minor"] == fee
    assert after["net_minor"] - before["net_minor"] == 6000 - 1000 - fee
    assert after["payments"] - before["payments"] == 1
    admin = bearer(login(client, "admin@demo.carebase.local"))
    assert client.get("/api/v1/payments/revenue", headers=admin).status_code == 200
    assert_problem(client.get("/api/v1/payments/revenue", headers=patient), 403, "forbidden")
    assert client.get("/api/v1/payments/revenue", headers=pharmacist, params={"days": 0}).status_code == 422
    page = client.get("/portal/revenue", headers=pharmacist)
    assert page.status_code == 200 and "revenue-chart-INR" in page.text and after["day"] in page.text
