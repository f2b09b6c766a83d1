"""A pharmacy's subscription: checkout through the gateway, plan changes with proration, renewal
from the pharmacy's payable balance, the grace period, suspension (hidden, no orders) and
reactivation on payment; cancellation; invoices numbered per pharmacy without gaps."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import assert_problem, bearer, login, outbox, run_db, unique_email
from tests.encounters.test_export import pdf_text
from tests.payments.test_payments import books, key, pay_on_sandbox

PASSWORD = "a pharmacy of its own"
# Far from the demo pharmacies (Bengaluru, Berlin): other tests' "near me" searches never meet it.
MYSURU = (12.3051, 76.6551)


@pytest.fixture(scope="module")
def pharmacy_org(backend, server):
    """A pharmacy organization of these tests' own (they suspend it), with its pharmacist and
    profile (a new profile starts on a trial)."""
    import httpx
    import psycopg

    from tests.conftest import carebase_cli

    slug = f"subs-{uuid.uuid4().hex[:8]}"
    admin_email = unique_email("subs-admin")
    r = carebase_cli(backend, "create-tenant", "--slug", slug, "--name", "Subscribing Pharmacy", "--kind", "pharmacy",
                     "--timezone", "Asia/Kolkata", "--admin-email", admin_email)
    assert r.returncode == 0, r.stderr
    with httpx.Client(base_url=server.url, timeout=30) as client, \
            psycopg.connect(backend.owner_dsn, autocommit=True) as owner:
        def set_password(email: str) -> None:
            token = outbox(owner, email)[-1][2].split("reset token: ")[1].split()[0]
            assert client.post("/api/v1/auth/password/reset",
                               json={"token": token, "new_password": PASSWORD}).status_code == 204

        set_password(admin_email)
        admin = bearer(login(client, admin_email, PASSWORD, tenant=slug))
        pharmacist_email = unique_email("subs-pharmacist")
        r = client.post("/api/v1/members", headers=admin, json={"email": pharmacist_email, "display_name": "Sub Rx",
                                                                "role": "pharmacist"})
        assert r.status_code == 201, r.text
        set_password(pharmacist_email)
        tokens = bearer(login(client, pharmacist_email, PASSWORD, tenant=slug))
        r = client.put("/api/v1/pharmacy/profile", headers=tokens, json={
            "name": "Subscribing Pharmacy", "licence_number": "KA-SUB-1", "address": "1 Sayyaji Rao Road, Mysuru",
            "lat": MYSURU[0], "lon": MYSURU[1], "currency": "INR", "delivery_fee_minor": 0,
            "opening_hours": {"mon": [["09:00", "21:00"]]}})
        assert r.status_code == 200, r.text
        tenant_id = uuid.UUID(r.json()["id"])
    return {"slug": slug, "email": pharmacist_email, "tenant_id": tenant_id}


@pytest.fixture
def rx(client, pharmacy_org):
    return bearer(login(client, pharmacy_org["email"], PASSWORD, tenant=pharmacy_org["slug"]))


def status(client, rx) -> dict:
    r = client.get("/api/v1/pharmacy/subscription/status", headers=rx)
    assert r.status_code == 200, r.text
    return r.json()


def renew(backend, tenant_id, now=None) -> str:
    from carebase.pharmacy import subscriptions

    return run_db(backend, lambda s: subscriptions.renew_one(s, tenant_id, now), owner=False, tenant_id=tenant_id)


def fund_payable(backend, tenant_id, amount: int) -> None:
    """Released sales money in the pharmacy's payable (as an escrow release would leave it)."""
    from carebase.payments import ledger

    async def go(s):
        clearing = await ledger.account(s, ledger.CLEARING, "INR")
        payable = await ledger.account(s, ledger.PAYABLE, "INR", owner_tenant=tenant_id)
        await ledger.post(s, "test_sales", [(clearing, -amount), (payable, amount)])

    run_db(backend, go, owner=False, tenant_id=tenant_id)


def payable(owner, tenant_id) -> int:
    row = owner.execute("SELECT balance_minor FROM ledger_accounts WHERE kind = 'merchant_payable' AND "
                        "owner_tenant_id = %s", (tenant_id,)).fetchone()
    return row[0] if row else 0


def listed(client, tenant_id) -> bool:
    patient = bearer(login(client, "patient@demo.carebase.local"))
    near = client.get("/api/v1/patient/pharmacies", headers=patient, params={"lat": MYSURU[0], "lon": MYSURU[1],
                                                                             "radius_km": 2}).json()
    return str(tenant_id) in [p["id"] for p in near]


