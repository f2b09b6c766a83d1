"""Payments API, on the seed's paths (``/payments/create-intent``, ``confirm``, ``webhook``,
``transactions``, ``refund``), plus the wallet and the merchant's balance. Every POST that moves
money needs an ``Idempotency-Key``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse

from carebase.payments import schemas, service
from carebase.platform.authz import require
from carebase.platform.web import CurrentPrincipal, DbSession, IdempotencyKey, db_session
from carebase.settings import get_settings

router = APIRouter(prefix="/api/v1", tags=["payments"])


@router.post("/payments/create-intent", status_code=status.HTTP_201_CREATED, response_model=schemas.PaymentOut,
             summary="Pay for your order: from your wallet (`use_wallet` or `wallet_minor`) and/or through the "
                     "gateway; send the payer to `checkout_url`. The order is paid when the gateway's webhook "
                     "arrives (or at once when the wallet covers it). Needs an Idempotency-Key")
async def create_intent(body: schemas.IntentIn, principal: CurrentPrincipal, session: DbSession,
                        _key: IdempotencyKey) -> schemas.PaymentOut:
    return schemas.PaymentOut.of(await service.create_intent(session, principal, purpose=body.purpose,
                                                   reference_id=body.reference_id, use_wallet=body.use_wallet,
                                                   wallet_minor=body.wallet_minor))


@router.post("/payments/confirm", response_model=schemas.PaymentOut,
             summary="Where a payment stands after the payer came back from the checkout page (the webhook decides). "
                     "Razorpay Checkout's razorpay_payment_id and razorpay_signature, once verified, confirm it at once")
async def confirm(body: schemas.ConfirmIn, principal: CurrentPrincipal, session: DbSession) -> schemas.PaymentOut:
    return schemas.PaymentOut.of(await service.confirm(session, principal, body.payment_id,
                                             provider_payment_ref=body.razorpay_payment_id,
                                             signature=body.razorpay_signature))


@router.get("/payments/transactions", response_model=list[schemas.TransactionOut],
            summary="Your payment history (every attempt, success, failure and refund with the provider's ids); "
                    "`scope=merchant` for your organization's (pharmacists, admins)")
async def transactions(principal: CurrentPrincipal, session: DbSession,
                       scope: Annotated[str, Query(pattern="^(mine|merchant)$")] = "mine",
                       limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[schemas.TransactionOut]:
    found = await service.transactions(session, principal, merchant=scope == "merchant", limit=limit)
    return [schemas.TransactionOut(**vars(t)) for t in found]


@router.get("/payments/revenue", response_model=list[schemas.RevenueDayOut],
            summary="Your organization's revenue per day, newest first: gross takings, refunds, the provider's fees "
                    "and the net (admins, pharmacists)")
async def revenue(principal: CurrentPrincipal, session: DbSession,
                  days: Annotated[int, Query(ge=1, le=366)] = 30) -> list[schemas.RevenueDayOut]:
    return [schemas.RevenueDayOut(**vars(d)) for d in await service.revenue(session, principal, days=days)]


@router.get("/payments/reconciliation", response_model=list[schemas.ReconciliationOut],
            summary="The daily reconciliation's reports, newest first: our payments against the provider's list, "
                    "and every disagreement (platform operators)")
async def reconciliation(principal: CurrentPrincipal, session: DbSession,
                         limit: Annotated[int, Query(ge=1, le=365)] = 30) -> list[schemas.ReconciliationOut]:
    return [schemas.ReconciliationOut(id=r.id, provider=r.provider, since=r.since, checked=r.checked,
                                      ran_at=r.ran_at, mismatches=[schemas.MismatchOut(**vars(m))
                                                                   for m in r.mismatches])
            for r in await service.reconciliation_reports(session, principal, limit=limit)]


@router.get("/payments/{payment_id}", response_model=schemas.PaymentOut, summary="One payment (yours, or your "
                                                                                  "organization's)")
async def get_payment(payment_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> schemas.PaymentOut:
    return schemas.PaymentOut.of(await service.get_payment(session, principal, payment_id))


@router.post("/payments/refund", status_code=status.HTTP_201_CREATED, response_model=schemas.RefundOut,
             summary="Refund part or all of a payment, never more than it captured (the merchant's staff). The "
                     "wallet part goes back to the wallet at once, the rest to the card/UPI. Needs an Idempotency-Key")
async def refund(body: schemas.RefundIn, principal: CurrentPrincipal, session: DbSession,
                 _key: IdempotencyKey) -> schemas.RefundOut:
    require(principal, "manage:own_orders", "manage:payments")
    r = await service.refund(session, principal, body.payment_id, amount_minor=body.amount_minor, reason=body.reason)
    return schemas.RefundOut(total_minor=r.total_minor, **{k: getattr(r, k) for k in schemas.RefundOut.model_fields
                                                           if k != "total_minor"})


async def webhook(request: Request) -> JSONResponse:
    """A provider's event. Plain route: the signature is checked on the raw bytes as sent; a bad
    or missing one is a 400 and nothing is written; a replay is a 200 that changes nothing."""
    provider = request.path_params.get("provider") or None
    body = await request.body()
    session = await db_session(request)
    outcome = await service.handle_webhook(session, provider or get_settings().payment_provider, body,
                                           dict(request.headers))
    return JSONResponse({"received": True, "outcome": outcome})


router.add_route("/api/v1/payments/webhook", webhook, methods=["POST"], include_in_schema=False)
router.add_route("/api/v1/payments/webhook/{provider}", webhook, methods=["POST"], include_in_schema=False)


@router.get("/wallet", response_model=schemas.WalletOut, summary="Your wallet: balance and its ledger lines, "
                                                                 "newest first (each with balance_after)")
async def get_wallet(principal: CurrentPrincipal, session: DbSession,
                     currency: Annotated[str, Query(pattern=r"^[A-Z]{3}$")] = "INR",
                     limit: Annotated[int, Query(ge=1, le=500)] = 50) -> schemas.WalletOut:
    w = await service.wallet(session, principal, currency, limit=limit)
    return schemas.WalletOut(currency=w.currency, balance_minor=w.balance_minor,
                             lines=[schemas.WalletLineOut(**{k: getattr(line, k) for k in
                                                             schemas.WalletLineOut.model_fields}) for line in w.lines])


@router.post("/wallet/top-up", status_code=status.HTTP_201_CREATED, response_model=schemas.PaymentOut,
             summary="Add money to your wallet through the gateway (send the payer to `checkout_url`); the wallet "
                     "is credited when the gateway's webhook says it was paid. Needs an Idempotency-Key")
async def top_up(body: schemas.TopUpIn, principal: CurrentPrincipal, session: DbSession,
                 _key: IdempotencyKey) -> schemas.PaymentOut:
    return schemas.PaymentOut.of(await service.top_up(session, principal, amount_minor=body.amount_minor,
                                            currency=body.currency))


@router.get("/merchant/balance", response_model=list[schemas.MerchantBalanceOut],
            summary="Your organization's money: held in escrow for undelivered orders, released and waiting for the "
                    "payout, and the payouts made")
async def merchant_balance(principal: CurrentPrincipal, session: DbSession) -> list[schemas.MerchantBalanceOut]:
    return [schemas.MerchantBalanceOut(currency=b.currency, escrow_minor=b.escrow_minor, payable_minor=b.payable_minor,
                                       paid_out_minor=b.paid_out_minor,
                                       payouts=[schemas.PayoutOut(**vars(p)) for p in b.payouts])
            for b in await service.merchant_balance(session, principal)]
