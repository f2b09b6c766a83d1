"""The pharmacy marketplace through the API: a pharmacy's profile, catalogue and stock; patients'
search, cart and checkout; the prescription rules; the order's state machine."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import assert_problem, bearer, login, tenant_id_of

PATIENT = "patient@demo.carebase.local"
PHARMACIST = "pharmacist@demo.carebase.local"
DOCTOR = "doctor@demo.carebase.local"


def medicine(**over) -> dict:
    body = {"name": f"Testocin {uuid.uuid4().hex[:6]}", "generic_name": "paracetamol", "category": "Painkiller",
            "dosage_form": "Tablet", "strength": "500 mg", "pack_size": 10, "mrp_minor": 5000, "price_minor": 4500,
            "currency": "INR", "stock": 20, "low_stock_threshold": 5, "requires_prescription": False}
    body.update(over)
    return body


@pytest.fixture
def pharmacist(client):
    return bearer(login(client, PHARMACIST))


@pytest.fixture
def patient(client):
    tokens = bearer(login(client, PATIENT))
    for line in client.get("/api/v1/patient/cart", headers=tokens).json()["lines"]:
        client.delete(f"/api/v1/patient/cart/items/{line['medicine']['id']}", headers=tokens)
    return tokens


def add(client, pharmacist, **over) -> dict:
    r = client.post("/api/v1/pharmacy/medicines", headers=pharmacist, json=medicine(**over))
    assert r.status_code == 201, r.text
    return r.json()


def test_the_demo_pharmacy_and_its_profile(client, pharmacist):
    p = client.get("/api/v1/pharmacy/profile", headers=pharmacist)
    assert p.status_code == 200, p.text
    body = p.json()
    assert body["name"] == "Demo Clinic Pharmacy" and body["taking_orders"] and body["subscription_status"] == "trial"
    # Opening hours are checked: closing before opening is refused, and nothing changes.
    bad = {k: body[k] for k in ("name", "licence_number", "address", "city", "lat", "lon", "delivery_radius_km",
                                "delivery_fee_minor", "currency", "listed")}
    r = client.put("/api/v1/pharmacy/profile", headers=pharmacist, json={**bad, "opening_hours": {"mon": [["21:00", "09:00"]]}})
    assert_problem(r, 422, "bad-hours")
    assert client.get("/api/v1/pharmacy/profile", headers=pharmacist).json()["version"] == body["version"]


def test_medicine_crud_and_its_rules(client, pharmacist):
    m = add(client, pharmacist, stock=0)
    assert m["available"] == 0 and m["discount_minor"] == 500
    assert_problem(client.post("/api/v1/pharmacy/medicines", headers=pharmacist,
                               json=medicine(mrp_minor=100, price_minor=200)), 422, "price-above-mrp")
    assert client.post("/api/v1/pharmacy/medicines", headers=pharmacist,
                       json=medicine(mrp_minor=10.5)).status_code == 422  # money is whole minor units
    got = client.get(f"/api/v1/pharmacy/medicines/{m['id']}", headers=pharmacist)
    body = {k: v for k, v in medicine(name=m["name"], price_minor=4000).items() if k != "stock"}
    r = client.put(f"/api/v1/pharmacy/medicines/{m['id']}", headers={**pharmacist, "If-Match": got.headers["ETag"]},
                   json=body)
    assert r.status_code == 200 and r.json()["price_minor"] == 4000, r.text
    assert client.put(f"/api/v1/pharmacy/medicines/{m['id']}", headers={**pharmacist, "If-Match": got.headers["ETag"]},
                      json=body).status_code == 409  # stale
    assert client.delete(f"/api/v1/pharmacy/medicines/{m['id']}", headers=pharmacist).status_code == 204
    assert client.get(f"/api/v1/pharmacy/medicines/{m['id']}", headers=pharmacist).status_code == 404
    # Another organization's pharmacist cannot see or change it.
    other = bearer(login(client, "pharmacist@demo2.carebase.local"))
    m2 = add(client, pharmacist)
    assert client.get(f"/api/v1/pharmacy/medicines/{m2['id']}", headers=other).status_code == 404
    assert client.patch(f"/api/v1/pharmacy/medicines/{m2['id']}/stock", headers=other,
                        json={"reason": "received", "change": 5}).status_code == 404


def test_stock_changes_are_events_with_reasons_and_low_stock_is_listed(client, pharmacist, owner):
    m = add(client, pharmacist, stock=20, low_stock_threshold=5)
    url = f"/api/v1/pharmacy/medicines/{m['id']}/stock"
    assert client.patch(url, headers=pharmacist, json={"reason": "received", "change": 10}).json()["stock"] == 30
    assert client.patch(url, headers=pharmacist, json={"reason": "expired", "change": -8}).json()["stock"] == 22
    assert client.patch(url, headers=pharmacist, json={"reason": "adjusted", "set_to": 4, "note": "counted"}).json()["stock"] == 4
    assert_problem(client.patch(url, headers=pharmacist, json={"reason": "received", "change": -3}), 422,
                   "bad-stock-change")
    assert_problem(client.patch(url, headers=pharmacist, json={"reason": "expired", "change": -5}), 409,
                   "stock-below-reserved")
    assert_problem(client.patch(url, headers=pharmacist, json={"reason": "received"}), 422, "bad-stock-change")
    history = client.get(f"/api/v1/pharmacy/medicines/{m['id']}/stock-history", headers=pharmacist).json()
    assert [(e["reason"], e["change"], e["stock_after"]) for e in history] == [
        ("adjusted", -18, 4), ("expired", -8, 22), ("received", 10, 30), ("received", 20, 20)]
    low = client.get("/api/v1/pharmacy/medicines/low-stock", headers=pharmacist).json()
    assert m["id"] in [x["id"] for x in low] and all(x["available"] <= x["low_stock_threshold"] for x in low)
    # Falling below the threshold queued the alert job for the pharmacists.
    assert owner.execute("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'pharmacy.low_stock_alert' "
                         "AND args->>'medicine_id' = %s", (m["id"],)).fetchone()[0] == 1


def test_nearby_pharmacies_by_distance_and_a_lapsed_subscription(client, pharmacist, patient, owner):
    near = client.get("/api/v1/patient/pharmacies", headers=patient, params={"lat": 12.97, "lon": 77.60,
                                                                            "radius_km": 5}).json()
    assert near[0]["name"] == "Demo Clinic Pharmacy" and 0 < near[0]["distance_km"] < 2
    assert "Second Demo Apotheke" not in [p["name"] for p in near]  # Berlin is not within 5 km
    assert client.get("/api/v1/patient/pharmacies", headers=patient,
                      params={"lat": 99, "lon": 0}).status_code == 422
    tenant = tenant_id_of(owner, "demo")
    owner.execute("UPDATE pharmacies SET subscription_status = 'expired' WHERE tenant_id = %s", (tenant,))
    try:
        near = client.get("/api/v1/patient/pharmacies", headers=patient,
                          params={"lat": 12.97, "lon": 77.60}).json()
        assert "Demo Clinic Pharmacy" not in [p["name"] for p in near]
        found = client.get("/api/v1/patient/medicines/search", headers=patient, params={"q": "crocin"}).json()
        assert "Demo Clinic Pharmacy" not in {i["pharmacy_name"] for i in found["items"]}
        assert found["items"]  # the other pharmacy still sells it
    finally:
        owner.execute("UPDATE pharmacies SET subscription_status = 'trial' WHERE tenant_id = %s", (tenant,))


@pytest.mark.parametrize(("q", "expected", "corrected"), [
    ("crocin", "Crocin 500", None),
    ("paracetamol", "Calpol 500", None),  # by generic name; the cheapest of the best matches first
    ("paracetmol", "Calpol 500", "paracetamol"),  # a typo
    ("crocn", "Crocin 500", "crocin"),
    ("cetiriz", "Okacet", None),  # a prefix
])
def test_search_by_name_and_generic_with_typos(client, patient, q, expected, corrected):
    r = client.get("/api/v1/patient/medicines/search", headers=patient, params={"q": q, "lat": 12.97, "lon": 77.60})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["items"] and body["items"][0]["name"] == expected, [i["name"] for i in body["items"]]
    assert body["corrected_query"] == corrected


def test_search_filters_and_generic_alternatives(client, patient):
    def names(**params):
        r = client.get("/api/v1/patient/medicines/search", headers=patient, params={"lat": 12.97, "lon": 77.60,
                                                                                   "limit": 100, **params})
        assert r.status_code == 200, r.text
        return {i["name"] for i in r.json()["items"]}

    assert {"Mox 500", "Azithral 500"} <= names(category="antibiotic")
    assert "Crocin 500" not in names(category="antibiotic")
    assert "Asthalin Inhaler" in names(dosage_form="inhaler") and len(names(dosage_form="inhaler")) >= 1
    rx = names(requires_prescription="true")
    assert "Alprax 0.25" in rx and "Crocin 500" not in rx  # controlled counts as prescription-only
    assert "Crocin 500" in names(requires_prescription="false")
    crocin = client.get("/api/v1/patient/medicines/search", headers=patient,
                        params={"q": "crocin", "lat": 12.97, "lon": 77.60}).json()["items"][0]
    alts = client.get(f"/api/v1/patient/medicines/{crocin['id']}/alternatives", headers=patient,
                      params={"same_pharmacy": "true"}).json()
    assert [a["name"] for a in alts][:1] == ["Calpol 500"]  # same generic and strength, cheaper first
    assert "Dolo 650" not in [a["name"] for a in alts]  # another strength
    assert [a["price_minor"] for a in alts] == sorted(a["price_minor"] for a in alts)


# -- checkout and orders --------------------------------------------------------------------------


def demo_pharmacy(client, pharmacist) -> str:
    return client.get("/api/v1/pharmacy/profile", headers=pharmacist).json()["id"]


def checkout(client, patient, pharmacy_id, **over):
    body = {"pharmacy_id": pharmacy_id, "fulfilment": "pickup", "contact_name": "Asha Verma"}
    body.update(over)
    return client.post("/api/v1/patient/orders", headers=patient, json=body)


def test_an_over_the_counter_order_from_cart_to_completion(client, pharmacist, patient, owner):
    pharmacy_id = demo_pharmacy(client, pharmacist)
    m = add(client, pharmacist, stock=10, price_minor=4500, mrp_minor=5000)
    cart = client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": m["id"], "quantity": 2})
    assert cart.status_code == 200, cart.text
    cart = client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": m["id"], "quantity": 1}).json()
    assert [(line["quantity"], line["total_minor"]) for line in cart["lines"]] == [(3, 13500)]
    cart = client.patch(f"/api/v1/patient/cart/items/{m['id']}", headers=patient, json={"quantity": 4}).json()
    assert cart["lines"][0]["quantity"] == 4
    # The price changes after it was put in the cart: checkout charges today's price.
    got = client.get(f"/api/v1/pharmacy/medicines/{m['id']}", headers=pharmacist)
    body = {k: v for k, v in medicine(name=m["name"], price_minor=4000).items() if k != "stock"}
    assert client.put(f"/api/v1/pharmacy/medicines/{m['id']}", headers=pharmacist, json=body).status_code == 200
    assert_problem(checkout(client, patient, pharmacy_id, fulfilment="delivery"), 422, "address-required")
    r = checkout(client, patient, pharmacy_id, fulfilment="delivery", delivery_address="4 Park Street, Bengaluru",
                 contact_phone="+919800000001")
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "placed" and order["number"].startswith("ORD-")
    assert order["subtotal_minor"] == 16000 and order["discount_minor"] == 4000
    assert order["total_minor"] == 16000 + order["delivery_fee_minor"] and order["delivery_fee_minor"] == 4000
    assert client.get("/api/v1/patient/cart", headers=patient).json()["lines"] == []  # the cart was emptied
    held = client.get(f"/api/v1/pharmacy/medicines/{m['id']}", headers=pharmacist).json()
    assert (held["stock"], held["reserved"], held["available"]) == (10, 4, 6)
    # The pharmacy's queue has it, and its pharmacist was told.
    queue = client.get("/api/v1/pharmacy/orders", headers=pharmacist, params={"open": "true"}).json()
    assert order["id"] in [o["id"] for o in queue]
    assert owner.execute("SELECT count(*) FROM notifications WHERE kind = 'order.new' AND title LIKE '%%' || %s",
                         (order["number"],)).fetchone()[0] >= 1
    oid = order["id"]
    # Only along the state machine.
    assert_problem(client.post(f"/api/v1/pharmacy/orders/{oid}/complete", headers=pharmacist), 409, "bad-transition")
    assert client.post(f"/api/v1/pharmacy/orders/{oid}/accept", headers=pharmacist).json()["status"] == "confirmed"
    assert client.post(f"/api/v1/pharmacy/orders/{oid}/pack", headers=pharmacist).json()["status"] == "packed"
    assert_problem(client.patch(f"/api/v1/patient/orders/{oid}/cancel", headers=patient, json={}), 409,
                   "too-late-to-cancel")
    assert_problem(client.post(f"/api/v1/pharmacy/orders/{oid}/complete", headers=pharmacist), 409,
                   "bad-transition")  # a delivery is shipped first
    for status in ("shipped", "out_for_delivery", "delivered"):
        r = client.patch(f"/api/v1/pharmacy/orders/{oid}/status", headers=pharmacist, json={"status": status})
        assert r.status_code == 200 and r.json()["status"] == status, r.text
    done = client.post(f"/api/v1/pharmacy/orders/{oid}/complete", headers=pharmacist).json()
    assert done["status"] == "completed" and done["completed_at"]
    after = client.get(f"/api/v1/pharmacy/medicines/{m['id']}", headers=pharmacist).json()
    assert (after["stock"], after["reserved"]) == (6, 0)
    sold = client.get(f"/api/v1/pharmacy/medicines/{m['id']}/stock-history", headers=pharmacist).json()[0]
    assert (sold["reason"], sold["change"], sold["order_id"]) == ("sold", -4, oid)
    # The patient sees every step, and was told of each.
    mine = client.get(f"/api/v1/patient/orders/{oid}", headers=patient).json()
    assert [e["status"] for e in mine["events"]] == ["placed", "confirmed", "packed", "shipped", "out_for_delivery",
                                                      "delivered", "completed"]
    assert owner.execute("SELECT count(*) FROM notifications WHERE kind = 'order.status' "
                         "AND title LIKE %s || ':%%'", ("Order " + order["number"],)).fetchone()[0] == 6
    assert oid in [o["id"] for o in client.get("/api/v1/patient/orders", headers=patient).json()]
    # Nobody else's business: another patient, another pharmacy.
    other = bearer(login(client, "patient@demo2.carebase.local"))
    assert client.get(f"/api/v1/patient/orders/{oid}", headers=other).status_code == 404
    other_pharmacist = bearer(login(client, "pharmacist@demo2.carebase.local"))
    assert client.get(f"/api/v1/pharmacy/orders/{oid}", headers=other_pharmacist).status_code == 404
    assert client.get(f"/api/v1/pharmacy/orders/{oid}", headers=patient).status_code == 403


def test_cancel_and_reject_release_the_stock(client, pharmacist, patient):
    pharmacy_id = demo_pharmacy(client, pharmacist)
    m = add(client, pharmacist, stock=5)
    client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": m["id"], "quantity": 3})
    first = checkout(client, patient, pharmacy_id).json()
    assert client.get(f"/api/v1/pharmacy/medicines/{m['id']}", headers=pharmacist).json()["reserved"] == 3
    cancelled = client.patch(f"/api/v1/patient/orders/{first['id']}/cancel", headers=patient,
                             json={"reason": "bought elsewhere"})
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["reason"] == "bought elsewhere"
    assert client.get(f"/api/v1/pharmacy/medicines/{m['id']}", headers=pharmacist).json()["reserved"] == 0
    client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": m["id"], "quantity": 5})
    second = checkout(client, patient, pharmacy_id).json()
    assert_problem(client.post(f"/api/v1/pharmacy/orders/{second['id']}/reject", headers=pharmacist, json={}), 422,
                   "validation-failed")
    rejected = client.post(f"/api/v1/pharmacy/orders/{second['id']}/reject", headers=pharmacist,
                           json={"reason": "batch recalled"}).json()
    assert rejected["status"] == "rejected" and rejected["reason"] == "batch recalled"
    assert client.get(f"/api/v1/pharmacy/medicines/{m['id']}", headers=pharmacist).json()["reserved"] == 0
    assert_problem(client.post(f"/api/v1/pharmacy/orders/{second['id']}/accept", headers=pharmacist), 409,
                   "bad-transition")


def test_more_than_is_free_is_refused_naming_the_item(client, pharmacist, patient):
    pharmacy_id = demo_pharmacy(client, pharmacist)
    m = add(client, pharmacist, stock=2)
    client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": m["id"], "quantity": 3})
    cart = client.get("/api/v1/patient/cart", headers=patient).json()
    assert cart["lines"][0]["problem"] == "only 2 left"
    r = assert_problem(checkout(client, patient, pharmacy_id), 409, "out-of-stock")
    assert m["name"] in r["detail"] and r["medicine_id"] == m["id"] and r["available"] == 2
    # Nothing was ordered or held.
    assert client.get(f"/api/v1/pharmacy/medicines/{m['id']}", headers=pharmacist).json()["reserved"] == 0
    assert client.get("/api/v1/patient/cart", headers=patient).json()["lines"]  # still in the cart
