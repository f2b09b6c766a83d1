"""The pharmacy marketplace through the API: a pharmacy's profile, catalogue and stock; patients'
search, cart and checkout; the prescription rules; the order's state machine."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import assert_problem, bearer, login, tenant_id_of

PATIENT = "patient@demo.carebase.local"
SHOPPER_PASSWORD = "a long shopping passphrase"
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


@pytest.fixture(scope="module")
def shopper(server) -> dict:
    """A patient of the demo clinic of these tests' own: they collect many order updates and
    prescription notices, which must not use up the demo patient's hourly allowance of optional
    notices that other tests count on."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as client:
        email = f"shopper-{uuid.uuid4().hex[:8]}@example.test"
        r = client.post("/api/v1/auth/register", json={"email": email, "password": SHOPPER_PASSWORD,
                                                       "display_name": "Sam Shopper", "tenant": "demo"})
        assert r.status_code == 201, r.text
        admin = bearer(login(client, "admin@demo.carebase.local"))
        r = client.post("/api/v1/patients", headers=admin, json={
            "given_name": "Sam", "family_name": "Shopper", "birth_date": "1985-06-07", "account_id": r.json()["id"],
            "allow_duplicate": True})
        assert r.status_code == 201, r.text
        return {"email": email, "patient_id": r.json()["id"]}


def shopper_login(client, shopper) -> dict:
    return bearer(login(client, shopper["email"], SHOPPER_PASSWORD))


@pytest.fixture
def patient(client, shopper):
    tokens = shopper_login(client, shopper)
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
    r = client.put("/api/v1/pharmacy/profile", headers=pharmacist,
                   json={**bad, "opening_hours": {"mon": [["21:00", "09:00"]]}})
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
    counted = client.patch(url, headers=pharmacist, json={"reason": "adjusted", "set_to": 4, "note": "counted"})
    assert counted.json()["stock"] == 4
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
    # Browsing one pharmacy's catalogue: only its own medicines.
    shelf = client.get(f"/api/v1/patient/pharmacies/{tenant}/medicines", headers=patient, params={"limit": 100}).json()
    assert shelf["items"] and {i["pharmacy_id"] for i in shelf["items"]} == {str(tenant)}
    crocin = next(i for i in shelf["items"] if i["name"] == "Crocin 500")
    client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": crocin["id"]})
    owner.execute("UPDATE pharmacies SET subscription_status = 'expired' WHERE tenant_id = %s", (tenant,))
    try:
        # New orders are refused with a message that says why, and nothing is ordered.
        problem = assert_problem(checkout(client, patient, str(tenant)), 409, "pharmacy-not-taking-orders")
        assert "subscription" in problem["detail"]
        assert client.get(f"/api/v1/patient/pharmacies/{tenant}", headers=patient).status_code == 404
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


def test_an_over_the_counter_order_from_cart_to_completion(backend, client, pharmacist, patient, owner):
    pharmacy_id = demo_pharmacy(client, pharmacist)
    m = add(client, pharmacist, stock=10, price_minor=4500, mrp_minor=5000)
    cart = client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": m["id"], "quantity": 2})
    assert cart.status_code == 200, cart.text
    cart = client.post("/api/v1/patient/cart/items", headers=patient,
                       json={"medicine_id": m["id"], "quantity": 1}).json()
    assert [(line["quantity"], line["total_minor"]) for line in cart["lines"]] == [(3, 13500)]
    cart = client.patch(f"/api/v1/patient/cart/items/{m['id']}", headers=patient, json={"quantity": 4}).json()
    assert cart["lines"][0]["quantity"] == 4
    # The price changes after it was put in the cart: checkout charges today's price.
    got = client.get(f"/api/v1/pharmacy/medicines/{m['id']}", headers=pharmacist)
    body = {k: v for k, v in medicine(name=m["name"], price_minor=4000).items() if k != "stock"}
    assert client.put(f"/api/v1/pharmacy/medicines/{m['id']}", headers={**pharmacist, "If-Match": got.headers["ETag"]},
                      json=body).status_code == 200
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
    # Its pharmacists are told by a job in the pharmacy's own tenant.
    from carebase.pharmacy import service
    from tests.conftest import run_db

    assert owner.execute("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'pharmacy.tell_new_order' "
                         "AND args->>'order_id' = %s", (order["id"],)).fetchone()[0] == 1
    assert run_db(backend, lambda s: service.tell_new_order(s, uuid.UUID(order["id"])), owner=False,
                  tenant_id=uuid.UUID(pharmacy_id)) is True
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


