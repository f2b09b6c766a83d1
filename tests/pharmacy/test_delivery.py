"""Delivery: the built-in local courier (steps by itself, by job) and the Borzo adapter against
its stand-in, including its signed status callbacks."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from carebase.settings import set_settings
from tests.conftest import assert_problem, bearer, login, run_db, tenant_id_of
from tests.pharmacy.test_pharmacy import PHARMACIST, add, checkout, demo_pharmacy, shopper, shopper_login  # noqa: F401
from tests.standins.borzo import BorzoStandIn


@pytest.fixture(scope="module")
def borzo():
    with BorzoStandIn() as standin:
        yield standin


@pytest.fixture
def people(client, shopper):  # noqa: F811  (the fixture)
    return bearer(login(client, PHARMACIST)), shopper_login(client, shopper)


def packed_delivery(client, pharmacist, patient, *, payment_method="cod") -> dict:
    pharmacy_id = demo_pharmacy(client, pharmacist)
    m = add(client, pharmacist, stock=5)
    for line in client.get("/api/v1/patient/cart", headers=patient).json()["lines"]:
        client.delete(f"/api/v1/patient/cart/items/{line['medicine']['id']}", headers=patient)
    client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": m["id"], "quantity": 2})
    order = checkout(client, patient, pharmacy_id, fulfilment="delivery", delivery_address="4 Park Street, Bengaluru",
                     contact_phone="+919800000001", payment_method=payment_method).json()
    client.post(f"/api/v1/pharmacy/orders/{order['id']}/accept", headers=pharmacist)
    assert client.post(f"/api/v1/pharmacy/orders/{order['id']}/pack", headers=pharmacist).json()["status"] == "packed"
    return order


def test_the_local_courier_takes_a_packed_order_and_delivers_it_step_by_step(backend, client, owner, people):
    from carebase.pharmacy import service

    pharmacist, patient = people
    order = packed_delivery(client, pharmacist, patient)
    oid = order["id"]
    r = client.post(f"/api/v1/pharmacy/orders/{oid}/dispatch", headers=pharmacist)
    assert r.status_code == 200, r.text
    shipped = r.json()
    assert shipped["status"] == "shipped" and shipped["courier"] == "local"
    assert_problem(client.post(f"/api/v1/pharmacy/orders/{oid}/dispatch", headers=pharmacist), 409,
                   "not-dispatchable")
    # The next step is a job, due after local_courier_step_seconds.
    assert owner.execute("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'pharmacy.local_courier_step' "
                         "AND args->>'order_id' = %s AND scheduled_at > now()", (oid,)).fetchone()[0] == 1
    tenant = tenant_id_of(owner, "demo")

    def step():
        return run_db(backend, lambda s: service.local_courier_step(s, uuid.UUID(oid)), owner=False, tenant_id=tenant)

    assert step() == "out_for_delivery"
    assert step() == "delivered"
    assert step() is None  # arrived: nothing more
    seen = client.get(f"/api/v1/patient/orders/{oid}", headers=patient).json()
    assert [(e["status"], e["actor"]) for e in seen["events"]][-3:] == [
        ("shipped", "pharmacy"), ("out_for_delivery", "courier"), ("delivered", "courier")]
    assert client.post(f"/api/v1/pharmacy/orders/{oid}/complete", headers=pharmacist).json()["status"] == "completed"


def test_a_pickup_order_never_goes_to_a_courier(client, people):
    pharmacist, patient = people
    pharmacy_id = demo_pharmacy(client, pharmacist)
    m = add(client, pharmacist, stock=2)
    client.post("/api/v1/patient/cart/items", headers=patient, json={"medicine_id": m["id"]})
    order = checkout(client, patient, pharmacy_id).json()
    client.post(f"/api/v1/pharmacy/orders/{order['id']}/accept", headers=pharmacist)
    client.post(f"/api/v1/pharmacy/orders/{order['id']}/pack", headers=pharmacist)
    assert_problem(client.post(f"/api/v1/pharmacy/orders/{order['id']}/dispatch", headers=pharmacist), 409,
                   "not-dispatchable")


def test_borzo_books_the_delivery_and_its_signed_callbacks_move_the_order(backend, server, client, owner, people,
                                                                          borzo):
    pharmacist, patient = people
    order = packed_delivery(client, pharmacist, patient)
    oid = order["id"]
    settings = backend.settings.model_copy(update={
        "courier_provider": "borzo", "courier_base_url": borzo.base_url,
        "courier_api_token": SecretStr(borzo.token),
        "courier_callback_secret": SecretStr(borzo.callback_secret)})
    borzo.reset()
    set_settings(settings)
    try:
        # Borzo down: 503, and the order is still packed, unbooked.
        borzo.fail_next(1, 502, {"is_successful": False})
        assert_problem(client.post(f"/api/v1/pharmacy/orders/{oid}/dispatch", headers=pharmacist), 503,
                       "courier-unavailable")
        assert client.get(f"/api/v1/pharmacy/orders/{oid}", headers=pharmacist).json()["courier"] is None
        booked = client.post(f"/api/v1/pharmacy/orders/{oid}/dispatch", headers=pharmacist).json()
        assert booked["status"] == "packed" and booked["courier"] == "borzo"
        assert booked["tracking_url"].startswith(borzo.url)
        sent = borzo.received[-1].json()
        assert borzo.received[-1].headers["x-dv-auth-token"] == borzo.token
        drop = sent["points"][1]
        assert drop["client_order_id"] == order["number"] and drop["address"] == "4 Park Street, Bengaluru"
        assert drop["taking_amount"] == f"{order['total_minor'] // 100}.{order['total_minor'] % 100:02d}"  # cash due
        ref = owner.execute("SELECT courier_ref FROM pharmacy_orders WHERE id = %s", (oid,)).fetchone()[0]

        # A forged callback is refused and changes nothing.
        forged = borzo.callback(server.url, ref, "finished", secret="not-the-secret")
        assert forged.status_code == 403 and forged.json()["code"] == "bad-signature"
        assert client.get(f"/api/v1/patient/orders/{oid}", headers=patient).json()["status"] == "packed"
        # Picked up, on the way (twice: repeated news changes nothing), delivered.
        assert borzo.callback(server.url, ref, "parcel_picked_up").json()["outcome"] == "applied"
        assert borzo.callback(server.url, ref, "active").json()["outcome"] == "applied"
        assert borzo.callback(server.url, ref, "active").json()["outcome"] == "already there"
        assert borzo.callback(server.url, ref, "planned").json()["outcome"].startswith("nothing to do")
        assert borzo.callback(server.url, ref, "finished").json()["outcome"] == "applied"
        assert borzo.callback(server.url, "999999999", "finished").json()["outcome"] == "unknown booking"
        seen = client.get(f"/api/v1/patient/orders/{oid}", headers=patient).json()
        assert seen["status"] == "delivered"
        assert [(e["status"], e["actor"]) for e in seen["events"]][-3:] == [
            ("shipped", "courier"), ("out_for_delivery", "courier"), ("delivered", "courier")]
        # A wrong token: Borzo refuses, and so does the dispatch (409, naming why).
        other = packed_delivery(client, pharmacist, patient)
        set_settings(settings.model_copy(update={"courier_api_token": SecretStr("wrong")}))
        problem = assert_problem(client.post(f"/api/v1/pharmacy/orders/{other['id']}/dispatch", headers=pharmacist),
                                 409, "courier-refused")
        assert "invalid_auth_token" in problem["detail"]
    finally:
        set_settings(backend.settings)
    # With the local courier configured, Borzo's callback endpoint does not exist here.
    assert borzo.callback(server.url, ref, "finished").status_code == 404
