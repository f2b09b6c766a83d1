"""The pharmacy marketplace in Debian's Chromium: a pharmacist imports a CSV, sees the low-stock
alert, receives a patient's order live and packs it; the patient searches, fills the cart from a
signed prescription, checks out and watches the status change without reloading."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from tests.conftest import ARTIFACTS
from tests.e2e.test_portal import _sign_in, browser  # noqa: F401  (the fixture)
from tests.pharmacy.test_pharmacy import SHOPPER_PASSWORD, shopper, shopper_login, signed_prescription  # noqa: F401


def test_import_alert_order_live_pack_and_track(browser, server, client, owner, shopper, tmp_path):  # noqa: F811
    tag = uuid.uuid4().hex[:5]
    csv = tmp_path / "catalogue.csv"
    csv.write_text("name,generic_name,category,dosage_form,strength,pack_size,mrp,price,stock,low_stock_threshold,"
                   "requires_prescription\n"
                   f"Zyrocet {tag},cetirizine,Antihistamine,Tablet,10 mg,10,25.00,21.50,3,10,no\n"
                   f"Amoxy {tag},amoxicillin,Antibiotic,Capsule,500 mg,10,95.00,1.00,50,5,yes\n"
                   f"Broken {tag},,Antacid,Tablet,40 mg,15,not-a-price,10.00,5,5,no\n")
    pharmacist_ctx, patient_ctx = browser.new_context(), browser.new_context()
    pharmacist, patient = pharmacist_ctx.new_page(), patient_ctx.new_page()
    _sign_in(pharmacist, server.url, "pharmacist@demo.carebase.local")
    _sign_in(patient, server.url, shopper["email"], SHOPPER_PASSWORD)

    # The pharmacist checks the file, sees the bad row, imports the good ones.
    pharmacist.goto(f"{server.url}/portal/pharmacy/inventory")
    pharmacist.locator("#import-box summary").click()
    pharmacist.set_input_files("#import-file", str(csv))
    pharmacist.click("#import-preview")
    expect(pharmacist.locator("#import-summary")).to_contain_text("3 rows: 2 good")
    expect(pharmacist.locator("#import-errors")).to_contain_text("mrp")
    with pharmacist.expect_navigation():
        pharmacist.click("#import-commit")
    # 3 packs of Zyrocet against a threshold of 10: the low-stock alert names it.
    expect(pharmacist.locator("#low-stock-alert")).to_be_visible()
    pharmacist.click("#show-low-stock")
    pharmacist.fill("#inventory-search", f"zyrocet {tag}")
    with pharmacist.expect_navigation():
        pharmacist.press("#inventory-search", "Enter")
    expect(pharmacist.locator(f'#inventory tr[data-name="Zyrocet {tag}"] .free')).to_have_text("3 / 3")
    pharmacist.goto(f"{server.url}/portal/pharmacy/orders")
    expect(pharmacist.locator("#live-status")).to_have_text("live")

    # A signed prescription for an antibiotic (the doctor wrote it, the patient signed it): the cart
    # gets the cheapest amoxicillin in stock here: the one just imported (at a price no other test uses).
    signed_prescription(client, owner, [{"medicine": "amoxicillin", "dose": 500, "unit": "mg", "times_per_day": 2,
                                         "duration_days": 5}], shopper=shopper)  # 10 capsules: one pack
    tokens = shopper_login(client, shopper)
    for line in client.get("/api/v1/patient/cart", headers=tokens).json()["lines"]:
        client.delete(f"/api/v1/patient/cart/items/{line['medicine']['id']}", headers=tokens)

    # The patient searches (with a typo), adds the antihistamine, fills the cart from the prescription.
    patient.goto(f"{server.url}/portal/shop?q=zyrocett")
    expect(patient.locator("#did-you-mean")).to_contain_text("zyrocet")
    patient.locator(f'#shop-results tr[data-name="Zyrocet {tag}"] .add-to-cart').click()
    expect(patient.locator("#go-to-cart")).to_be_visible()
    patient.goto(f"{server.url}/portal/shop")
    with patient.expect_navigation():
        patient.click("#fill-cart")
    expect(patient.locator(f'.cart-lines tr[data-name="Amoxy {tag}"]')).to_contain_text("from your prescription")
    expect(patient.locator(f'.cart-lines tr[data-name="Zyrocet {tag}"]')).to_be_visible()
    group = patient.locator(".cart-group", has=patient.locator(f'tr[data-name="Amoxy {tag}"]'))
    with patient.expect_navigation():
        group.locator(".place-order").click()
    expect(patient.locator("#order-status")).to_have_text("placed")
    expect(patient.locator("#live-status")).to_have_text("live")
    number = patient.locator("h1").inner_text().replace("Order ", "")

    # It reaches the pharmacist's queue without a reload; they accept and pack it.
    row = pharmacist.locator(f'.order-row[data-number="{number}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text(f"Amoxy {tag}")
    row.locator(".accept").click()
    expect(row).to_have_attribute("data-status", "confirmed")
    # The patient's page follows, live.
    expect(patient.locator("#order-status")).to_have_text("confirmed by the pharmacy")
    pharmacist.once("dialog", lambda d: d.accept())
    row.locator(".pack").click()
    expect(row).to_have_attribute("data-status", "packed")
    expect(patient.locator("#order-status")).to_have_text("packed")
    expect(patient.locator("#order-steps li.done")).to_have_count(3)
    row.locator(".complete").click()  # picked up
    expect(patient.locator("#order-status")).to_have_text("completed")
    expect(patient.locator("#cancel-order")).to_have_count(0)  # too late to cancel, and the page knows it
    patient.screenshot(path=str(ARTIFACTS / "pharmacy-order-tracking.png"), full_page=True)
    pharmacist_ctx.close()
    patient_ctx.close()