def test_a_patient_of_another_clinic_buys_here(backend, client, owner, pharmacist):
    """The marketplace crosses organizations: demo2's patient orders at the demo clinic's pharmacy,
    sees the order among their own, is told of its progress; the demo pharmacist handles it."""
    from carebase.pharmacy import service
    from tests.conftest import run_db

    pharmacy_id = demo_pharmacy(client, pharmacist)
    m = add(client, pharmacist, stock=3)
    buyer = bearer(login(client, "patient@demo2.carebase.local"))
    for line in client.get("/api/v1/patient/cart", headers=buyer).json()["lines"]:
        client.delete(f"/api/v1/patient/cart/items/{line['medicine']['id']}", headers=buyer)
    assert client.post("/api/v1/patient/cart/items", headers=buyer, json={"medicine_id": m["id"]}).status_code == 200
    r = checkout(client, buyer, pharmacy_id, contact_name="Ravi Kumar")
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["pharmacy_name"] == "Demo Clinic Pharmacy"
    assert order["id"] in [o["id"] for o in client.get("/api/v1/patient/orders", headers=buyer).json()]
    assert run_db(backend, lambda s: service.tell_new_order(s, uuid.UUID(order["id"])), owner=False,
                  tenant_id=uuid.UUID(pharmacy_id)) is True
    accepted = client.post(f"/api/v1/pharmacy/orders/{order['id']}/accept", headers=pharmacist)
    assert accepted.status_code == 200, accepted.text
    # Told in their own clinic's notices (by a job there), where they read them.
    account = owner.execute("SELECT id FROM accounts WHERE email = 'patient@demo2.carebase.local'").fetchone()[0]
    (args,), = owner.execute("SELECT args FROM procrastinate_jobs WHERE task_name = 'pharmacy.tell_patient' "
                             "AND args->>'order_id' = %s", (order["id"],)).fetchall()
    demo2 = tenant_id_of(owner, "demo2")
    assert args["tenant_id"] == str(demo2) and args["account_id"] == str(account)
    assert run_db(backend, lambda s: service.tell_patient(s, demo2, **{k: v for k, v in args.items()
                                                                      if k != "tenant_id"}),
                  owner=False, tenant_id=demo2) is True
    notices = client.get("/api/v1/notifications", headers=buyer).json()
    assert any(n["kind"] == "order.status" and order["number"] in n["title"] for n in notices), notices
    cancelled = client.patch(f"/api/v1/patient/orders/{order['id']}/cancel", headers=buyer, json={})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    assert client.get(f"/api/v1/pharmacy/medicines/{m['id']}", headers=pharmacist).json()["reserved"] == 0
    # demo2's own staff see nothing of it: it is the demo pharmacy's order.
    assert client.get(f"/api/v1/pharmacy/orders/{order['id']}",
                      headers=bearer(login(client, "pharmacist@demo2.carebase.local"))).status_code == 404


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


# -- prescriptions at checkout --------------------------------------------------------------------


def signed_prescription(client, owner, items: list[dict], *, sign: bool = True, shopper: dict | None = None) -> str:
    """The demo doctor writes, approves and signs a prescription for the patient (the shopper, or
    the demo patient), who signs it."""
    from tests.conftest import demo_patient
    from tests.prescribing.test_prescriptions import _signature_png

    doctor = bearer(login(client, DOCTOR))
    patient_id = shopper["patient_id"] if shopper else demo_patient(owner)
    r = client.post(f"/api/v1/patients/{patient_id}/prescriptions", headers=doctor, json={"items": items})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = client.post(f"/api/v1/prescriptions/{pid}/approve", headers=doctor,
                    json={"notes": "as directed", "override_reason": "reviewed in clinic"})
    assert r.status_code == 200, r.text
    if sign:
        signer = shopper_login(client, shopper) if shopper else bearer(login(client, PATIENT))
        r = client.post(f"/api/v1/prescriptions/{pid}/patient-signature", headers=signer,
                        json={"image": _signature_png()})
        assert r.status_code == 200, r.text
    return pid


