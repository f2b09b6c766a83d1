"""Pharmacy marketplace API, on the seed's paths: ``/pharmacy/*`` for the pharmacy's staff (its
profile, medicines, stock and order queue), ``/patient/*`` for patients (nearby pharmacies,
search, cart, checkout, their orders)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Header, Query, Request, Response, UploadFile, status
from fastapi.responses import JSONResponse

from carebase.payments.schemas import PaymentOut
from carebase.pharmacy import couriers, imports, schemas, service, subscriptions
from carebase.settings import get_settings
from carebase.platform.authz import require
from carebase.platform.web import (
    CurrentPrincipal,
    DbSession,
    IdempotencyKey,
    db_session,
    if_match_version,
    pdf_response,
    weak_etag,
)

router = APIRouter(prefix="/api/v1", tags=["pharmacy"])


def pharmacy_out(p: service.Pharmacy) -> schemas.PharmacyOut:
    return schemas.PharmacyOut(id=p.id, taking_orders=p.taking_orders,
                               **{k: getattr(p, k) for k in schemas.PharmacyOut.model_fields
                                  if k not in ("id", "taking_orders")})


def medicine_out(m: service.Medicine) -> schemas.MedicineOut:
    return schemas.MedicineOut(**{k: getattr(m, k) for k in schemas.MedicineOut.model_fields})


def cart_out(c: service.Cart, not_found: list[str] | None = None) -> schemas.CartOut:
    return schemas.CartOut(lines=[schemas.CartLineOut(medicine=medicine_out(line.medicine), quantity=line.quantity,
                                                      total_minor=line.total_minor,
                                                      prescription_id=line.prescription_id, problem=line.problem)
                                  for line in c.lines], not_found=not_found or [])


def order_out(o: service.Order) -> schemas.OrderOut:
    return schemas.OrderOut(
        items=[schemas.OrderItemOut(**vars(i)) for i in o.items],
        events=[schemas.OrderEventOut(**vars(e)) for e in o.events],
        status_text=o.status_text, next_statuses=o.next_statuses,
        **{k: getattr(o, k) for k in schemas.OrderOut.model_fields
           if k not in ("items", "events", "status_text", "next_statuses")})


# -- the pharmacy's side -------------------------------------------------------------------------


@router.get("/pharmacy/profile", response_model=schemas.PharmacyOut,
            summary="Your pharmacy's profile (pharmacists)")
async def get_profile(principal: CurrentPrincipal, session: DbSession, response: Response) -> schemas.PharmacyOut:
    p = await service.own_pharmacy(session, principal)
    response.headers["ETag"] = weak_etag(p.version)
    return pharmacy_out(p)


@router.put("/pharmacy/profile", response_model=schemas.PharmacyOut,
            summary="Create or replace your pharmacy's profile: address and location, opening hours, delivery "
                    "radius and fee, licence. A new pharmacy starts on a 30-day trial subscription")
async def put_profile(body: schemas.PharmacyIn, principal: CurrentPrincipal, session: DbSession, response: Response,
                      if_match: Annotated[str | None, Header(max_length=40)] = None) -> schemas.PharmacyOut:
    p = await service.save_pharmacy(session, principal, expected_version=if_match_version(if_match),
                                    **body.model_dump())
    response.headers["ETag"] = weak_etag(p.version)
    return pharmacy_out(p)


@router.post("/pharmacy/medicines", status_code=status.HTTP_201_CREATED, response_model=schemas.MedicineOut,
             summary="Add a medicine to your catalogue; `stock` is its opening stock")
async def add_medicine(body: schemas.NewMedicineIn, principal: CurrentPrincipal, session: DbSession,
                       response: Response) -> schemas.MedicineOut:
    m = await service.add_medicine(session, principal, **body.model_dump())
    response.headers["Location"] = f"/api/v1/pharmacy/medicines/{m.id}"
    response.headers["ETag"] = weak_etag(m.version)
    return medicine_out(m)


@router.get("/pharmacy/medicines", response_model=list[schemas.MedicineOut],
            summary="Your catalogue by name")
async def list_medicines(principal: CurrentPrincipal, session: DbSession,
                         limit: Annotated[int, Query(ge=1, le=500)] = 100,
                         offset: Annotated[int, Query(ge=0, le=10**6)] = 0) -> list[schemas.MedicineOut]:
    return [medicine_out(m) for m in await service.list_medicines(session, principal, limit=limit, offset=offset)]


@router.get("/pharmacy/medicines/low-stock", response_model=list[schemas.MedicineOut],
            summary="Medicines whose free stock is at or below their threshold, fewest first")
async def low_stock(principal: CurrentPrincipal, session: DbSession,
                    limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[schemas.MedicineOut]:
    return [medicine_out(m) for m in await service.list_medicines(session, principal, low_stock=True, limit=limit)]


def import_out(i: imports.Import) -> schemas.ImportOut:
    return schemas.ImportOut(errors=[schemas.RowErrorOut(**e) for e in i.errors],
                             **{k: getattr(i, k) for k in schemas.ImportOut.model_fields if k != "errors"})


@router.post("/pharmacy/medicines/import", status_code=status.HTTP_201_CREATED, response_model=schemas.ImportOut,
             summary="Preview a CSV of your catalogue (multipart `file`, UTF-8, at most 20,000 rows): every row is "
                     "checked and each bad one reported by line, column and message; nothing changes until you "
                     "commit. Columns: " + ", ".join(imports.COLUMNS))
async def preview_import(principal: CurrentPrincipal, session: DbSession, response: Response,
                         file: Annotated[UploadFile, File()]) -> schemas.ImportOut:
    i = await imports.preview(session, principal, filename=file.filename, data=await file.read())
    response.headers["Location"] = f"/api/v1/pharmacy/medicines/import/{i.id}"
    return import_out(i)


@router.get("/pharmacy/medicines/import/{import_id}", response_model=schemas.ImportOut,
            summary="A previewed (or applied) import")
async def get_import(import_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.ImportOut:
    return import_out(await imports.get_import(session, principal, import_id))


@router.post("/pharmacy/medicines/import/{import_id}/commit", response_model=schemas.ImportOut,
             summary="Apply a previewed import: new products are created, known ones (same name, strength, form and "
                     "maker) updated. A file with bad rows is applied only with skip_invalid=true")
async def commit_import(import_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession,
                        skip_invalid: bool = False) -> schemas.ImportOut:
    return import_out(await imports.commit(session, principal, import_id, skip_invalid=skip_invalid))


@router.get("/pharmacy/medicines/{medicine_id}", response_model=schemas.MedicineOut, summary="One of your medicines")
async def get_medicine(medicine_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession,
                       response: Response) -> schemas.MedicineOut:
    require(principal, "manage:own_inventory")
    m = await service.get_medicine(session, principal, medicine_id)
    response.headers["ETag"] = weak_etag(m.version)
    return medicine_out(m)


@router.put("/pharmacy/medicines/{medicine_id}", response_model=schemas.MedicineOut,
            summary="Replace a medicine's details (stock changes go through PATCH …/stock); send If-Match")
async def put_medicine(medicine_id: uuid.UUID, body: schemas.MedicineIn, principal: CurrentPrincipal,
                       session: DbSession, response: Response,
                       if_match: Annotated[str | None, Header(max_length=40)] = None) -> schemas.MedicineOut:
    m = await service.update_medicine(session, principal, medicine_id, expected_version=if_match_version(if_match),
                                      **body.model_dump())
    response.headers["ETag"] = weak_etag(m.version)
    return medicine_out(m)


@router.delete("/pharmacy/medicines/{medicine_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Take a medicine off your catalogue (refused while open orders hold it)")
async def delete_medicine(medicine_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.delete_medicine(session, principal, medicine_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.patch("/pharmacy/medicines/{medicine_id}/stock", response_model=schemas.MedicineOut,
              summary="Change stock with a reason: received/returned add, sold/expired take away, adjusted "
                      "either way or `set_to` a count. Stock never goes below what open orders hold")
async def patch_stock(medicine_id: uuid.UUID, body: schemas.StockIn, principal: CurrentPrincipal,
                      session: DbSession) -> schemas.MedicineOut:
    return medicine_out(await service.change_stock(session, principal, medicine_id, **body.model_dump()))


@router.get("/pharmacy/medicines/{medicine_id}/stock-history", response_model=list[schemas.StockEventOut],
            summary="A medicine's stock changes, newest first")
async def stock_history(medicine_id: uuid.UUID, principal: CurrentPrincipal,
                        session: DbSession) -> list[schemas.StockEventOut]:
    return [schemas.StockEventOut(**{k: getattr(e, k) for k in schemas.StockEventOut.model_fields})
            for e in await service.stock_history(session, principal, medicine_id)]


@router.get("/pharmacy/orders", response_model=list[schemas.OrderOut],
            summary="Your pharmacy's orders: `open=true` is the queue (oldest first); `status` filters")
async def pharmacy_orders(principal: CurrentPrincipal, session: DbSession,
                          status_: Annotated[str | None, Query(alias="status", pattern=r"^[a-z_]{1,20}$")] = None,
                          open: bool = False,
                          limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[schemas.OrderOut]:
    return [order_out(o) for o in await service.pharmacy_orders(session, principal, status=status_, open_only=open,
                                                                 limit=limit)]


@router.get("/pharmacy/orders/{order_id}", response_model=schemas.OrderOut, summary="One of your pharmacy's orders")
async def pharmacy_order(order_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.OrderOut:
    require(principal, "manage:own_orders")
    return order_out(await service.get_order(session, principal, order_id))


@router.patch("/pharmacy/orders/{order_id}/status", response_model=schemas.OrderOut,
              summary="Move an order along: placed → confirmed → packed → shipped → out_for_delivery → delivered → "
                      "completed (a pickup is completed once packed); 409 for any other move")
async def order_status(order_id: uuid.UUID, body: schemas.StatusIn, principal: CurrentPrincipal,
                       session: DbSession) -> schemas.OrderOut:
    require(principal, "manage:own_orders")
    return order_out(await service.move(session, principal, order_id, body.status, note=body.note))


@router.post("/pharmacy/orders/{order_id}/accept", response_model=schemas.OrderOut, summary="Accept a placed order")
async def accept_order(order_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.OrderOut:
    require(principal, "manage:own_orders")
    return order_out(await service.move(session, principal, order_id, "confirmed"))


@router.post("/pharmacy/orders/{order_id}/reject", response_model=schemas.OrderOut,
             summary="Reject an order with the reason the patient will read; its stock is released")
async def reject_order(order_id: uuid.UUID, body: schemas.ReasonIn, principal: CurrentPrincipal,
                       session: DbSession) -> schemas.OrderOut:
    require(principal, "manage:own_orders")
    return order_out(await service.move(session, principal, order_id, "rejected", note=body.reason))


@router.post("/pharmacy/orders/{order_id}/pack", response_model=schemas.OrderOut,
             summary="Confirm the order is packed (checked against its lines)")
async def pack_order(order_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.OrderOut:
    require(principal, "manage:own_orders")
    return order_out(await service.move(session, principal, order_id, "packed"))


@router.post("/pharmacy/orders/{order_id}/dispatch", response_model=schemas.OrderOut,
             summary="Hand a packed delivery order to the courier: the local courier takes it at once (shipped) and "
                     "moves it on by itself; a remote courier (Borzo) by its signed status callbacks")
async def dispatch_order(order_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.OrderOut:
    return order_out(await service.dispatch(session, principal, order_id))


@router.post("/pharmacy/orders/{order_id}/complete", response_model=schemas.OrderOut,
             summary="Complete an order (a delivered one, or a packed pickup handed over): its units leave the stock")
async def complete_order(order_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.OrderOut:
    require(principal, "manage:own_orders")
    return order_out(await service.move(session, principal, order_id, "completed"))


@router.post("/pharmacy/orders/{order_id}/delivery-code", response_model=schemas.OrderOut,
             summary="The courier enters the patient's delivery code (an order paid online): right, and the order is "
                     "delivered and completed and its money released from escrow to the pharmacy; wrong, and nothing "
                     "moves (5 tries per code)")
async def verify_delivery_code(order_id: uuid.UUID, body: schemas.DeliveryCodeIn, principal: CurrentPrincipal,
                               session: DbSession) -> schemas.OrderOut:
    return order_out(await service.verify_delivery_code(session, principal, order_id, body.code))


@router.post("/pharmacy/orders/{order_id}/delivery-code/resend", status_code=status.HTTP_202_ACCEPTED,
             summary="Text the patient a new delivery code (at most one a minute)")
async def pharmacy_resend_code(order_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> dict:
    require(principal, "manage:own_orders")
    await service.resend_delivery_code(session, principal, order_id)
    return {"sent": True}


# -- the pharmacy's subscription (the seed's /pharmacy/subscription/*) ------------------------------


def invoice_out(i: subscriptions.Invoice) -> schemas.InvoiceOut:
    return schemas.InvoiceOut(**vars(i))


def subscription_out(s: subscriptions.Subscription) -> schemas.SubscriptionOut:
    return schemas.SubscriptionOut(**{k: v for k, v in vars(s).items() if k != "plans"},
                                   plans=[schemas.PlanOut(**p) for p in s.plans])


@router.get("/pharmacy/subscription/status", response_model=schemas.SubscriptionOut,
            summary="Your subscription: status, plan, paid until, grace period, the plans and their prices")
async def subscription_status(principal: CurrentPrincipal, session: DbSession) -> schemas.SubscriptionOut:
    return subscription_out(await subscriptions.status(session, principal))


@router.post("/pharmacy/subscription/checkout", status_code=status.HTTP_201_CREATED,
             response_model=schemas.CheckoutOut,
             summary="Pay for a plan through the payment gateway (a new subscription, a reactivation, or the next "
                     "period): an invoice and its payment; the subscription moves when the payment arrives. Needs an "
                     "Idempotency-Key")
async def subscription_checkout(body: schemas.PlanIn, principal: CurrentPrincipal, session: DbSession,
                                _key: IdempotencyKey) -> schemas.CheckoutOut:
    invoice, payment = await subscriptions.checkout(session, principal, body.plan)
    return schemas.CheckoutOut(invoice=invoice_out(invoice), payment=PaymentOut.of(payment))


@router.post("/pharmacy/subscription/change-plan", response_model=schemas.PlanChangeOut,
             summary="Move to another plan now, prorated by the days left: an upgrade's difference is invoiced (pay "
                     "it with .../invoices/{id}/pay), a downgrade's kept as credit for the next renewal")
async def subscription_change(body: schemas.PlanIn, principal: CurrentPrincipal,
                              session: DbSession) -> schemas.PlanChangeOut:
    invoice, credit = await subscriptions.change_plan(session, principal, body.plan)
    return schemas.PlanChangeOut(invoice=invoice_out(invoice) if invoice else None, credit_minor=credit)


@router.post("/pharmacy/subscription/invoices/{invoice_id}/pay", status_code=status.HTTP_201_CREATED,
             response_model=PaymentOut, summary="Pay an open invoice (a plan change, a renewal the payable did not cover) through the gateway. "
                     "Needs an Idempotency-Key")
async def subscription_pay(invoice_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession,
                           _key: IdempotencyKey) -> PaymentOut:
    return PaymentOut.of(await subscriptions.pay_invoice(session, principal, invoice_id))


@router.post("/pharmacy/subscription/cancel", response_model=schemas.SubscriptionOut,
             summary="Cancel: no renewal; the pharmacy keeps selling until the paid period ends")
async def subscription_cancel(principal: CurrentPrincipal, session: DbSession) -> schemas.SubscriptionOut:
    return subscription_out(await subscriptions.cancel(session, principal))


@router.get("/pharmacy/subscription/history", response_model=schemas.SubscriptionHistoryOut,
            summary="Your subscription invoices (newest first) and what happened to the subscription")
async def subscription_history(principal: CurrentPrincipal, session: DbSession) -> schemas.SubscriptionHistoryOut:
    invoices, events = await subscriptions.history(session, principal)
    return schemas.SubscriptionHistoryOut(invoices=[invoice_out(i) for i in invoices],
                                          events=[schemas.SubscriptionEventOut(**vars(e)) for e in events])


@router.get("/pharmacy/subscription/invoices/{invoice_id}/pdf", response_class=Response,
            responses={200: {"content": {"application/pdf": {}}}},
            summary="A subscription invoice as a PDF (a receipt once paid), with its tax line")
async def subscription_invoice_pdf(invoice_id: uuid.UUID, principal: CurrentPrincipal,
                                   session: DbSession) -> Response:
    return pdf_response(*await subscriptions.invoice_pdf(session, principal, invoice_id))


# -- the patient's side --------------------------------------------------------------------------


@router.get("/patient/orders/{order_id}/receipt.pdf", response_class=Response,
            responses={200: {"content": {"application/pdf": {}}}},
            summary="Your receipt for a completed order (PDF)")
async def patient_receipt(order_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    require(principal, "create:orders")
    return pdf_response(*await service.receipt_pdf(session, principal, order_id))


@router.get("/pharmacy/orders/{order_id}/receipt.pdf", response_class=Response,
            responses={200: {"content": {"application/pdf": {}}}},
            summary="The pharmacy's copy of a completed order's receipt (PDF)")
async def pharmacy_receipt(order_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    require(principal, "manage:own_orders")
    return pdf_response(*await service.receipt_pdf(session, principal, order_id))


@router.post("/patient/orders/{order_id}/delivery-code/resend", status_code=status.HTTP_202_ACCEPTED,
             summary="Send yourself a new delivery code for an order at your door (at most one a minute)")
async def patient_resend_code(order_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> dict:
    require(principal, "create:orders")
    await service.resend_delivery_code(session, principal, order_id)
    return {"sent": True}


@router.get("/patient/pharmacies", response_model=list[schemas.PharmacyOut],
            summary="Pharmacies taking orders near a point, nearest first")
async def nearby(principal: CurrentPrincipal, session: DbSession,
                 lat: Annotated[float, Query(ge=-90, le=90)], lon: Annotated[float, Query(ge=-180, le=180)],
                 radius_km: Annotated[float, Query(gt=0, le=100)] = 10,
                 limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[schemas.PharmacyOut]:
    return [pharmacy_out(p) for p in await service.nearby(session, principal, lat=lat, lon=lon, radius_km=radius_km,
                                                          limit=limit)]


@router.get("/patient/pharmacies/{pharmacy_id}", response_model=schemas.PharmacyOut, summary="One pharmacy")
async def pharmacy(pharmacy_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.PharmacyOut:
    return pharmacy_out(await service.get_pharmacy(session, principal, pharmacy_id))


SearchQ = Annotated[str | None, Query(max_length=100, description="Name or generic name; typos are corrected")]


async def _search(session, principal, **kw) -> schemas.MedicinePage:
    result = await service.search_medicines(session, principal, **kw)
    return schemas.MedicinePage(items=[medicine_out(m) for m in result.items], corrected_query=result.corrected)


@router.get("/patient/pharmacies/{pharmacy_id}/medicines", response_model=schemas.MedicinePage,
            summary="Browse one pharmacy's catalogue (same filters as search)")
async def browse(pharmacy_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession, q: SearchQ = None,
                 category: Annotated[str | None, Query(max_length=100)] = None,
                 dosage_form: Annotated[str | None, Query(max_length=50)] = None,
                 requires_prescription: bool | None = None, in_stock: bool | None = None,
                 limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
                 offset: Annotated[int, Query(ge=0, le=10**5)] = 0) -> schemas.MedicinePage:
    await service.get_pharmacy(session, principal, pharmacy_id)
    return await _search(session, principal, q=q, category=category, dosage_form=dosage_form,
                         requires_prescription=requires_prescription, in_stock=in_stock, pharmacy_id=pharmacy_id,
                         limit=limit, offset=offset)


@router.get("/patient/medicines/search", response_model=schemas.MedicinePage,
            summary="Search every listed pharmacy's medicines: full text over name and generic name with typo "
                    "correction; filters combine; with lat/lon only pharmacies within radius_km")
async def search(principal: CurrentPrincipal, session: DbSession, q: SearchQ = None,
                 category: Annotated[str | None, Query(max_length=100)] = None,
                 dosage_form: Annotated[str | None, Query(max_length=50)] = None,
                 requires_prescription: bool | None = None, in_stock: bool | None = None,
                 pharmacy_id: uuid.UUID | None = None,
                 lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
                 lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
                 radius_km: Annotated[float | None, Query(gt=0, le=100)] = None,
                 limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 20,
                 offset: Annotated[int, Query(ge=0, le=10**5)] = 0) -> schemas.MedicinePage:
    return await _search(session, principal, q=q, category=category, dosage_form=dosage_form,
                         requires_prescription=requires_prescription, in_stock=in_stock, pharmacy_id=pharmacy_id,
                         lat=lat, lon=lon, radius_km=radius_km, limit=limit, offset=offset)


@router.get("/patient/medicines/{medicine_id}", response_model=schemas.MedicineOut, summary="One medicine on sale")
async def medicine(medicine_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.MedicineOut:
    require(principal, "read:pharmacies")
    return medicine_out(await service.get_medicine(session, principal, medicine_id))


@router.get("/patient/medicines/{medicine_id}/alternatives", response_model=list[schemas.MedicineOut],
            summary="Generic alternatives: same generic and strength, cheaper first")
async def alternatives(medicine_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession,
                       same_pharmacy: bool = False) -> list[schemas.MedicineOut]:
    require(principal, "read:pharmacies")
    return [medicine_out(m) for m in await service.alternatives(session, principal, medicine_id,
                                                                same_pharmacy=same_pharmacy)]


@router.get("/patient/cart", response_model=schemas.CartOut, summary="Your cart, at today's prices")
async def get_cart(principal: CurrentPrincipal, session: DbSession) -> schemas.CartOut:
    return cart_out(await service.cart(session, principal))


@router.post("/patient/cart/items", response_model=schemas.CartOut, summary="Add packs of a medicine to your cart")
async def add_to_cart(body: schemas.CartItemIn, principal: CurrentPrincipal, session: DbSession) -> schemas.CartOut:
    return cart_out(await service.add_to_cart(session, principal, body.medicine_id, body.quantity))


@router.patch("/patient/cart/items/{medicine_id}", response_model=schemas.CartOut, summary="Change a quantity")
async def set_quantity(medicine_id: uuid.UUID, body: schemas.CartQuantityIn, principal: CurrentPrincipal,
                       session: DbSession) -> schemas.CartOut:
    return cart_out(await service.set_cart_quantity(session, principal, medicine_id, body.quantity))


@router.delete("/patient/cart/items/{medicine_id}", response_model=schemas.CartOut, summary="Remove a medicine")
async def remove(medicine_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.CartOut:
    return cart_out(await service.remove_from_cart(session, principal, medicine_id))


@router.post("/patient/cart/from-prescription", response_model=schemas.CartOut,
             summary="Fill your cart from an approved, signed prescription at a chosen pharmacy: the cheapest "
                     "product of each prescribed generic, as many packs as the prescription covers")
async def from_prescription(body: schemas.FromPrescriptionIn, principal: CurrentPrincipal,
                            session: DbSession) -> schemas.CartOut:
    c, missing = await service.fill_cart_from_prescription(session, principal, body.prescription_id,
                                                           body.pharmacy_id)
    return cart_out(c, missing)


@router.post("/patient/orders", status_code=status.HTTP_201_CREATED, response_model=schemas.OrderOut,
             summary="Check out your cart's items at one pharmacy. 409 names the item when it needs a prescription "
                     "that does not cover it, or when stock ran out; nothing is ordered then")
async def place_order(body: schemas.CheckoutIn, principal: CurrentPrincipal, session: DbSession,
                      response: Response) -> schemas.OrderOut:
    o = await service.checkout(session, principal, **body.model_dump())
    response.headers["Location"] = f"/api/v1/patient/orders/{o.id}"
    return order_out(o)


@router.get("/patient/orders", response_model=list[schemas.OrderOut], summary="Your orders, newest first")
async def my_orders(principal: CurrentPrincipal, session: DbSession,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[schemas.OrderOut]:
    return [order_out(o) for o in await service.my_orders(session, principal, limit=limit)]


@router.get("/patient/orders/{order_id}", response_model=schemas.OrderOut,
            summary="One of your orders with its status history (live on your account channel)")
async def my_order(order_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.OrderOut:
    require(principal, "create:orders")
    return order_out(await service.get_order(session, principal, order_id))


@router.patch("/patient/orders/{order_id}/cancel", response_model=schemas.OrderOut,
              summary="Cancel your order while it is not yet packed; its stock is released")
async def cancel(order_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession,
                 body: schemas.CancelIn | None = None) -> schemas.OrderOut:
    require(principal, "create:orders")
    return order_out(await service.move(session, principal, order_id, "cancelled",
                                        note=body.reason if body else None))


async def borzo_callback(request: Request) -> JSONResponse:
    """Borzo's status callback (``X-DV-Signature``: HMAC-SHA256 of the raw body). A plain route,
    like the messaging providers' webhooks: the signature is checked on the bytes as sent, and a
    booking we do not know is still answered 200 (couriers retry anything else)."""
    body = await request.body()
    update_ = couriers.borzo_callback(get_settings(), body, request.headers.get("x-dv-signature"))
    session = await db_session(request)
    outcome = await service.courier_update(session, update_, "borzo")
    return JSONResponse({"ok": True, "outcome": outcome})


router.add_route("/api/v1/couriers/borzo/callback", borzo_callback, methods=["POST"], include_in_schema=False)
