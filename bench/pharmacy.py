"""Pharmacy marketplace (issue 7): a catalogue of 200,000 medicines across 500 pharmacies, through
the real server (uvicorn, one process) and the real API:

* medicine search (GET /api/v1/patient/medicines/search): names, generic names, prefixes and
  typos, with and without "near me" (lat/lon, 10 km) and the in-stock filter: p95 < 30 ms on one
  connection and on 8;
* checkout throughput: 50 patients at once, each adding a medicine to their cart and checking out
  (POST /api/v1/patient/cart/items, then POST /api/v1/patient/orders): checkouts/s, p95, and no
  request but a 201/200 (stock is plentiful here; oversell is the test suite's subject). The
  ceiling next to it: GET /api/v1/me from the same 50 clients, the cheapest authenticated request.

The 500 pharmacies and their catalogues are bulk-written into `pharmacies`, `pharmacy_medicines`
and `medicine_words` with COPY (the search vector is a generated column, so it is computed as
PostgreSQL would for any insert); the demo clinic's own pharmacy and its staff come from
`carebase seed-demo`.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import httpx
import psycopg

from bench.chat import percentile
from bench.harness import Row, carebase_server, log, login, lua_requests, seed_demo, server_env, urls_owner_dsn, wrk

PHARMACIES = 500
MEDICINES_PER_PHARMACY = 400
CENTRE = (12.9716, 77.5946)  # Bengaluru: the demo patient's city
BUYERS = 50
LOADED_CONNECTIONS = 8
TARGET_SEARCH_P95_MS = 30

BRAND_PARTS = ["Cro", "Do", "Cal", "Pan", "Azi", "Mox", "Cet", "Glyco", "Amlo", "Telma", "Ator", "Rosu", "Metro",
               "Cipro", "Levo", "Ome", "Raba", "Ibu", "Nimu", "Diclo", "Monte", "Levocet", "Sita", "Vilda", "Glimi"]
BRAND_ENDS = ["cin", "lo", "pol", "zole", "thral", "x", "zine", "met", "long", "sartan", "va", "vas", "gyl",
              "flox", "cet", "prazole", "fen", "sulide", "fenac", "kast", "gliptin", "ride", "mide", "nol", "dex"]
FORMS = ["Tablet", "Capsule", "Syrup", "Injection", "Cream", "Drops", "Inhaler"]
CATEGORIES = ["Painkiller", "Antibiotic", "Antihistamine", "Antacid", "Antidiabetic", "Antihypertensive",
              "Statin", "Vitamin", "Antifungal", "Bronchodilator"]


def _products(rnd: random.Random) -> list[dict]:
    """About 3,000 distinct products: brand names over the knowledge base's generics."""
    from carebase.knowledge.service import catalog

    generics = sorted(catalog().medicines)[:400]
    out = []
    for i in range(3000):
        generic = generics[i % len(generics)]
        brand = f"{BRAND_PARTS[i % 25]}{BRAND_ENDS[(i // 25) % 25]} {(i % 7 + 1) * 50}"
        out.append({"name": brand, "generic": generic, "category": CATEGORIES[i % len(CATEGORIES)],
                    "form": FORMS[i % len(FORMS)], "strength": f"{(i % 7 + 1) * 50} mg", "pack": 10 + i % 20,
                    "rx": i % 3 == 0})
    return out