def find(client, patient, q: str) -> dict:
    items = client.get("/api/v1/patient/medicines/search", headers=patient,
                       params={"q": q, "lat": 12.97, "lon": 77.60}).json()["items"]
    return next(i for i in items if i["pharmacy_name"] == "Demo Clinic Pharmacy")


def test_prescription_only_medicines_need_a_prescription_that_covers_them(client, owner, pharmacist, patient,
                                                                        shopper):
    pharmacy_id = demo_pharmacy(client, pharmacist)
    azithral, mox = find(client, patient, "azithral"), find(client, patient, "mox")
    # No prescription: 409 naming the item, nothing ordered.
    client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": azithral["id"]})
    problem = assert_problem(checkout(client, patient, pharmacy_id), 409, "prescription-required")
    assert "Azithral 500" in problem["detail"] and problem["medicine_id"] == azithral["id"]
    # 500 mg once a day for 3 days: 3 tablets, one pack of 3.
    items = [{"medicine": "azithromycin", "dose": 500, "unit": "mg", "times_per_day": 1, "duration_days": 3}]
    unsigned = signed_prescription(client, owner, items, sign=False, shopper=shopper)
    assert_problem(client.post("/api/v1/patient/cart/from-prescription", headers=patient,
                               json={"prescription_id": unsigned, "pharmacy_id": pharmacy_id}), 409,
                   "prescription-unsigned")
    pid = signed_prescription(client, owner, items, shopper=shopper)
    client.delete(f"/api/v1/patient/cart/items/{azithral['id']}", headers=patient)
    cart = client.post("/api/v1/patient/cart/from-prescription", headers=patient,
                       json={"prescription_id": pid, "pharmacy_id": pharmacy_id}).json()
    assert [(line["medicine"]["name"], line["quantity"], line["prescription_id"]) for line in cart["lines"]] == [
        ("Azithral 500", 1, pid)]
    # Another pharmacist's medicine that is not on it: refused, naming it.
    client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": mox["id"]})
    assert_problem(checkout(client, patient, pharmacy_id, prescription_id=pid), 409, "not-prescribed")
    client.delete(f"/api/v1/patient/cart/items/{mox['id']}", headers=patient)
    # More than it covers: refused.
    client.patch(f"/api/v1/patient/cart/items/{azithral['id']}", headers=patient, json={"quantity": 2})
    problem = assert_problem(checkout(client, patient, pharmacy_id), 409, "over-prescribed")
    assert problem["allowed"] == 1
    client.patch(f"/api/v1/patient/cart/items/{azithral['id']}", headers=patient, json={"quantity": 1})
    order = checkout(client, patient, pharmacy_id)
    assert order.status_code == 201, order.text
    assert order.json()["prescription_id"] == pid
    # It is used up: the same prescription covers no more.
    client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": azithral["id"]})
    assert assert_problem(checkout(client, patient, pharmacy_id, prescription_id=pid), 409,
                          "over-prescribed")["allowed"] == 0
    # A revoked prescription is worth nothing.
    doctor = bearer(login(client, DOCTOR))
    client.delete(f"/api/v1/patient/cart/items/{azithral['id']}", headers=patient)
    pid2 = signed_prescription(client, owner, items, shopper=shopper)
    assert client.post(f"/api/v1/prescriptions/{pid2}/revoke", headers=doctor, json={"reason": "wrong patient"}
                       ).status_code == 200
    client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": azithral["id"]})
    assert_problem(checkout(client, patient, pharmacy_id, prescription_id=pid2), 409, "prescription-not-dispensable")
    # Someone else's prescription does not exist for this patient.
    other = bearer(login(client, "patient@demo2.carebase.local"))
    assert client.post("/api/v1/patient/cart/from-prescription", headers=other,
                       json={"prescription_id": pid, "pharmacy_id": pharmacy_id}).status_code == 404