def test_a_subscription_is_bought_changed_renewed_lapses_and_comes_back(backend, client, owner, rx, pharmacy_org):
    tenant = pharmacy_org["tenant_id"]
    s = status(client, rx)
    assert s["status"] == "trial" and s["live"] and s["plan"] is None
    basic = next(p for p in s["plans"] if p["code"] == "basic")
    assert basic["price_minor"] == 99_900 and basic["tax"] == "GST" and basic["tax_rate_bps"] == 1800

    # Checkout on the sandbox gateway: the invoice (with its GST line) is paid by the webhook.
    assert_problem(client.post("/api/v1/pharmacy/subscription/checkout", headers=rx, json={"plan": "basic"}), 428,
                   "idempotency-key-required")
    assert client.post("/api/v1/pharmacy/subscription/checkout", headers={**rx, **key()},
                       json={"plan": "platinum"}).status_code == 422
    r = client.post("/api/v1/pharmacy/subscription/checkout", headers={**rx, **key()}, json={"plan": "basic"})
    assert r.status_code == 201, r.text
    invoice, payment = r.json()["invoice"], r.json()["payment"]
    year = datetime.now(UTC).year
    assert invoice["number"] == f"SUB-{year}-00001" and invoice["status"] == "open"
    assert (invoice["net_minor"], invoice["tax_minor"], invoice["total_minor"]) == (99_900, 17_982, 117_882)
    assert payment["amount_minor"] == 117_882 and payment["purpose"] == "subscription"
    assert pay_on_sandbox(client, payment).endswith("payment=succeeded")
    s = status(client, rx)
    assert s["status"] == "active" and s["plan"] == "basic" and s["live"]
    ends = datetime.fromisoformat(s["ends_at"])
    pdf = client.get(f"/api/v1/pharmacy/subscription/invoices/{invoice['id']}/pdf", headers=rx)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = pdf_text(pdf.content)
    for expected in (f"receipt SUB-{year}-00001", "Subscribing Pharmacy", "GST 18 %", "INR 179.82", "INR 1,178.82",
                     "gateway"):
        assert expected in text, (expected, text)
    assert timedelta(days=29, hours=23) < ends - datetime.now(UTC) <= timedelta(days=30)

    # Upgrade now: the difference for the days left is invoiced and paid; the period's end stays.
    r = client.post("/api/v1/pharmacy/subscription/change-plan", headers=rx, json={"plan": "pro"})
    assert r.status_code == 200, r.text
    change = r.json()["invoice"]
    assert change["number"] == f"SUB-{year}-00002" and change["kind"] == "change"
    assert 149_000 < change["net_minor"] <= 150_000  # (2,499 - 999) × the share of the period left
    r = client.post(f"/api/v1/pharmacy/subscription/invoices/{change['id']}/pay", headers={**rx, **key()})
    assert r.status_code == 201, r.text
    pay_on_sandbox(client, r.json())
    s = status(client, rx)
    assert s["plan"] == "pro" and datetime.fromisoformat(s["ends_at"]) == ends
    # Downgrade: credit for the next renewal, no invoice.
    r = client.post("/api/v1/pharmacy/subscription/change-plan", headers=rx, json={"plan": "basic"}).json()
    assert r["invoice"] is None and 149_000 < r["credit_minor"] <= 150_000
    credit = r["credit_minor"]
    assert status(client, rx)["credit_minor"] == credit

    # A day before the end, the renewal is taken from the pharmacy's sales (less the credit).
    owner.execute("UPDATE pharmacies SET subscription_ends_at = now() + interval '1 hour' WHERE tenant_id = %s",
                  (tenant,))
    fund_payable(backend, tenant, 500_000)
    assert renew(backend, tenant) == "renewed"
    assert renew(backend, tenant) == "nothing due"  # run twice: once
    history = client.get("/api/v1/pharmacy/subscription/history", headers=rx).json()
    renewal = history["invoices"][0]
    assert renewal["kind"] == "renewal" and renewal["paid_via"] == "payable" and renewal["number"] == \
        f"SUB-{year}-00003"
    assert renewal["net_minor"] == max(99_900 - credit, 0)
    assert payable(owner, tenant) == 500_000 - renewal["total_minor"]
    s = status(client, rx)
    assert s["status"] == "active" and s["credit_minor"] == max(credit - 99_900, 0)

    # Next time the payable cannot cover it: past due, still selling, the pharmacists reminded.
    owner.execute("UPDATE pharmacies SET subscription_ends_at = now() + interval '1 hour', "
                  "subscription_credit_minor = 0 WHERE tenant_id = %s", (tenant,))
    drain(backend, tenant)
    assert renew(backend, tenant) == "past due"
    s = status(client, rx)
    assert s["status"] == "past_due" and s["live"] and s["grace_until"]
    assert listed(client, tenant)
    assert owner.execute("SELECT count(*) FROM notifications WHERE tenant_id = %s AND kind = 'subscription.status' "
                         "AND body LIKE '%%is unpaid%%'", (tenant,)).fetchone()[0] >= 1
    unpaid = client.get("/api/v1/pharmacy/subscription/history", headers=rx).json()["invoices"][0]
    assert unpaid["status"] == "open" and unpaid["kind"] == "renewal"

    # The grace runs out: suspended, hidden from patients, refusing orders with the reason.
    owner.execute("UPDATE pharmacies SET subscription_grace_until = now() - interval '1 second' WHERE tenant_id = %s",
                  (tenant,))
    assert renew(backend, tenant) == "expired"
    s = status(client, rx)
    assert s["status"] == "expired" and not s["live"] and "suspended" in s["status_text"]
    assert not listed(client, tenant)
    patient = bearer(login(client, "patient@demo.carebase.local"))
    r = client.post("/api/v1/patient/orders", headers=patient, json={
        "pharmacy_id": str(tenant), "fulfilment": "pickup", "contact_name": "Asha Verma"})
    assert "subscription" in assert_problem(r, 409, "pharmacy-not-taking-orders")["detail"]

    # Paying the open invoice brings it back at once, for a full period from now.
    r = client.post(f"/api/v1/pharmacy/subscription/invoices/{unpaid['id']}/pay", headers={**rx, **key()})
    assert r.status_code == 201, r.text
    pay_on_sandbox(client, r.json())
    s = status(client, rx)
    assert s["status"] == "active" and s["live"] and listed(client, tenant)
    assert datetime.fromisoformat(s["ends_at"]) - datetime.now(UTC) > timedelta(days=29)
    events = [e["kind"] for e in client.get("/api/v1/pharmacy/subscription/history", headers=rx).json()["events"]]
    assert events[:3] == ["paid", "suspended", "renewal_failed"]
    numbers = [int(re.sub(r".*-", "", i["number"])) for i in
               client.get("/api/v1/pharmacy/subscription/history", headers=rx).json()["invoices"]]
    assert sorted(numbers) == list(range(1, len(numbers) + 1))  # no gaps
    assert books(backend) == []


