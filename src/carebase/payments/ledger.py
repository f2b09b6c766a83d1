"""The double-entry ledger: accounts, balanced journals, and what an account holds for one reference.

Every movement of money is one journal: lines on two or more accounts that sum to zero, posted
all at once by the ``ledger_post`` SQL function (migration 0019), which locks the accounts in id
order and refuses the whole journal when a wallet, an escrow or a payable would go below zero.
Each line records the account's ``balance_after``. The platform's own accounts (gateway clearing,
provider fees) are the other side of money entering and leaving, so the balances of all accounts
sum to zero at every moment (``check``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from psycopg import errors as pg_errors
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.payments.models import ledger_accounts, ledger_entries
from carebase.platform.errors import Conflict, Forbidden
from carebase.platform.ids import new_id
from carebase.platform.money import money

WALLET, ESCROW, PAYABLE, CLEARING, FEES, REVENUE = ("patient_wallet", "escrow", "merchant_payable",
                                                    "platform_clearing", "provider_fees", "platform_revenue")


async def account(session: AsyncSession, kind: str, currency: str, *, owner_account: uuid.UUID | None = None,
                  owner_tenant: uuid.UUID | None = None) -> uuid.UUID:
    """The ledger account of this owner and kind, opened at zero on first use."""
    return await session.scalar(text("SELECT ledger_account(:k, :a, :t, :c)"),
                                {"k": kind, "a": owner_account, "t": owner_tenant, "c": currency})


async def post(session: AsyncSession, kind: str, lines: list[tuple[uuid.UUID, int]], *,
               reference: str | None = None, memo: str | None = None) -> uuid.UUID:
    """Post one balanced journal; 409 ``insufficient-funds`` when an account cannot give what it
    is asked for (nothing is posted)."""
    journal = new_id()
    payload = json.dumps([{"account": str(a), "amount": int(n)} for a, n in lines if n])
    try:
        await session.execute(text("SELECT ledger_post(:j, :k, :r, :m, CAST(:l AS jsonb))"),
                              {"j": journal, "k": kind, "r": reference, "m": memo, "l": payload})
    except DBAPIError as exc:
        cause = exc.orig
        if isinstance(cause, pg_errors.RaiseException) and str(getattr(cause.diag, "message_primary", "")) == \
                "insufficient funds":
            kind_, balance, wanted, currency = (cause.diag.message_detail or ":::").split(":")
            raise Conflict(_short_of(kind_, int(balance or 0), int(wanted or 0), currency), code="insufficient-funds",
                           balance_minor=int(balance or 0), wanted_minor=int(wanted or 0)) from None
        if isinstance(cause, pg_errors.InsufficientPrivilege):
            raise Forbidden("That money is not yours to move.", code="not-your-account") from None
        raise
    return journal


def _short_of(kind: str, balance: int, wanted: int, currency: str) -> str:
    what = {WALLET: "Your wallet", ESCROW: "The escrow", PAYABLE: "The pharmacy's payable balance"}.get(kind, kind)
    return f"{what} holds {money(balance, currency)}, not the {money(wanted, currency)} this needs."


async def held(session: AsyncSession, account_id: uuid.UUID, reference: str) -> int:
    """What ``account_id`` holds for ``reference`` (an order in an escrow account)."""
    return int(await session.scalar(text("SELECT ledger_held(:a, :r)"), {"a": account_id, "r": reference}))


@dataclass
class Line:
    journal_id: uuid.UUID
    journal_kind: str
    reference: str | None
    amount_minor: int
    balance_after: int
    currency: str
    memo: str | None
    at: datetime


async def balance(session: AsyncSession, account_id: uuid.UUID) -> int:
    return int(await session.scalar(select(ledger_accounts.c.balance_minor).where(ledger_accounts.c.id == account_id))
               or 0)


async def lines(session: AsyncSession, account_id: uuid.UUID, *, limit: int = 50,
                before: int | None = None) -> list[Line]:
    stmt = select(ledger_entries).where(ledger_entries.c.ledger_account_id == account_id)
    if before is not None:
        stmt = stmt.where(ledger_entries.c.id < before)
    rows = (await session.execute(stmt.order_by(ledger_entries.c.id.desc()).limit(limit))).all()
    return [Line(r.journal_id, r.journal_kind, r.reference, r.amount_minor, r.balance_after, r.currency, r.memo, r.at)
            for r in rows]


async def check(session: AsyncSession) -> list[str]:
    """Every way the books could be wrong, as sentences (empty: they are right). Needs the owner
    (it reads every account): journals that do not balance, accounts whose balance is not the sum
    of their lines or whose last line's balance_after disagrees, and a total that is not zero."""
    problems = []
    for r in (await session.execute(
            select(ledger_entries.c.journal_id, func.sum(ledger_entries.c.amount_minor).label("s"))
            .group_by(ledger_entries.c.journal_id).having(func.sum(ledger_entries.c.amount_minor) != 0))).all():
        problems.append(f"journal {r.journal_id} sums to {r.s}")
    sums = (select(ledger_entries.c.ledger_account_id.label("id"), func.sum(ledger_entries.c.amount_minor).label("s"),
                   func.max(ledger_entries.c.id).label("last"))
            .group_by(ledger_entries.c.ledger_account_id).subquery())
    last = ledger_entries.alias("last_line")
    for r in (await session.execute(
            select(ledger_accounts.c.id, ledger_accounts.c.balance_minor, sums.c.s, last.c.balance_after)
            .outerjoin(sums, sums.c.id == ledger_accounts.c.id).outerjoin(last, last.c.id == sums.c.last))).all():
        if (r.s or 0) != r.balance_minor or (r.balance_after is not None and r.balance_after != r.balance_minor):
            problems.append(f"account {r.id}: balance {r.balance_minor}, lines {r.s}, last balance_after "
                            f"{r.balance_after}")
    for r in (await session.execute(select(ledger_accounts.c.currency, func.sum(ledger_accounts.c.balance_minor))
                                    .group_by(ledger_accounts.c.currency))).all():
        if r[1] != 0:
            problems.append(f"the {r[0]} accounts sum to {r[1]}, not zero")
    return problems