def test_a_controlled_medicine_is_dispensed_once_per_prescription(client, owner, pharmacist, patient, shopper):
    pharmacy_id = demo_pharmacy(client, pharmacist)
    alprax = find(client, patient, "alprax")
    assert alprax["controlled_schedule"] == "H1"
    pid = signed_prescription(client, owner, [{"medicine": "alprazolam", "dose": 0.25, "unit": "mg",
                                               "times_per_day": 1, "duration_days": 30}],
                              shopper=shopper)  # 30 tablets: 2 packs
    client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": alprax["id"], "quantity": 1})
    first = checkout(client, patient, pharmacy_id, prescription_id=pid)
    assert first.status_code == 201, first.text
    # A cancelled order did not dispense: the prescription may be used again, but only once.
    client.patch(f"/api/v1/patient/orders/{first.json()['id']}/cancel", headers=patient, json={})
    client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": alprax["id"], "quantity": 1})
    assert checkout(client, patient, pharmacy_id, prescription_id=pid).status_code == 201
    client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": alprax["id"], "quantity": 1})
    assert_problem(checkout(client, patient, pharmacy_id, prescription_id=pid), 409, "controlled-already-dispensed")


@pytest.mark.parametrize(("line", "strength", "pack", "packs"), [
    ({"quantity": 21}, "500 mg", 10, 3),  # the prescriber's own count wins
    ({"dose": 1000, "unit": "mg", "times_per_day": 3, "duration_days": 5}, "500 mg", 10, 3),  # 2 a dose: 30 tablets
    ({"dose": 500, "unit": "mg", "times_per_day": 2, "duration_days": 5}, "0.5 g", 10, 1),
    ({"dose": 100, "unit": "mcg", "times_per_day": 2, "duration_days": 30}, "100 mcg", None, 60),
    ({"dose": 5, "unit": "mL", "times_per_day": 3}, "125 mg/5 mL", 1, 1),  # unknown: one pack
])
def test_what_a_prescription_line_covers(line, strength, pack, packs):
    from carebase.pharmacy import service

    med = service.Medicine(
        id=uuid.uuid4(), tenant_id=uuid.uuid4(), name="x", generic_name="x", generic_key="x", category="x",
        manufacturer=None, description=None, dosage_form=None, strength=strength, pack_size=pack, mrp_minor=1,
        price_minor=1, currency="INR", stock=0, reserved=0, low_stock_threshold=0, requires_prescription=True,
        controlled_schedule=None, image_url=None, is_available=True, version=1)
    assert service.packs_covered(line, med) == packs


# -- stock under concurrency, expiry, alerts ------------------------------------------------------


def _as_buyers(backend, fn, accounts, tenant):
    """Run ``fn(session, principal)`` for every account at once, each in its own transaction as
    the app role (row-level security on); returns "ok" or the refusal's code per account."""
    import asyncio

    from carebase.platform.authz import Principal
    from carebase.platform.db import Database
    from carebase.platform.errors import DomainError

    async def go():
        db = Database(backend.settings, backend.urls)

        async def one(account):
            try:
                async with db.transaction(tenant, account) as session:
                    await fn(session, Principal.of(account, tenant, ["patient"]))
                return "ok"
            except DomainError as exc:
                return f"{exc.status} {exc.code}: {exc.detail}"

        try:
            return await asyncio.gather(*(one(a) for a in accounts))
        finally:
            await db.dispose()

    return asyncio.run(go())