def drain(backend, tenant_id) -> None:
    from carebase.payments import service as payments

    run_db(backend, lambda s: payments.payout(s, tenant_id), owner=False, tenant_id=tenant_id)


def test_a_cancelled_subscription_sells_until_its_period_ends(backend, client, owner, rx, pharmacy_org):
    tenant = pharmacy_org["tenant_id"]
    if status(client, rx)["status"] != "active":
        r = client.post("/api/v1/pharmacy/subscription/checkout", headers={**rx, **key()}, json={"plan": "basic"})
        pay_on_sandbox(client, r.json()["payment"])
    s = client.post("/api/v1/pharmacy/subscription/cancel", headers=rx).json()
    assert s["status"] == "cancelled" and not s["auto_renew"] and s["live"]
    assert_problem(client.post("/api/v1/pharmacy/subscription/cancel", headers=rx), 409, "not-active")
    owner.execute("UPDATE pharmacies SET subscription_ends_at = now() + interval '1 hour' WHERE tenant_id = %s",
                  (tenant,))
    fund_payable(backend, tenant, 500_000)
    assert renew(backend, tenant) == "nothing due"  # no renewal once cancelled
    assert listed(client, tenant)
    owner.execute("UPDATE pharmacies SET subscription_ends_at = now() - interval '1 second' WHERE tenant_id = %s",
                  (tenant,))
    assert not status(client, rx)["live"] and not listed(client, tenant)
    # Buying a plan again reopens it.
    r = client.post("/api/v1/pharmacy/subscription/checkout", headers={**rx, **key()}, json={"plan": "basic"})
    pay_on_sandbox(client, r.json()["payment"])
    assert status(client, rx)["status"] == "active" and listed(client, tenant)
    # Only its own staff see it.
    demo_rx = bearer(login(client, "pharmacist@demo.carebase.local"))
    invoice = client.get("/api/v1/pharmacy/subscription/history", headers=rx).json()["invoices"][0]
    assert_problem(client.post(f"/api/v1/pharmacy/subscription/invoices/{invoice['id']}/pay",
                               headers={**demo_rx, **key()}), 404, "invoice-not-found")


def test_document_numbers_have_no_gaps_even_when_a_transaction_rolls_back(backend, pharmacy_org):
    from carebase.platform import numbering

    tenant = pharmacy_org["tenant_id"]
    series = f"T{uuid.uuid4().hex[:6]}"

    async def take(s):
        return await numbering.next_number(s, tenant, series)

    async def take_and_fail(s):
        await numbering.next_number(s, tenant, series)
        raise RuntimeError("the document failed")

    assert run_db(backend, take, owner=False, tenant_id=tenant) == 1
    with pytest.raises(RuntimeError):
        run_db(backend, take_and_fail, owner=False, tenant_id=tenant)
    assert run_db(backend, take, owner=False, tenant_id=tenant) == 2
