"""Payment pages: the sandbox gateway's hosted checkout (the built-in provider's page, reached by
its unguessable payment id, like a real provider's) and the patient's wallet."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from carebase.payments import service
from carebase.platform.authz import Principal
from carebase.platform.web import DbSession, PagePrincipal
from carebase.portal.pages import form_command, refusal, render_page, templates

router = APIRouter(include_in_schema=False)


@router.get("/pay/sandbox/{ref}", response_class=HTMLResponse)
async def sandbox_checkout(request: Request, ref: str, session: DbSession) -> Response:
    charge, payment = await service.sandbox_checkout(session, ref)
    return templates.TemplateResponse(request, "payments/sandbox_checkout.html",
                                      {"charge": charge, "payment": payment})


@router.post("/pay/sandbox/{ref}")
async def sandbox_pay(request: Request, ref: str, session: DbSession,
                      outcome: Annotated[str, Form(pattern="^(pay|fail)$")]) -> Response:
    result = await service.sandbox_settle(session, ref, outcome)
    _, payment = await service.sandbox_checkout(session, ref)
    back = (payment.return_url if payment and payment.return_url else "/portal") + (
        f"{'&' if '?' in (payment.return_url or '') else '?'}payment={result.split(':')[0].replace(' ', '-')}")
    return RedirectResponse(back, status_code=303)


@router.get("/portal/wallet", response_class=HTMLResponse)
async def wallet_page(request: Request, session: DbSession, principal: PagePrincipal) -> Response:
    async def context(p: Principal) -> dict:
        return {"wallet": await service.wallet(session, p), "payment": request.query_params.get("payment")}

    return await render_page(request, session, principal, "payments/wallet.html", context)


@router.post("/portal/wallet/top-up", response_class=HTMLResponse)
async def top_up_from_page(session: DbSession, principal: PagePrincipal,
                           amount: Annotated[str, Form(max_length=12)] = "") -> Response:
    try:
        rupees = int(amount)
    except ValueError:
        return refusal("The amount is a whole number of rupees.", "top-up-refused")
    return await form_command(session, principal, lambda: service.top_up(session, principal,
                                                                         amount_minor=rupees * 100),
                              error_id="top-up-refused", redirect=lambda p: p.checkout_url)


@router.post("/portal/orders/{order_id}/pay", response_class=HTMLResponse)
async def pay_order_from_page(order_id: uuid.UUID, session: DbSession, principal: PagePrincipal,
                              use_wallet: Annotated[str, Form(max_length=5)] = "") -> Response:
    """Pay for an order from its tracking page: the wallet first when asked, then the checkout page
    (or straight back to the order when the wallet covered it)."""
    return await form_command(
        session, principal,
        lambda: service.create_intent(session, principal, purpose="order", reference_id=order_id,
                                      use_wallet=bool(use_wallet)),
        error_id="pay-refused",
        redirect=lambda p: p.checkout_url or f"/portal/orders/{order_id}?payment=succeeded")


@router.get("/portal/pharmacy/payouts", response_class=HTMLResponse)
async def payouts_page(request: Request, session: DbSession, principal: PagePrincipal) -> Response:
    """The pharmacy's money: held in escrow, released and waiting, paid out (with a chart of the
    payouts), and its recent transactions."""
    async def context(p: Principal) -> dict:
        return {"balances": await service.merchant_balance(session, p),
                "transactions": await service.transactions(session, p, merchant=True, limit=50)}

    return await render_page(request, session, principal, "payments/payouts.html", context)


@router.get("/portal/revenue", response_class=HTMLResponse)
async def revenue_page(request: Request, session: DbSession, principal: PagePrincipal) -> Response:
    """Daily revenue as a chart and a table (admins and pharmacists)."""
    async def context(p: Principal) -> dict:
        days = await service.revenue(session, p, days=30)
        currencies = sorted({d.currency for d in days})
        # Oldest first for the chart.
        series = {c: [vars(d) for d in reversed(days) if d.currency == c] for c in currencies}
        return {"days": days, "currencies": currencies, "series": series}

    return await render_page(request, session, principal, "payments/revenue.html", context)