def test_200_concurrent_checkouts_for_37_units_sell_exactly_37(backend, client, owner, pharmacist):
    from carebase.pharmacy import service

    pharmacy_id = demo_pharmacy(client, pharmacist)
    m = add(client, pharmacist, stock=37, low_stock_threshold=0)
    buyers = [uuid.uuid4() for _ in range(200)]  # 200 patients, each with one pack in their cart
    with owner.cursor() as cur:
        cur.executemany("INSERT INTO cart_items (account_id, medicine_id, pharmacy_id, quantity) "
                        "VALUES (%s, %s, %s, 1)",
                        [(b, m["id"], pharmacy_id) for b in buyers])

    async def buy(session, principal):
        await service.checkout(session, principal, pharmacy_id=uuid.UUID(pharmacy_id), fulfilment="pickup",
                               contact_name="Concurrent Buyer")

    results = _as_buyers(backend, buy, buyers, tenant_id_of(owner, "demo"))
    assert results.count("ok") == 37, sorted(set(results))
    losers = [r for r in results if r != "ok"]
    assert len(losers) == 163 and all(r.startswith("409 out-of-stock: ") and m["name"] in r for r in losers), \
        sorted(set(losers))[:3]
    stock, reserved = owner.execute("SELECT stock, reserved FROM pharmacy_medicines WHERE id = %s",
                                    (m["id"],)).fetchone()
    assert (stock, reserved) == (37, 37)
    assert owner.execute("SELECT count(*), sum(i.quantity) FROM pharmacy_order_items i JOIN pharmacy_orders o "
                         "ON o.id = i.order_id WHERE i.medicine_id = %s AND o.status = 'placed' AND o.stock_held",
                         (m["id"],)).fetchone() == (37, 37)
    # The losers' carts are untouched, the winners' emptied.
    assert owner.execute("SELECT count(*) FROM cart_items WHERE medicine_id = %s", (m["id"],)).fetchone()[0] == 163


def test_an_unpaid_online_order_expires_and_lets_its_stock_go(backend, client, owner, pharmacist, patient):
    from carebase.pharmacy import service
    from tests.conftest import run_db

    pharmacy_id = demo_pharmacy(client, pharmacist)
    m = add(client, pharmacist, stock=5)
    client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": m["id"], "quantity": 2})
    order = checkout(client, patient, pharmacy_id, payment_method="online").json()
    assert order["payment_status"] == "pending" and order["expires_at"]
    # Its expiry job is queued for the deadline.
    assert owner.execute("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'pharmacy.expire_unpaid' "
                         "AND args->>'order_id' = %s AND scheduled_at IS NOT NULL", (order["id"],)).fetchone()[0] == 1
    tenant = tenant_id_of(owner, "demo")

    def expire():
        return run_db(backend, lambda s: service.expire_unpaid(s, uuid.UUID(order["id"])), owner=False,
                      tenant_id=tenant)

    assert expire() is False  # not yet due
    owner.execute("UPDATE pharmacy_orders SET expires_at = now() - interval '1 second' WHERE id = %s", (order["id"],))
    assert expire() is True
    after = client.get(f"/api/v1/patient/orders/{order['id']}", headers=patient).json()
    assert after["status"] == "expired" and after["events"][-1]["actor"] == "system"
    assert client.get(f"/api/v1/pharmacy/medicines/{m['id']}", headers=pharmacist).json()["reserved"] == 0
    assert expire() is False  # once


def test_the_low_stock_alert_tells_the_pharmacists_once_per_fall(backend, client, owner, pharmacist):
    from carebase.pharmacy import service
    from tests.conftest import run_db

    m = add(client, pharmacist, stock=12, low_stock_threshold=10)
    tenant = tenant_id_of(owner, "demo")
    account = owner.execute("SELECT id FROM accounts WHERE email = %s", (PHARMACIST,)).fetchone()[0]

    def alert():
        return run_db(backend, lambda s: service.low_stock_alert(s, tenant, uuid.UUID(m["id"])), owner=False,
                      tenant_id=tenant)

    def told():
        return owner.execute("SELECT count(*) FROM notifications WHERE account_id = %s AND kind = 'stock.low' "
                             "AND title = %s", (account, f"Low stock: {m['name']}")).fetchone()[0]

    assert alert() is False and told() == 0  # 12 > 10
    client.patch(f"/api/v1/pharmacy/medicines/{m['id']}/stock", headers=pharmacist,
                 json={"reason": "expired", "change": -3})
    assert alert() is True and told() == 1
    assert alert() is True and told() == 1  # the same fall: told once
    client.patch(f"/api/v1/pharmacy/medicines/{m['id']}/stock", headers=pharmacist,
                 json={"reason": "sold", "change": -1})
    assert alert() is True and told() == 2  # lower still: told again


