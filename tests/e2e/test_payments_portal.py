"""Payments in Debian's Chromium: a patient pays an order on the sandbox checkout page, the courier
completes the delivery with the patient's code, and the pharmacy sees the money released and paid
out; a patient tops up the wallet and pays an order with it."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import expect

from concurrent.futures import ThreadPoolExecutor

from tests.conftest import ARTIFACTS, tenant_id_of
from tests.conftest import run_db as _run_db
from tests.e2e.test_portal import _sign_in, browser  # noqa: F401  (the fixture)
from tests.payments.test_payments import add, delivery_code
from tests.pharmacy.test_pharmacy import SHOPPER_PASSWORD, shopper, shopper_login  # noqa: F401
from tests.pharmacy.test_subscriptions import pharmacy_org  # noqa: F401  (the fixture)
from tests.conftest import bearer, login


def run_db(*args, **kwargs):
    # Playwright's sync API runs an event loop in this thread; run_db starts its own.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_run_db, *args, **kwargs).result()


def _fresh_cart(client, shopper, medicine_id: str, quantity: int = 1) -> None:  # noqa: F811
    tokens = shopper_login(client, shopper)
    for line in client.get("/api/v1/patient/cart", headers=tokens).json()["lines"]:
        client.delete(f"/api/v1/patient/cart/items/{line['medicine']['id']}", headers=tokens)
    r = client.post("/api/v1/patient/cart/items", headers=tokens, json={"medicine_id": medicine_id,
                                                                         "quantity": quantity})
    assert r.status_code == 200, r.text


def test_pay_on_the_sandbox_deliver_with_the_code_and_see_the_payout(browser, backend, server, client, owner,
                                                                   shopper):  # noqa: F811
    from carebase.payments import service as payments
    from carebase.pharmacy import service as pharmacy

    pharmacist_api = bearer(login(client, "pharmacist@demo.carebase.local"))
    med = add(client, pharmacist_api, stock=5, price_minor=12_000, mrp_minor=12_500)
    _fresh_cart(client, shopper, med["id"])
    pharmacist_ctx, patient_ctx = browser.new_context(), browser.new_context()
    pharmacist, patient = pharmacist_ctx.new_page(), patient_ctx.new_page()
    _sign_in(pharmacist, server.url, "pharmacist@demo.carebase.local")
    _sign_in(patient, server.url, shopper["email"], SHOPPER_PASSWORD)

    # Checkout: delivered, paid now.
    patient.goto(f"{server.url}/portal/cart")
    group = patient.locator(".cart-group", has=patient.locator(f'tr[data-name="{med["name"]}"]'))
    group.locator("input[value=delivery]").check()
    group.locator("input[name=delivery_address]").fill("4 Park Street, Bengaluru")
    group.locator(".pay-online").check()
    with patient.expect_navigation():
        group.locator(".place-order").click()
    expect(patient.locator("#payment-status")).to_have_text("not paid yet")
    number = patient.locator("h1").inner_text().replace("Order ", "")
    order_id = patient.url.rsplit("/", 1)[-1]

    # The sandbox's hosted page: a declined card first, then a payment.
    patient.click("#pay-order")
    patient.wait_for_url(re.compile(r"/pay/sandbox/sbx_pi_"))
    expect(patient.locator("#sandbox-checkout h2")).to_have_text("₹160.00")  # ₹120 and ₹40 for delivery
    with patient.expect_navigation():
        patient.click("#decline")
    expect(patient.locator("#payment-status")).to_have_text("not paid yet")
    patient.click("#pay-order")
    patient.wait_for_url(re.compile(r"/pay/sandbox/sbx_pi_"))
    with patient.expect_navigation():
        patient.click("#pay")
    expect(patient.locator("#payment-status")).to_contain_text("paid (held safely until delivery)")

    # The pharmacist accepts, packs and hands it to the (local) courier, who drives to the door.
    pharmacist.goto(f"{server.url}/portal/pharmacy/orders")
    expect(pharmacist.locator("#live-status")).to_have_text("live")
    row = pharmacist.locator(f'.order-row[data-number="{number}"]')
    expect(row).to_contain_text("online, paid (in escrow)")
    row.locator(".accept").click()
    expect(row).to_have_attribute("data-status", "confirmed")
    pharmacist.once("dialog", lambda d: d.accept())
    row.locator(".pack").click()
    expect(row).to_have_attribute("data-status", "packed")
    row.locator(".dispatch").click()
    expect(row).to_have_attribute("data-status", "shipped")
    demo = tenant_id_of(owner, "demo")
    oid = uuid.UUID(order_id)
    assert run_db(backend, lambda s: pharmacy.local_courier_step(s, oid), owner=False, tenant_id=demo) == \
        "out_for_delivery"
    args = owner.execute("SELECT args FROM procrastinate_jobs WHERE task_name = 'pharmacy.send_delivery_code' "
                         "AND args->>'order_id' = %s", (order_id,)).fetchone()[0]
    run_db(backend, lambda s: pharmacy.send_delivery_code(s, oid), owner=False,
           tenant_id=uuid.UUID(args["tenant_id"]), account_id=uuid.UUID(args["account_id"]))
    expect(patient.locator("#order-status")).to_have_text("out for delivery")
    expect(patient.locator("#resend-code")).to_be_visible()
    pharmacist.goto(f"{server.url}/portal/pharmacy/payouts")
    before = pharmacist.locator("#balance-INR .payable").inner_text()

    # At the door: a wrong code is refused, the patient's code completes the order.
    pharmacist.goto(f"{server.url}/portal/pharmacy/orders")
    row = pharmacist.locator(f'.order-row[data-number="{number}"]')
    code = delivery_code(owner, number)
    row.locator("input[name=code]").fill("000000" if code != "000000" else "111111")
    row.locator(".deliver").click()
    expect(pharmacist.locator("#pharmacy-error-box")).to_contain_text("not the delivery code")
    row.locator("input[name=code]").fill(code)
    row.locator(".deliver").click()
    expect(row).to_have_count(0)  # completed: it leaves the open queue
    expect(patient.locator("#order-status")).to_have_text("completed")

    # The pharmacy sees the money released (less the provider's 2 %), then the batched payout.
    pharmacist.goto(f"{server.url}/portal/pharmacy/payouts")
    after = pharmacist.locator("#balance-INR .payable").inner_text()
    to_paise = lambda text: int(text.replace("₹", "").replace(",", "").replace(".", ""))  # noqa: E731
    assert to_paise(after) - to_paise(before) == 12_000 + 4_000 - (16_000 * 2 // 100)  # the medicine and delivery
    run_db(backend, lambda s: payments.payout(s, demo), owner=False, tenant_id=demo)
    pharmacist.reload()
    expect(pharmacist.locator("#balance-INR .payable")).to_have_text("₹0.00")
    expect(pharmacist.locator("#payouts-INR tbody tr").first).to_contain_text(after)
    expect(pharmacist.locator("#merchant-transactions")).to_contain_text("order payment")
    pharmacist.screenshot(path=str(ARTIFACTS / "pharmacy-payouts.png"), full_page=True)
    pharmacist_ctx.close()
    patient_ctx.close()


def test_top_up_the_wallet_and_pay_an_order_with_it(browser, server, client, owner, shopper):  # noqa: F811
    pharmacist_api = bearer(login(client, "pharmacist@demo.carebase.local"))
    med = add(client, pharmacist_api, stock=5, price_minor=20_000, mrp_minor=20_000)
    _fresh_cart(client, shopper, med["id"])
    ctx = browser.new_context()
    patient = ctx.new_page()
    _sign_in(patient, server.url, shopper["email"], SHOPPER_PASSWORD)
    patient.goto(f"{server.url}/portal/wallet")
    start = patient.locator("#wallet-balance").inner_text()
    patient.fill("input[name=amount]", "250")
    patient.click("#top-up")
    patient.wait_for_url(re.compile(r"/pay/sandbox/sbx_pi_"))
    expect(patient.locator("#sandbox-checkout h2")).to_have_text("₹250.00")
    with patient.expect_navigation():
        patient.click("#pay")
    expect(patient.locator("#payment-note")).to_contain_text("topped up")
    to_paise = lambda text: int(text.replace("₹", "").replace(",", "").replace(".", ""))  # noqa: E731
    assert to_paise(patient.locator("#wallet-balance").inner_text()) == to_paise(start) + 25_000
    expect(patient.locator("#wallet-lines tr").first).to_contain_text("Wallet top-up")

    # A pickup order paid from the wallet alone: no checkout page.
    patient.goto(f"{server.url}/portal/cart")
    group = patient.locator(".cart-group", has=patient.locator(f'tr[data-name="{med["name"]}"]'))
    group.locator(".pay-online").check()
    with patient.expect_navigation():
        group.locator(".place-order").click()
    patient.check("#use-wallet")
    with patient.expect_navigation():
        patient.click("#pay-order")
    expect(patient.locator("#payment-status")).to_contain_text("paid")
    patient.goto(f"{server.url}/portal/wallet")
    assert to_paise(patient.locator("#wallet-balance").inner_text()) == to_paise(start) + 25_000 - 20_000
    patient.screenshot(path=str(ARTIFACTS / "wallet.png"), full_page=True)
    ctx.close()


def test_a_lapsed_subscription_is_renewed_from_the_portal(browser, backend, server, client, owner,
                                                          pharmacy_org):  # noqa: F811
    from carebase.pharmacy import subscriptions
    from tests.pharmacy.test_subscriptions import PASSWORD

    tenant = pharmacy_org["tenant_id"]
    # The trial ran out unpaid: the renewal job suspends the pharmacy.
    owner.execute("UPDATE pharmacies SET subscription_ends_at = now() - interval '1 second' WHERE tenant_id = %s",
                  (tenant,))
    assert run_db(backend, lambda s: subscriptions.renew_one(s, tenant), owner=False, tenant_id=tenant) == "expired"
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(server.url + "/login")
    page.fill("input[name=email]", pharmacy_org["email"])
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=tenant]", pharmacy_org["slug"])
    page.click("button[type=submit]")
    page.click("#nav-subscription")
    expect(page.locator("#subscription-status")).to_have_attribute("data-status", "expired")
    expect(page.locator("#suspended-note")).to_be_visible()
    page.locator('.plan[data-plan="basic"] .buy-plan').click()
    page.wait_for_url(re.compile(r"/pay/sandbox/sbx_pi_"))
    expect(page.locator("#sandbox-checkout h2")).to_have_text("₹1,178.82")  # ₹999 + 18 % GST
    with page.expect_navigation():
        page.click("#pay")
    expect(page.locator("#payment-note")).to_contain_text("Payment received")
    expect(page.locator("#subscription-status")).to_have_attribute("data-status", "active")
    expect(page.locator("#current-plan")).to_have_text("basic")
    expect(page.locator("#invoices tbody tr").first).to_contain_text("paid (gateway)")
    page.screenshot(path=str(ARTIFACTS / "pharmacy-subscription.png"), full_page=True)
    ctx.close()
