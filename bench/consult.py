"""Consultations (issue 6): 100 concurrent consultations with the offline engine, the seed's load
target, through one `carebase serve` process.

Each of 100 clients holds one consultation from the first message to the summary (9 patient
messages: the complaint and 8 answers), all at once; a turn's latency is one
``POST /consultations`` or ``/messages`` round trip (emergency check, PHI stripping, the chart
read, the engine, the writes, the audit). The ceiling, measured on the same server with the same
100 clients: ``GET /api/v1/me``, the cheapest authenticated request. Target: turn p95 < 2 s (the
seed's "average latency < 2 s" for its API, made stricter: a percentile, not a mean).

All clients are the demo patient (one login, 100 separate consultations): the cost per turn does
not depend on who asks.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.chat import percentile
from bench.harness import Row, carebase_server, log, login, seed_demo, server_env

PATIENT = "patient@demo.carebase.local"
CLIENTS = 100
FIRST = "I have had a sore throat and a runny nose since Monday, and I keep sneezing"
ANSWERS = ["It started 3 days ago and is about the same.", "About 4 out of 10.", "A mild fever, no rash.",
           "Paracetamol 500 mg twice, it helped a bit.", "No, my breathing is fine.", "No ear pain.", "No.",
           "Temperature 37.9 this morning."]
TARGET_P95_MS = 2000


async def _consultations(base: str, headers: dict[str, str]) -> tuple[list[float], int, float]:
    turns: list[float] = []
    completed = 0
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120, limits=limits) as http:
        async def one() -> None:
            nonlocal completed
            started = time.perf_counter()
            r = await http.post("/api/v1/consultations", json={"text": FIRST})
            turns.append((time.perf_counter() - started) * 1000)
            r.raise_for_status()
            c = r.json()
            for answer in ANSWERS:
                if c["status"] != "active":
                    break
                started = time.perf_counter()
                r = await http.post(f"/api/v1/consultations/{c['id']}/messages", json={"text": answer})
                turns.append((time.perf_counter() - started) * 1000)
                r.raise_for_status()
                c = r.json()
            completed += c["status"] == "completed"

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(CLIENTS)))
        elapsed = time.perf_counter() - started
    return turns, completed, elapsed


async def _me(base: str, headers: dict[str, str], requests_each: int) -> list[float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120, limits=limits) as http:
        async def one() -> None:
            for _ in range(requests_each):
                started = time.perf_counter()
                (await http.get("/api/v1/me")).raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(one() for _ in range(CLIENTS)))
    return latencies


def run(settings, urls, seconds: float, tmp) -> list[Row]:
    log(f"Consultations (issue 6): {CLIENTS} concurrent consultations, offline engine, one server process")
    env = server_env(settings, urls)
    seed_demo(env)
    with carebase_server(env) as base:
        headers = login(base, PATIENT)
        asyncio.run(_consultations(base, headers))  # warm: imports, the knowledge base, prepared statements
        turns, completed, elapsed = asyncio.run(_consultations(base, headers))
        me = asyncio.run(_me(base, headers, 9))
    p50, p95, p99 = (percentile(turns, q) for q in (50, 95, 99))
    me95 = percentile(me, 95)
    log(f"  {len(turns)} turns in {elapsed:.1f} s ({len(turns) / elapsed:.0f} turns/s), {completed}/{CLIENTS} "
        f"consultations completed; turn p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms; "
        f"GET /api/v1/me p95 {me95:.0f} ms at the same concurrency")
    return [
        Row(f"consultation turn p95 (ms), {CLIENTS} concurrent consultations", p95, me95, p95 / me95,
            f"< {TARGET_P95_MS} ms", p95 < TARGET_P95_MS and completed == CLIENTS),
        Row("  (reference) consultation turns/s, one server process", len(turns) / elapsed, None, None, "-", None),
        Row("  (reference) turn p50 / p99 (ms)", p50, p99, None, "-", None),
    ]