# -- CSV import -----------------------------------------------------------------------------------

# (line in the file, column, cell that breaks it): 30 bad rows spread through 10,000.
BAD_CELLS = [("price", "9999.00"), ("mrp", "abc"), ("name", ""), ("requires_prescription", "maybe"),
             ("pack_size", "ten"), ("mrp", "12.345"), ("stock", "-4"), ("category", ""), ("image_url", "ftp://x"),
             ("controlled_schedule", "H 1!")]


def catalogue_csv(rows: int, bad_every: int = 0) -> tuple[bytes, list[tuple[int, str]]]:
    """A pharmacy's export: ``rows`` products, every ``bad_every``-th broken in one cell."""
    import csv
    import io

    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["Name", "generic_name", "category", "dosage_form", "strength", "pack_size", "mrp", "price",
                "stock", "requires_prescription", "manufacturer", "image_url", "controlled_schedule"])
    bad = []
    generics = ["paracetamol", "ibuprofen", "cetirizine", "amoxicillin", "metformin"]
    for i in range(rows):
        row = {"name": f"Importol {i:05d}", "generic_name": generics[i % 5], "category": "Painkiller",
               "dosage_form": "Tablet", "strength": f"{(i % 4 + 1) * 125} mg", "pack_size": "10",
               "mrp": f"{10 + i % 90}.50", "price": f"{10 + i % 90}.00", "stock": str(i % 50),
               "requires_prescription": "yes" if i % 3 == 0 else "no", "manufacturer": "Importco",
               "image_url": "", "controlled_schedule": ""}
        if bad_every and i % bad_every == bad_every - 1:
            column, cell = BAD_CELLS[len(bad) % len(BAD_CELLS)]
            row[column] = cell
            bad.append((i + 2, column))  # line 1 is the header
        w.writerow(row.values())
    return out.getvalue().encode(), bad


def test_a_10000_row_csv_with_30_bad_rows_imports_the_good_ones_when_asked(client, pharmacist, owner):
    data, bad = catalogue_csv(10_000, bad_every=333)
    assert len(bad) == 30
    tenant = tenant_id_of(owner, "demo")
    before = owner.execute("SELECT count(*) FROM pharmacy_medicines WHERE tenant_id = %s AND deleted_at IS NULL",
                           (tenant,)).fetchone()[0]
    r = client.post("/api/v1/pharmacy/medicines/import", headers=pharmacist,
                    files={"file": ("catalogue.csv", data, "text/csv")})
    assert r.status_code == 201, r.text
    preview = r.json()
    assert (preview["total_rows"], preview["valid_rows"], preview["creates"], preview["updates"]) == (
        10_000, 9_970, 9_970, 0)
    assert [(e["line"], e["column"]) for e in preview["errors"]] == bad
    assert all(e["message"] for e in preview["errors"])
    # Nothing changed yet; with errors, nothing is applied unless asked.
    assert owner.execute("SELECT count(*) FROM pharmacy_medicines WHERE tenant_id = %s AND deleted_at IS NULL",
                         (tenant,)).fetchone()[0] == before
    url = f"/api/v1/pharmacy/medicines/import/{preview['id']}/commit"
    assert assert_problem(client.post(url, headers=pharmacist), 409, "import-has-errors")["errors"] == 30
    done = client.post(url, headers=pharmacist, params={"skip_invalid": "true"})
    assert done.status_code == 200, done.text
    assert done.json()["result"] == {"created": 9_970, "updated": 0, "unchanged": 0, "skipped": 30}
    assert_problem(client.post(url, headers=pharmacist, params={"skip_invalid": "true"}), 409, "import-committed")
    assert owner.execute("SELECT count(*) FROM pharmacy_medicines WHERE tenant_id = %s AND deleted_at IS NULL",
                         (tenant,)).fetchone()[0] == before + 9_970
    assert owner.execute("SELECT count(*), sum(e.change) FROM pharmacy_stock_events e JOIN pharmacy_medicines m "
                         "ON m.id = e.medicine_id WHERE m.name LIKE 'Importol %%' AND e.reason = 'received'"
                         ).fetchone()[0] > 9_000
    # The same file again updates instead of duplicating: here, nothing to change at all.
    again = client.post("/api/v1/pharmacy/medicines/import", headers=pharmacist,
                        files={"file": ("catalogue.csv", data, "text/csv")}).json()
    assert (again["creates"], again["updates"]) == (0, 9_970)
    result = client.post(f"/api/v1/pharmacy/medicines/import/{again['id']}/commit", headers=pharmacist,
                         params={"skip_invalid": "true"}).json()["result"]
    assert result == {"created": 0, "updated": 0, "unchanged": 9_970, "skipped": 30}
    assert owner.execute("SELECT count(*) FROM pharmacy_medicines WHERE tenant_id = %s AND deleted_at IS NULL",
                         (tenant,)).fetchone()[0] == before + 9_970
    # Imported products are searchable at once, typos included.
    patient = bearer(login(client, "patient@demo.carebase.local"))
    hits = client.get("/api/v1/patient/medicines/search", headers=patient,
                      params={"q": "importol 00042", "pharmacy_id": demo_pharmacy(client, pharmacist)}).json()
    assert hits["items"][0]["name"] == "Importol 00042" and hits["items"][0]["price_minor"] == 5200


