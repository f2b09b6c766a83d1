"""Payments (issue 8), on the same PostgreSQL as the other benchmarks:

* **ledger postings/s, 16 concurrent writers**: each journal is its own transaction as the app role
  (row-level security on) through `ledger_post` (balance check, accounts locked in id order,
  `balance_after` on each line). Two shapes: (a) every writer on accounts of its own (a wallet
  paying a merchant's escrow: 16 wallets, 16 escrows), and (b) every writer paying into wallets
  from the one platform clearing account, as every top-up and card payment does: one hot row that
  all journals queue on. Ceiling: raw single-row INSERT transactions/s from 16 clients.
* **webhooks processed/s**: signed sandbox `payment_intent.succeeded` events for open top-ups,
  POSTed by 16 concurrent clients to one uvicorn process; each is verified, claimed once, applied
  (the payment, a ledger journal through the clearing account, a transaction row, the payer's
  notice job); then the same events again (replays: verified and answered "duplicate"). Ceiling:
  GET /api/v1/me from 16 clients, the cheapest authenticated request.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from bench.harness import (
    Row,
    carebase_server,
    create_bench_tables,
    log,
    login,
    raw_inserts,
    seed_demo,
    server_env,
    urls_owner_dsn,
)
from bench.pharmacy import _me

WRITERS = 16
WEBHOOKS = 2000
WEBHOOK_SECRET = "bench-webhook-secret"


async def _postings(settings, urls, seconds: float, through_clearing: bool) -> float:
    from carebase.payments import ledger
    from carebase.platform.db import Database

    db = Database(settings, urls)
    writers = [(uuid.uuid4(), uuid.uuid4()) for _ in range(WRITERS)]  # (person, merchant organization)
    accounts = []
    for person, merchant in writers:
        async with db.transaction(merchant, person) as s:
            clearing = await ledger.account(s, ledger.CLEARING, "INR")
            wallet = await ledger.account(s, ledger.WALLET, "INR", owner_account=person)
            escrow = await ledger.account(s, ledger.ESCROW, "INR", owner_tenant=merchant)
            await ledger.post(s, "topup", [(clearing, -10**9), (wallet, 10**9)])
        accounts.append((person, merchant, clearing, wallet, escrow))

    async def writer(person, merchant, clearing, wallet, escrow) -> int:
        n = 0
        deadline = time.perf_counter() + seconds
        lines = [(clearing, -1), (wallet, 1)] if through_clearing else [(wallet, -1), (escrow, 1)]
        while time.perf_counter() < deadline:
            async with db.transaction(merchant, person) as s:
                await ledger.post(s, "bench", lines, reference="bench")
            n += 1
        return n

    started = time.perf_counter()
    counts = await asyncio.gather(*(writer(*a) for a in accounts))
    elapsed = time.perf_counter() - started
    async with db.transaction(owner=True) as s:
        problems = await ledger.check(s)
    await db.dispose()
    if problems:
        raise RuntimeError(f"the books do not balance after the run: {problems[:3]}")
    return sum(counts) / elapsed


async def _open_top_ups(settings, urls, dsn: str, n: int) -> list[tuple[bytes, dict[str, str]]]:
    """n top-ups by the demo patient, each with its signed 'succeeded' event (not yet sent)."""
    from carebase.payments import gateways
    from carebase.payments import service as payments
    from carebase.platform.authz import Principal
    from carebase.platform.db import Database
    from carebase.settings import set_settings

    set_settings(settings)
    with psycopg.connect(dsn) as conn:
        account, tenant = conn.execute(
            "SELECT a.id, m.tenant_id FROM accounts a JOIN memberships m ON m.account_id = a.id "
            "WHERE a.email = 'patient@demo.carebase.local' AND m.role = 'patient'").fetchone()
    patient = Principal.of(account, tenant, ["patient"])
    db = Database(settings, urls)
    sandbox = gateways.SandboxGateway(settings)
    events = []
    for _ in range(n // 100):
        async with db.transaction(tenant, account) as s:
            for _ in range(100):
                p = await payments.top_up(s, patient, amount_minor=1000)
                events.append(await sandbox.settle(s, p.provider_ref, "pay"))
    await db.dispose()
    return events


async def _post_all(base: str, events: list[tuple[bytes, dict[str, str]]]) -> tuple[float, dict[str, int]]:
    queue = list(events)
    outcomes: dict[str, int] = {}
    limits = httpx.Limits(max_connections=WRITERS, max_keepalive_connections=WRITERS)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
        async def client() -> None:
            while queue:
                body, headers = queue.pop()
                r = await http.post("/api/v1/payments/webhook/sandbox", content=body, headers=headers)
                outcome = r.json().get("outcome", str(r.status_code)) if r.status_code == 200 else str(r.status_code)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(WRITERS)))
        return len(events) / (time.perf_counter() - started), outcomes


def run(settings, urls, seconds: float, tmp: Path) -> list[Row]:
    from pydantic import SecretStr

    log("Payments (issue 8)")
    dsn = urls_owner_dsn(urls)
    create_bench_tables(urls)
    settings = settings.model_copy(update={"payment_webhook_secret": SecretStr(WEBHOOK_SECRET)})
    env = server_env(settings, urls)
    env["CAREBASE_PAYMENT_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    seed_demo(env)
    rows = []
    raw = asyncio.run(raw_inserts(dsn, WRITERS, seconds))
    for through_clearing, label in ((False, "own accounts"), (True, "one hot account")):
        rate = asyncio.run(_postings(settings, urls, seconds, through_clearing))
        log(f"  ledger postings, {WRITERS} writers, {label}: {rate:.0f}/s; raw INSERT tx/s {raw:.0f}")
        rows.append(Row(f"ledger postings/s, {WRITERS} writers, {label} (vs raw INSERT)", rate, raw, rate / raw,
                        "-", None))
    events = asyncio.run(_open_top_ups(settings, urls, dsn, WEBHOOKS))
    with carebase_server(env) as base:
        patient = login(base, "patient@demo.carebase.local")
        ceiling = asyncio.run(_me(base, [patient] * WRITERS, seconds))
        rate, outcomes = asyncio.run(_post_all(base, events))
        if outcomes != {"succeeded": len(events)}:
            raise RuntimeError(f"unexpected webhook outcomes: {outcomes}")
        replay, again = asyncio.run(_post_all(base, events))
        if again != {"duplicate": len(events)}:
            raise RuntimeError(f"unexpected replay outcomes: {again}")
    log(f"  webhooks, {WRITERS} senders: {rate:.0f}/s applied, {replay:.0f}/s replays; GET /api/v1/me {ceiling:.0f}/s")
    rows.append(Row(f"webhooks applied/s, {WRITERS} senders (vs GET /me)", rate, ceiling, rate / ceiling, "-", None))
    rows.append(Row(f"webhook replays answered/s, {WRITERS} senders (vs GET /me)", replay, ceiling,
                    replay / ceiling, "-", None))
    return rows
