"""The pharmacy marketplace in the portal.

Pharmacists: the inventory (low stock flagged, stock changes with a reason, CSV import with its
preview) and the order queue, live, with its actions (accept, reject, pack, hand to the courier,
complete). Patients: the shop (search, near their pharmacy or anywhere; fill the cart from a
signed prescription), the cart and checkout, and their orders with live tracking."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from carebase.pharmacy import imports, service, subscriptions
from carebase.platform.authz import Principal
from carebase.platform.errors import DomainError
from carebase.platform.web import DbSession, PagePrincipal, refusable
from carebase.portal.pages import form_command, refusal, render_page, templates
from carebase.prescribing import service as prescribing
from carebase.settings import get_settings

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Form(max_length=500)]


async def _act(session, principal: Principal | None, command, redirect=None,
               error_id: str = "pharmacy-error") -> Response:
    return await form_command(session, principal, command, error_id=error_id, redirect=redirect)


# -- the pharmacist's side --------------------------------------------------------------------


@router.get("/portal/pharmacy/inventory", response_class=HTMLResponse)
async def inventory_page(request: Request, session: DbSession, principal: PagePrincipal, low_stock: bool = False,
                         q: str = ""):
    async def context(p: Principal) -> dict:
        return {"pharmacy": await service.own_pharmacy(session, p), "low_stock": low_stock, "q": q,
                "medicines": await service.list_medicines(session, p, low_stock=low_stock, q=q[:100], limit=500),
                "low": await service.list_medicines(session, p, low_stock=True, limit=500)}

    return await render_page(request, session, principal, "pharmacy/inventory.html", context)


@router.post("/portal/pharmacy/medicines/{medicine_id}/stock", response_class=HTMLResponse)
async def stock_from_page(request: Request, medicine_id: uuid.UUID, session: DbSession, principal: PagePrincipal,
                          reason: Text = "received", change: Text = ""):
    try:
        amount = int(change)
    except ValueError:
        return refusal("The change is a whole number of packs (negative to take away).", "pharmacy-error")
    return await _act(session, principal, lambda: service.change_stock(session, principal, medicine_id,
                                                                       reason=reason, change=amount))


@router.post("/portal/pharmacy/import", response_class=HTMLResponse)
async def import_from_page(request: Request, session: DbSession, principal: PagePrincipal,
                           file: Annotated[UploadFile, File()]):
    if principal is None:
        return HTMLResponse("", status_code=401)
    data = await file.read()
    done = await refusable(session, lambda: imports.preview(session, principal, filename=file.filename, data=data))
    if isinstance(done, DomainError):
        return refusal(done, "import-error")
    return templates.TemplateResponse(request, "pharmacy/_import.html", {"i": done})


@router.post("/portal/pharmacy/import/{import_id}/commit", response_class=HTMLResponse)
async def commit_from_page(request: Request, import_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    return await _act(session, principal, lambda: imports.commit(session, principal, import_id, skip_invalid=True),
                      "/portal/pharmacy/inventory", "import-error")


async def _queue(session, p: Principal) -> dict:
    return {"orders": await service.pharmacy_orders(session, p, open_only=True),
            "poll_seconds": get_settings().portal_poll_seconds}


@router.get("/portal/pharmacy/orders", response_class=HTMLResponse)
async def orders_page(request: Request, session: DbSession, principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        return await _queue(session, p)

    return await render_page(request, session, principal, "pharmacy/orders.html", context)


@router.get("/portal/fragments/pharmacy/orders", response_class=HTMLResponse)
async def orders_fragment(request: Request, session: DbSession, principal: PagePrincipal):
    if principal is None:
        return HTMLResponse("", status_code=401)
    return templates.TemplateResponse(request, "pharmacy/_orders.html", await _queue(session, principal))


@router.post("/portal/pharmacy/orders/{order_id}/{action}", response_class=HTMLResponse)
async def order_action(request: Request, order_id: uuid.UUID, action: str, session: DbSession,
                       principal: PagePrincipal, reason: Text = "", code: Text = ""):
    moves = {"accept": "confirmed", "pack": "packed", "complete": "completed", "reject": "rejected"}
    if action == "delivery-code":
        return await _act(session, principal, lambda: service.verify_delivery_code(session, principal, order_id,
                                                                                    code))
    if action == "dispatch":
        return await _act(session, principal, lambda: service.dispatch(session, principal, order_id))
    if action not in moves:
        return refusal("No such action.", "pharmacy-error")
    return await _act(session, principal, lambda: service.move(session, principal, order_id, moves[action],
                                                               note=reason or None))


# -- the patient's side -----------------------------------------------------------------------


@router.get("/portal/shop", response_class=HTMLResponse)
async def shop_page(request: Request, session: DbSession, principal: PagePrincipal, q: str = "",
                    pharmacy_id: uuid.UUID | None = None):
    async def context(p: Principal) -> dict:
        result = await service.search_medicines(session, p, q=q[:100] or None, pharmacy_id=pharmacy_id, limit=30)
        signed = [rx for rx in await prescribing.mine(session, p)
                  if rx.status == "approved" and not rx.awaiting_patient_signature]
        own = await service.pharmacy_of_tenant(session, p.tenant_id) if p.tenant_id else None
        return {"q": q, "result": result, "prescriptions": signed, "home_pharmacy": own,
                "pharmacy_id": pharmacy_id, "cart_count": len((await service.cart(session, p)).lines)}

    return await render_page(request, session, principal, "pharmacy/shop.html", context)


@router.post("/portal/cart/items", response_class=HTMLResponse)
async def add_from_page(request: Request, session: DbSession, principal: PagePrincipal,
                        medicine_id: Annotated[uuid.UUID, Form()], quantity: Annotated[int, Form(ge=1, le=1000)] = 1):
    if principal is None:
        return HTMLResponse("", status_code=401)
    done = await refusable(session, lambda: service.add_to_cart(session, principal, medicine_id, quantity))
    if isinstance(done, DomainError):
        return refusal(done, "shop-error")
    return HTMLResponse(f'<small class="added">In your cart ({len(done.lines)} item(s)) · '
                        f'<a href="/portal/cart" id="go-to-cart">Go to cart</a></small>')


@router.post("/portal/cart/from-prescription", response_class=HTMLResponse)
async def fill_from_page(request: Request, session: DbSession, principal: PagePrincipal,
                         prescription_id: Annotated[uuid.UUID, Form()], pharmacy_id: Annotated[uuid.UUID, Form()]):
    return await _act(session, principal, lambda: service.fill_cart_from_prescription(
        session, principal, prescription_id, pharmacy_id), "/portal/cart", "shop-error")


@router.get("/portal/cart", response_class=HTMLResponse)
async def cart_page(request: Request, session: DbSession, principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        c = await service.cart(session, p)
        groups: dict[uuid.UUID, list] = {}
        for line in c.lines:
            groups.setdefault(line.medicine.tenant_id, []).append(line)
        return {"groups": groups}

    return await render_page(request, session, principal, "pharmacy/cart.html", context)


@router.post("/portal/cart/items/{medicine_id}/remove", response_class=HTMLResponse)
async def remove_from_page(request: Request, medicine_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    return await _act(session, principal, lambda: service.remove_from_cart(session, principal, medicine_id))


@router.post("/portal/checkout", response_class=HTMLResponse)
async def checkout_from_page(request: Request, session: DbSession, principal: PagePrincipal,
                             pharmacy_id: Annotated[uuid.UUID, Form()], fulfilment: Text = "pickup",
                             contact_name: Text = "", contact_phone: Text = "", delivery_address: Text = "",
                             payment_method: Text = "cod"):
    if not contact_name.strip():
        return refusal("Give the name the pharmacy should ask for.", "checkout-error")
    return await _act(session, principal, lambda: service.checkout(
        session, principal, pharmacy_id=pharmacy_id, fulfilment=fulfilment, contact_name=contact_name,
        contact_phone=contact_phone.strip() or None, delivery_address=delivery_address,
        payment_method=payment_method),
        lambda order: f"/portal/orders/{order.id}", "checkout-error")


@router.get("/portal/orders", response_class=HTMLResponse)
async def my_orders_page(request: Request, session: DbSession, principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        return {"orders": await service.my_orders(session, p)}

    return await render_page(request, session, principal, "pharmacy/my_orders.html", context)


@router.get("/portal/orders/{order_id}", response_class=HTMLResponse)
async def order_page(request: Request, order_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        return {"order": await service.get_order(session, p, order_id),
                "poll_seconds": get_settings().portal_poll_seconds}

    return await render_page(request, session, principal, "pharmacy/order.html", context)


@router.get("/portal/fragments/orders/{order_id}", response_class=HTMLResponse)
async def order_fragment(request: Request, order_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    if principal is None:
        return HTMLResponse("", status_code=401)
    return templates.TemplateResponse(request, "pharmacy/_tracking.html",
                                      {"order": await service.get_order(session, principal, order_id)})


@router.post("/portal/orders/{order_id}/cancel", response_class=HTMLResponse)
async def cancel_from_page(request: Request, order_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    return await _act(session, principal, lambda: service.move(session, principal, order_id, "cancelled",
                                                               note="cancelled in the portal"))


@router.post("/portal/orders/{order_id}/delivery-code/resend", response_class=HTMLResponse)
async def resend_code_from_page(order_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    if principal is None:
        return HTMLResponse("", status_code=401)
    done = await refusable(session, lambda: service.resend_delivery_code(session, principal, order_id))
    if isinstance(done, DomainError):
        return refusal(done, "pharmacy-error")
    return HTMLResponse('<small id="code-sent">A new code is on its way.</small>')


# -- the pharmacy's subscription --------------------------------------------------------------------


@router.get("/portal/pharmacy/subscription", response_class=HTMLResponse)
async def subscription_page(request: Request, session: DbSession, principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        invoices, events = await subscriptions.history(session, p)
        return {"sub": await subscriptions.status(session, p), "invoices": invoices, "events": events,
                "payment": request.query_params.get("payment")}

    return await render_page(request, session, principal, "pharmacy/subscription.html", context)


@router.post("/portal/pharmacy/subscription/checkout", response_class=HTMLResponse)
async def subscription_checkout_from_page(session: DbSession, principal: PagePrincipal, plan: Text = ""):
    return await _act(session, principal, lambda: subscriptions.checkout(session, principal, plan),
                      lambda done: done[1].checkout_url or "/portal/pharmacy/subscription", "subscription-error")


@router.post("/portal/pharmacy/subscription/invoices/{invoice_id}/pay", response_class=HTMLResponse)
async def subscription_pay_from_page(invoice_id: uuid.UUID, session: DbSession, principal: PagePrincipal):
    return await _act(session, principal, lambda: subscriptions.pay_invoice(session, principal, invoice_id),
                      lambda payment: payment.checkout_url or "/portal/pharmacy/subscription", "subscription-error")


@router.post("/portal/pharmacy/subscription/change", response_class=HTMLResponse)
async def subscription_change_from_page(session: DbSession, principal: PagePrincipal, plan: Text = ""):
    return await _act(session, principal, lambda: subscriptions.change_plan(session, principal, plan),
                      error_id="subscription-error")


@router.post("/portal/pharmacy/subscription/cancel", response_class=HTMLResponse)
async def subscription_cancel_from_page(session: DbSession, principal: PagePrincipal):
    return await _act(session, principal, lambda: subscriptions.cancel(session, principal),
                      error_id="subscription-error")