def generate(dsn: str) -> tuple[float, list[dict], list[tuple[float, float]]]:
    from carebase.knowledge.service import catalog
    from carebase.pharmacy.service import _tokens, trigrams

    rnd = random.Random(11)
    products = _products(rnd)
    kb = catalog()
    started = time.perf_counter()
    points = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor().copy("COPY pharmacies (tenant_id, name, licence_number, address, city, lat, lon, "
                                "opening_hours, delivery_radius_km, delivery_fee_minor, currency, listed, "
                                "subscription_status, version) FROM STDIN") as copy:
            ids = []
            for i in range(PHARMACIES):
                pid = uuid.UUID(int=rnd.getrandbits(128))
                lat, lon = CENTRE[0] + rnd.uniform(-0.4, 0.4), CENTRE[1] + rnd.uniform(-0.4, 0.4)
                points.append((lat, lon))
                ids.append(pid)
                copy.write_row((pid, f"Bench Pharmacy {i}", f"BENCH-{i}", f"{i} Bench Road", "Bengaluru", lat, lon,
                                '{"mon": [["09:00", "21:00"]]}', 8, 3000, "INR", True, "active", 1))
        with conn.cursor().copy("COPY pharmacy_medicines (id, tenant_id, name, generic_name, generic_key, category, "
                                "dosage_form, strength, pack_size, mrp_minor, price_minor, currency, stock, reserved, "
                                "low_stock_threshold, requires_prescription, is_available, version) FROM STDIN"
                                ) as copy:
            for pid in ids:
                for p in rnd.sample(products, MEDICINES_PER_PHARMACY):
                    mrp = rnd.randrange(1000, 50000, 50)
                    med = kb.medicines.get(p["generic"])
                    copy.write_row((uuid.UUID(int=rnd.getrandbits(128)), pid, p["name"], p["generic"],
                                    med.generic if med else p["generic"], p["category"], p["form"], p["strength"],
                                    p["pack"], mrp, mrp - rnd.randrange(0, mrp // 5, 50), "INR",
                                    rnd.choice([0, 5, 40, 100000]), 0, 10, p["rx"], True, 1))
        known = {w for (w,) in conn.execute("SELECT word FROM medicine_words")}  # the demo's own
        words = sorted({w for p in products for n in (p["name"], p["generic"]) for w in _tokens(n)
                        if len(w) >= 3 and not w.isdigit()} - known)
        with conn.cursor().copy("COPY medicine_words (word, trigrams) FROM STDIN") as copy:
            for w in words:
                copy.write_row((w, trigrams(w)))
        conn.execute("ANALYZE pharmacies")
        conn.execute("VACUUM ANALYZE pharmacy_medicines")
        conn.execute("ANALYZE medicine_words")
    return time.perf_counter() - started, products, points


def _queries(products: list[dict], points: list[tuple[float, float]], rnd: random.Random) -> list[str]:
    out = []
    for i in range(1500):
        p = rnd.choice(products)
        kind = i % 5
        if kind == 0:
            q = p["name"].split()[0]  # a brand
        elif kind == 1:
            q = p["generic"].split()[0]  # a generic
        elif kind == 2:
            q = p["name"][:4]  # a prefix
        elif kind == 3:
            word = p["generic"].split()[0]
            j = rnd.randrange(1, len(word) - 1) if len(word) > 3 else 1
            q = word[:j] + word[j + 1:] if len(word) > 4 else word  # a letter dropped: a typo
        else:
            q = f"{p['name'].split()[0]} {p['strength'].split()[0]}"
        params = {"q": q}
        if i % 2 == 0:
            lat, lon = CENTRE[0] + rnd.uniform(-0.2, 0.2), CENTRE[1] + rnd.uniform(-0.2, 0.2)
            params.update(lat=f"{lat:.5f}", lon=f"{lon:.5f}")
        if i % 3 == 0:
            params["in_stock"] = "true"
        out.append("/api/v1/patient/medicines/search?" + urlencode(params))
    return out


async def _buyers(base: str, n: int) -> list[dict[str, str]]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        async def one(i: int) -> dict[str, str]:
            email = f"bench-buyer-{i}-{uuid.uuid4().hex[:6]}@example.test"
            r = await http.post("/api/v1/auth/register", json={"email": email, "password": "bench-password",
                                                                "display_name": f"Buyer {i}", "tenant": "demo"})
            r.raise_for_status()
            r = await http.post("/api/v1/auth/token", data={"username": email, "password": "bench-password"})
            r.raise_for_status()
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        return [await one(i) for i in range(n)]


async def _checkouts(base: str, buyers: list[dict[str, str]], stock: list[tuple[str, str]], seconds: float
                     ) -> tuple[int, list[float], dict[int, int]]:
    """Each buyer in a loop: one pack into the cart, then check out (pickup, cash)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    done = 0
    rnd = random.Random(5)
    limits = httpx.Limits(max_connections=len(buyers), max_keepalive_connections=len(buyers))
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        deadline = time.perf_counter() + seconds

        async def loop(headers: dict[str, str]) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                medicine_id, pharmacy_id = rnd.choice(stock)
                r = await http.post("/api/v1/patient/cart/items", headers=headers,
                                    json={"medicine_id": medicine_id, "quantity": 1})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                started = time.perf_counter()
                r = await http.post("/api/v1/patient/orders", headers=headers, json={
                    "pharmacy_id": pharmacy_id, "fulfilment": "pickup", "contact_name": "Bench Buyer"})
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                done += r.status_code == 201

        started = time.perf_counter()
        await asyncio.gather(*(loop(h) for h in buyers))
        elapsed = time.perf_counter() - started
    return done, latencies, statuses | {0: int(elapsed * 1000)}


async def _me(base: str, buyers: list[dict[str, str]], seconds: float) -> float:
    count = 0
    limits = httpx.Limits(max_connections=len(buyers), max_keepalive_connections=len(buyers))
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        deadline = time.perf_counter() + seconds

        async def loop(headers: dict[str, str]) -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                r = await http.get("/api/v1/me", headers=headers)
                r.raise_for_status()
                count += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop(h) for h in buyers))
        return count / (time.perf_counter() - started)


def run(settings, urls, seconds: float, tmp: Path) -> list[Row]:
    log("Pharmacy marketplace (issue 7)")
    dsn = urls_owner_dsn(urls)
    env = server_env(settings, urls)
    env["CAREBASE_AUTH_RATE_LIMIT_PER_MINUTE"] = "1000000"  # one address signs in as all 50 buyers
    seed_demo(env)
    took, products, points = generate(dsn)
    with psycopg.connect(dsn) as conn:
        total = conn.execute("SELECT count(*) FROM pharmacy_medicines").fetchone()[0]
        stock = [(str(m), str(p)) for m, p in conn.execute(
            "SELECT m.id, m.tenant_id FROM pharmacy_medicines m JOIN pharmacies p ON p.tenant_id = m.tenant_id "
            "WHERE m.stock = 100000 AND NOT m.requires_prescription AND p.name LIKE 'Bench Pharmacy %' "
            "ORDER BY m.id LIMIT 2000").fetchall()]
    log(f"  generated {PHARMACIES} pharmacies and {total:,} medicines in {took:.1f} s")
    rows = [Row("bulk generation of 500 pharmacies' catalogues (s)", took, None, None, "-", None)]
    rnd = random.Random(3)
    with carebase_server(env) as base:
        patient = login(base, "patient@demo.carebase.local")
        queries = _queries(products, points, rnd)
        probe = httpx.get(base + queries[1], headers=patient)
        if probe.status_code != 200 or not probe.json()["items"]:
            raise RuntimeError(f"search {queries[1]} found nothing: {probe.status_code} {probe.text[:300]}")
        typo = httpx.get(base + queries[3], headers=patient).json()
        log(f"  search: {len(queries)} queries, e.g. {queries[3]} -> corrected to {typo['corrected_query']!r}, "
            f"{len(typo['items'])} hits")
        requests = lua_requests(tmp / "pharmacy-search.lua", [("GET", q, None) for q in queries])
        url = f"{base}/api/v1/patient/medicines/search"
        wrk(url, 2, LOADED_CONNECTIONS, patient, requests_file=requests)  # warm up
        for connections, threads in ((1, 1), (LOADED_CONNECTIONS, 2)):
            r = wrk(url, seconds, connections, patient, threads=threads, requests_file=requests)
            log(f"  search, {connections} conn: {r.rps:.0f} req/s, p50 {r.p50_ms:.1f} ms, p95 {r.p95_ms:.1f} ms, "
                f"p99 {r.p99_ms:.1f} ms")
            rows.append(Row(f"medicine search p95 latency (ms), {connections} conn", r.p95_ms, None, None,
                            f"< {TARGET_SEARCH_P95_MS} ms", r.p95_ms < TARGET_SEARCH_P95_MS))

        buyers = asyncio.run(_buyers(base, BUYERS))
        ceiling = asyncio.run(_me(base, buyers, seconds))
        done, latencies, statuses = asyncio.run(_checkouts(base, buyers, stock, seconds))
        elapsed = statuses.pop(0) / 1000
        bad = {s: n for s, n in statuses.items() if s not in (200, 201)}
        rate = done / elapsed
        log(f"  checkout, {BUYERS} buyers: {done} orders in {elapsed:.1f} s = {rate:.0f}/s (cart add + checkout "
            f"each), checkout p50 {percentile(latencies, 50):.0f} ms, p95 {percentile(latencies, 95):.0f} ms; "
            f"GET /api/v1/me at the same concurrency {ceiling:.0f}/s; statuses {statuses}")
        if bad:
            raise RuntimeError(f"unexpected answers during checkout: {bad}")
        rows.append(Row(f"checkouts/s, {BUYERS} concurrent buyers (vs GET /me/s)", rate, ceiling, rate / ceiling,
                        "-", None))
        rows.append(Row(f"checkout p95 latency (ms), {BUYERS} concurrent buyers", percentile(latencies, 95), None,
                        None, "-", None))
    return rows