def test_a_reimport_updates_prices_and_counts_stock_as_an_adjustment(client, pharmacist, owner):
    name = f"Reimportin {uuid.uuid4().hex[:6]}"
    first = f"name,category,strength,mrp,price,stock\n{name},Antacid,40 mg,100.00,90.00,20\n".encode()
    second = f"name,category,strength,mrp,price,stock\n{name},Antacid,40 mg,100.00,85.00,26\n".encode()
    for data in (first, second):
        i = client.post("/api/v1/pharmacy/medicines/import", headers=pharmacist,
                        files={"file": ("c.csv", data, "text/csv")}).json()
        assert i["errors"] == [], i
        client.post(f"/api/v1/pharmacy/medicines/import/{i['id']}/commit", headers=pharmacist)
    (mid, price, stock), = owner.execute("SELECT id, price_minor, stock FROM pharmacy_medicines WHERE name = %s",
                                         (name,)).fetchall()
    assert (price, stock) == (8500, 26)
    history = client.get(f"/api/v1/pharmacy/medicines/{mid}/stock-history", headers=pharmacist).json()
    assert [(e["reason"], e["change"]) for e in history] == [("adjusted", 6), ("received", 20)]
    # And the API refuses a second copy of the same product.
    assert_problem(client.post("/api/v1/pharmacy/medicines", headers=pharmacist, json=medicine(
        name=name, category="Antacid", strength="40 mg", dosage_form=None, generic_name=None)), 409, "medicine-exists")


@pytest.mark.parametrize(("data", "code"), [
    (b"\xff\xfe\x00n", "bad-csv"),
    (b"", "bad-csv"),
    (b"name,price\nX,1.00\n", "bad-csv"),  # no category, no mrp
])
def test_a_file_that_is_not_a_catalogue_is_refused(client, pharmacist, owner, data, code):
    before = owner.execute("SELECT count(*) FROM pharmacy_medicine_imports").fetchone()[0]
    assert_problem(client.post("/api/v1/pharmacy/medicines/import", headers=pharmacist,
                               files={"file": ("c.csv", data, "text/csv")}), 422, code)
    assert owner.execute("SELECT count(*) FROM pharmacy_medicine_imports").fetchone()[0] == before


def test_an_import_without_a_file_or_by_a_patient_is_refused(client, pharmacist, patient):
    r = client.post("/api/v1/pharmacy/medicines/import", headers=pharmacist, data={"nothing": "here"})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert client.post("/api/v1/pharmacy/medicines/import", headers=patient,
                       files={"file": ("c.csv", b"name,category,mrp\nX,Y,1\n", "text/csv")}).status_code == 403
