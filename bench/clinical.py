"""Clinical core benchmarks (issue 4): with 100,000 patients and 1,000,000 encounters in one
clinic, through the real server (uvicorn, one process) and the real API:

* patient search (GET /api/v1/patients?q=<name prefix>): p95 < 30 ms;
* chart load (GET /api/v1/patients/{id}/chart, 10 encounters each): p95 < 50 ms;
* concurrent booking (POST /api/v1/appointments) of distinct free slots: bookings/s, and no 409;
  and of one slot by many clients at once: exactly one wins;
* calendar push: from a booking's 201 to the event on an SSE subscriber of
  tenant:<id>:appointments: p99 < 500 ms.

The clinic, its staff, providers, location and availability come from the real services and API
(`carebase seed-demo`, then the API as the demo admin). The 100,000 patients and their encounters
are bulk-written straight into the read models (`patients`, `encounters`) with COPY and
INSERT ... SELECT, without events: these are read benchmarks over the projections, and appending
1.1 million events through the event store would take the whole time budget.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg

from bench.harness import Row, carebase_server, log, login, lua_requests, seed_demo, server_env, urls_owner_dsn, wrk

PATIENTS = 100_000
ENCOUNTERS_PER_PATIENT = 10
MRN_PREFIX = "BENCH-"
DOCTOR, RECEPTIONIST, ADMIN = (f"{role}@demo.carebase.local" for role in ("doctor", "receptionist", "admin"))
LOADED_CONNECTIONS = 8  # "moderate load": a busy clinic's front desks and clinicians at once

# Names from the clinic's likely population, accents included: the register folds them in Python
# (patients.events.fold), and so does the generator below, so search sees exactly what a
# registration would have stored. Earlier names are more common (weights fall off as 1/rank^0.7,
# the commonest family name ~7 % of the register): a prefix of a common name matches thousands.
GIVEN = """Asha Priya Ananya Aarav Vihaan Arjun Ravi Sanjay Deepa Kavya Meera Rahul Rohan Neha Pooja Sunita Lakshmi
Farhan Ayesha Fatima Omar Yusuf Zainab Hassan Layla Chen Wei Jing Hiroshi Yuki Sakura Minh Linh Thanh José María Lucía
Sofía Mateo Diego Valentina Camila Zoë Chloé Anaïs Renée Noémie Jürgen Søren Björn Åsa Anna Emma Olivia Mia Lena Marie
Julia Laura Sarah Hannah Lukas Jonas Felix Paul Max Leon Elias Noah Liam James John Robert Michael William David
Richard Thomas Daniel Matthew Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Karen Nancy Grace Amara
Chidi Ngozi Kwame Ama Kofi Abena Tariq Nadia Imran Samira Ivan Olga Dmitri Natalia Piotr Agnieszka Tomasz
Katarzyna""".split()
FAMILY = """Verma Sharma Kumar Singh Patel Gupta Reddy Iyer Nair Menon Rao Joshi Mehta Shah Desai Kapoor Malhotra
Chopra Bose Das Banerjee Mukherjee Chatterjee Ghosh Sen Pillai Krishnan Subramanian Khan Ahmed Hussain Ali Qureshi
Siddiqui Ansari Sheikh Chaudhry Mirza Rahman Islam Hossain Begum Akter Wang Li Zhang Liu Chen Yang Huang Zhao Wu Zhou
Xu Sun Ma Zhu Hu Guo He Lin Luo Tanaka Suzuki Takahashi Watanabe Ito Yamamoto Nakamura Kobayashi Kato Yoshida Nguyễn
Trần Lê Phạm Hoàng Phan Vũ Đặng Bùi Đỗ García Rodríguez Martínez Hernández López González Pérez Sánchez Ramírez
Torres Flores Rivera Gómez Díaz Cruz Morales Reyes Gutiérrez Ortiz Jiménez Müller Schmidt Schneider Fischer Weber
Meyer Wagner Becker Schulz Hoffmann Schäfer Koch Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun
Krüger Hofmann Hartmann Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Simon Laurent Lefèvre
Michel Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo Conti Smith Johnson
Williams Brown Jones Miller Davis Wilson Anderson Taylor Moore Jackson White Harris Clark Lewis Robinson Walker Young
Allen King Wright Scott Green Baker Adams Nelson Hill Campbell Mitchell Roberts Carter Phillips Evans Turner Parker
Collins Edwards Stewart Morris O'Brien O'Connor Murphy Kelly Sullivan Walsh Byrne Ryan Okafor Okonkwo Adeyemi Mensah
Owusu Boateng Asante Kariuki Mwangi Otieno Nowak Kowalski Wiśniewski Wójcik Kowalczyk Kamiński Lewandowski Ivanov
Smirnov Kuznetsov Popov Andersson Johansson Karlsson Nilsson Eriksson Larsen Jensen Nielsen Hansen
Pedersen""".split()


def _zipf(n: int) -> list[float]:
    return [1 / (rank + 1) ** 0.7 for rank in range(n)]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# -- data ------------------------------------------------------------------------------------


def _demo_ids(dsn: str) -> dict[str, uuid.UUID]:
    """The demo clinic, its doctor's login and the doctor's own provider entry (seed-demo made them)."""
    with psycopg.connect(dsn) as conn:
        tenant, doctor = conn.execute(
            "SELECT t.id, a.id FROM tenants t, accounts a WHERE t.slug = 'demo' AND a.email = %s", (DOCTOR,)).fetchone()
        provider = conn.execute("SELECT id FROM providers WHERE tenant_id = %s AND account_id = %s",
                                (tenant, doctor)).fetchone()[0]
    return {"tenant": tenant, "doctor": doctor, "provider": provider}


def _patient_rows(tenant_id: uuid.UUID, first_global_number: int):
    """The register as registrations would have left it: folded search names, global ids with
    their check digit, time-ordered ids (all from the register's own functions)."""
    from carebase.patients.events import fold
    from carebase.patients.service import global_id_for
    from carebase.platform.ids import new_id

    rnd = random.Random(4)
    given = rnd.choices(GIVEN, _zipf(len(GIVEN)), k=PATIENTS)
    family = rnd.choices(FAMILY, _zipf(len(FAMILY)), k=PATIENTS)
    now = datetime.now(UTC)
    for n in range(PATIENTS):
        created = now - timedelta(days=rnd.randrange(1, 3650), seconds=rnd.randrange(86400))
        folded = fold(f"{given[n]} {family[n]}")
        email = f"{folded.replace(' ', '.')}.{n}@example.org" if n % 3 == 0 else None
        yield (new_id(), tenant_id, f"{MRN_PREFIX}{n:07d}", global_id_for("IN", first_global_number + n),
               given[n], family[n], date(1930, 1, 1) + timedelta(days=rnd.randrange(34000)), rnd.choice("FFMMU"),
               f"+9198{n:08d}", email, "IN", "Asia/Kolkata", "en", created, folded, created, created, 1)


_PATIENT_COLUMNS = ("id, tenant_id, mrn, global_id, given_name, family_name, birth_date, gender, phone, email, country, "
                    "timezone, preferred_language, gdpr_consent_at, search_name, created_at, updated_at, version")


def _encounter_pools() -> dict[str, list[str]]:
    """Clinical content to draw from (JSON documents shaped as the encounter projector writes them)."""
    from carebase.encounters import codes

    dx = [codes.icd10cm(c) for c in ("I10", "E11.9", "J06.9", "M54.50", "K21.9", "F41.1", "J45.909", "E78.5",
                                     "N39.0", "R51.9", "Z00.00", "E03.9")]
    allergies = [[], [], [], [{"substance": "Penicillin", "reaction": "rash", "severity": "moderate"}],
                 [{"substance": "Peanuts", "reaction": "anaphylaxis", "severity": "severe"}],
                 [{"substance": "Sulfonamides", "reaction": "hives", "severity": "mild"}]]
    problems = [[], [{"name": "Hypertension", "status": "active"}], [{"name": "Type 2 diabetes", "status": "active"}],
                [{"name": "Asthma", "status": "active"}, {"name": "Obesity", "status": "active"}]]
    meds = [[], [{"name": "Amlodipine", "dose": "5 mg", "frequency": "once daily"}],
            [{"name": "Metformin", "dose": "500 mg", "frequency": "twice daily"}],
            [{"name": "Salbutamol inhaler", "dose": "100 mcg", "frequency": "as needed"},
             {"name": "Atorvastatin", "dose": "20 mg", "frequency": "at night"}]]
    labs = [[], [], [{"name": "HbA1c", "value": "7.1", "unit": "%", "flag": "high"}],
            [{"name": "TSH", "value": "2.3", "unit": "mIU/L"}, {"name": "LDL", "value": "3.9", "unit": "mmol/L"}]]
    return {
        "dx": [json.dumps([dx[i], dx[(i * 5 + 3) % len(dx)]][: 1 + i % 2]) for i in range(len(dx))],
        "allergies": [json.dumps(a) for a in allergies],
        "problems": [json.dumps(p) for p in problems],
        "meds": [json.dumps(m) for m in meds],
        "labs": [json.dumps(x) for x in labs],
        "complaints": ["Routine check-up", "Persistent cough for two weeks", "Headache and dizziness since Monday",
                       "Follow-up of blood pressure", "Lower back pain after lifting", "Fever and sore throat",
                       "Medication review", "Shortness of breath on exertion"],
    }


# Every patient's k-th encounter; h varies the content between rows without random() (repeatable).
_ENCOUNTERS_SQL = """
INSERT INTO encounters (id, tenant_id, patient_id, provider_id, type, occurred_at, chief_complaint, diagnoses,
    procedures, vitals, allergies, problems, medications, lab_results, treatment_plan, follow_up_instructions, note,
    signed_by, signed_at, amendments, version)
SELECT gen_random_uuid(), p.tenant_id, p.id, %(provider)s,
       (ARRAY['office_visit', 'office_visit', 'telemedicine', 'lab'])[1 + h %% 4], at,
       (%(complaints)s::text[])[1 + h %% cardinality(%(complaints)s::text[])],
       (%(dx)s::jsonb[])[1 + h %% cardinality(%(dx)s::jsonb[])], '["99213"]'::jsonb,
       jsonb_build_object('systolic_mmhg', 105 + h %% 50, 'diastolic_mmhg', 65 + h %% 30,
                          'heart_rate_bpm', 55 + h %% 45, 'temperature_c', 36.1 + (h %% 15) / 10.0,
                          'weight_kg', 45 + h %% 60, 'height_cm', 150 + h %% 40),
       (%(allergies)s::jsonb[])[1 + h %% cardinality(%(allergies)s::jsonb[])],
       (%(problems)s::jsonb[])[1 + h %% cardinality(%(problems)s::jsonb[])],
       (%(meds)s::jsonb[])[1 + h %% cardinality(%(meds)s::jsonb[])],
       (%(labs)s::jsonb[])[1 + h %% cardinality(%(labs)s::jsonb[])],
       'Continue current treatment; lifestyle advice given (diet, exercise, sleep).',
       'Return in 3 months, or earlier if symptoms worsen.',
       'Patient seen and examined. History reviewed with the patient; findings discussed, questions answered. '
       'Vitals as recorded. Plan agreed with the patient.',
       %(doctor)s, at + interval '20 minutes', '[]'::jsonb, 1
FROM (SELECT id, tenant_id, substr(mrn, length(%(prefix)s) + 1)::int AS n FROM patients
      WHERE tenant_id = %(tenant)s AND mrn LIKE %(prefix)s || '%%') p
CROSS JOIN LATERAL (SELECT (p.n * 7919 + %(k)s * 104729) %% 1000003 AS h) v
CROSS JOIN LATERAL (SELECT now() - make_interval(days => %(k)s * 150 + h %% 120, hours => h %% 9) AS at) w
"""


def generate(dsn: str, ids: dict[str, uuid.UUID]) -> float:
    """Write the register and the charts; returns the seconds it took."""
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        first = conn.execute("SELECT nextval('patient_global_numbers')").fetchone()[0]
        conn.execute("SELECT setval('patient_global_numbers', %s)", (first + PATIENTS,))
        with conn.cursor().copy(f"COPY patients ({_PATIENT_COLUMNS}) FROM STDIN") as copy:
            for row in _patient_rows(ids["tenant"], first):
                copy.write_row(row)
    log(f"  {PATIENTS:,} patients in {time.perf_counter() - started:.1f} s")

    # One statement per encounter number k, so that a patient's encounters lie far apart in the
    # table as they would after years of visits (not side by side, which would flatter chart
    # loads); the odd and even ks on two connections at once, this machine has two cores.
    params = {"tenant": ids["tenant"], "provider": ids["provider"], "doctor": ids["doctor"], "prefix": MRN_PREFIX,
              **_encounter_pools()}

    async def insert(ks: range) -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for k in ks:
                await conn.execute(_ENCOUNTERS_SQL, {**params, "k": k})

    async def both() -> None:
        await asyncio.gather(insert(range(1, ENCOUNTERS_PER_PATIENT + 1, 2)),
                             insert(range(2, ENCOUNTERS_PER_PATIENT + 1, 2)))

    asyncio.run(both())
    log(f"  {PATIENTS * ENCOUNTERS_PER_PATIENT:,} encounters by {time.perf_counter() - started:.1f} s")
    # VACUUM as well as ANALYZE: a live register has been vacuumed (visibility map, hint bits);
    # a freshly bulk-loaded one would make the first reads write every page.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) patients")
        conn.execute("VACUUM (ANALYZE) encounters")
    return time.perf_counter() - started


def _check_folding(dsn: str, tenant_id: uuid.UUID) -> None:
    """The bulk rows hold what the projector would have stored (guards the generator)."""
    from carebase.patients.events import fold

    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT given_name, family_name, search_name FROM patients WHERE tenant_id = %s "
                            "AND mrn LIKE %s ORDER BY random() LIMIT 200", (tenant_id, MRN_PREFIX + "%")).fetchall()
    bad = [r for r in rows if fold(f"{r[0]} {r[1]}") != r[2]]
    if bad:
        raise RuntimeError(f"generated search names differ from the projector's folding: {bad[:3]}")


def _sample_patients(dsn: str, tenant_id: uuid.UUID, n: int) -> list[tuple[uuid.UUID, str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, given_name, family_name FROM patients WHERE tenant_id = %s AND mrn LIKE %s "
                            "ORDER BY random() LIMIT %s",
                            (tenant_id, MRN_PREFIX + "%", n)).fetchall()


# -- reads -------------------------------------------------------------------------------------


def _search_queries(sample: list[tuple[uuid.UUID, str, str]]) -> list[str]:
    """What a front desk types: the first letters of a family name, a given name and the start of
    the family name, or a whole family name; common names come up as often as they are common."""
    out = []
    for i, (_, given, family) in enumerate(sample):
        kind = i % 3
        q = family[:3] if kind == 0 else f"{given} {family[:3]}" if kind == 1 else family
        out.append(q)
    return out


def _latency_rows(label: str, url: str, auth: dict[str, str], entries: list[tuple[str, str, None]], seconds: float,
                  target_ms: float, tmp: Path) -> list[Row]:
    """p95 of GETs walking ``entries``, on one connection (a request's own latency) and on
    LOADED_CONNECTIONS (what a busy clinic sees from one server process)."""
    requests = lua_requests(tmp / f"reads-{target_ms:g}.lua", entries)
    wrk(url, 2, LOADED_CONNECTIONS, auth, requests_file=requests)  # warm up this code path and its pages
    rows = []
    for connections, threads in ((1, 1), (LOADED_CONNECTIONS, 2)):
        r = wrk(url, seconds, connections, auth, threads=threads, requests_file=requests)
        log(f"  {label}, {connections} conn: {r.rps:.0f} req/s, p50 {r.p50_ms:.1f} ms, p95 {r.p95_ms:.1f} ms, "
            f"p99 {r.p99_ms:.1f} ms")
        rows.append(Row(f"{label} p95 latency (ms), {connections} conn", r.p95_ms, None, None,
                        f"< {target_ms:g} ms", r.p95_ms < target_ms))
    return rows


# -- bookings ----------------------------------------------------------------------------------


SLOT_MINUTES = 15
SLOTS_PER_DAY = 95  # a 00:00-23:45 UTC window every day: 00:00 ... 23:30


class Clinic:
    """Providers bookable every day around the clock at one UTC location, set up through the API
    as the demo admin; ``slot(i)`` is the i-th slot from tomorrow on (each provider has them all)."""

    def __init__(self, base: str, admin: dict[str, str], providers: int):
        from carebase.providers.codes import make_npi

        with httpx.Client(base_url=base, headers=admin, timeout=30) as c:
            r = c.post("/api/v1/locations", json={"name": "Bench wing", "timezone": "UTC"})
            r.raise_for_status()
            self.location = r.json()["id"]
            self.providers = []
            windows = [{"weekday": d, "starts": "00:00", "ends": "23:45", "slot_minutes": SLOT_MINUTES}
                       for d in range(7)]
            for i in range(providers):
                r = c.post("/api/v1/providers", json={
                    "npi": make_npi(f"{170000000 + i:09d}"), "given_name": "Bench", "family_name": f"Provider{i}",
                    "specialty": "Family Medicine", "country": "IN"})
                r.raise_for_status()
                provider = r.json()["id"]
                c.put(f"/api/v1/providers/{provider}/availability",
                      json={"location_id": self.location, "windows": windows}).raise_for_status()
                self.providers.append(provider)
        self.first_day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)

    def slot(self, i: int) -> str:
        day, k = divmod(i, SLOTS_PER_DAY)
        return (self.first_day + timedelta(days=day, minutes=k * SLOT_MINUTES)).isoformat()

    def booking(self, provider: str, slot: int, patient: uuid.UUID) -> dict:
        return {"patient_id": str(patient), "provider_id": provider, "location_id": self.location,
                "type": "follow_up", "starts_at": self.slot(slot)}  # follow_up: 15 minutes, one slot


def _throughput(base: str, desk: dict[str, str], clinic: Clinic, providers: list[str], patients: list[uuid.UUID],
                seconds: float, tmp: Path) -> list[Row]:
    """wrk POSTs distinct slots (entry i: provider i mod P, that provider's slot i div P)."""
    def entries(first_slot: int, n: int) -> list[tuple[str, str, str]]:
        return [("POST", "/api/v1/appointments",
                 json.dumps(clinic.booking(providers[i % len(providers)], first_slot + i // len(providers),
                                           patients[i % len(patients)])))
                for i in range(n)]

    headers = {**desk, "Content-Type": "application/json"}
    url = f"{base}/api/v1/appointments"
    # The warm-up books a year ahead, the measured run from tomorrow: never the same slot.
    wrk(url, 2, 16, headers, requests_file=lua_requests(tmp / "warm.lua", entries(365 * SLOTS_PER_DAY, 2000)),
        expect=frozenset({201}))
    listed = 20_000
    r = wrk(url, seconds, 16, headers, requests_file=lua_requests(tmp / "book.lua", entries(0, listed)),
            expect=frozenset({201, 409}))
    if r.list_entries_used > listed:
        raise RuntimeError("the booking list ran out: make it longer")
    booked, refused = r.statuses.get(201, 0), r.statuses.get(409, 0)
    log(f"  distinct slots, 16 conn: {booked / r.seconds:.1f} bookings/s, {refused} x 409, p50 {r.p50_ms:.0f} ms, "
        f"p99 {r.p99_ms:.0f} ms")
    return [Row("bookings/s, distinct free slots, 16 conn", booked / r.seconds, None, None, "-", None),
            Row("  409s among them", refused, None, None, "= 0", refused == 0)]


async def _contended(base: str, desk: dict[str, str], clinic: Clinic, provider: str, patients: list[uuid.UUID],
                     rounds: int = 30, clients: int = 16) -> list[Row]:
    """Round after round, ``clients`` requests for one fresh slot sent at once."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    winners, codes = [], set()
    async with httpx.AsyncClient(base_url=base, headers=desk, timeout=60, limits=limits) as c:
        started = time.perf_counter()
        for slot in range(rounds):
            answers = await asyncio.gather(*(c.post("/api/v1/appointments", json=clinic.booking(
                provider, slot, patients[(slot * clients + j) % len(patients)])) for j in range(clients)))
            winners.append(sum(a.status_code == 201 for a in answers))
            codes |= {a.status_code for a in answers}
        elapsed = time.perf_counter() - started
    exactly_one = sum(w == 1 for w in winners)
    log(f"  one slot, {clients} clients at once x {rounds} slots: {rounds * clients / elapsed:.0f} attempts/s, "
        f"exactly one winner for {exactly_one}/{rounds} slots, statuses {sorted(codes)}")
    return [Row(f"booking attempts/s, {clients} clients at once per slot", rounds * clients / elapsed, None, None,
                "-", None),
            Row(f"  slots with exactly one winner (of {rounds})", exactly_one, None, None, f"= {rounds}",
                exactly_one == rounds and codes <= {201, 409})]


async def _push_latency(base: str, desk: dict[str, str], tenant_id: uuid.UUID, clinic: Clinic, provider: str,
                        patients: list[uuid.UUID], bookers: int, first_slot: int, bookings: int = 200) -> list[Row]:
    """An SSE subscriber of the tenant's calendar, and ``bookers`` clients each booking one slot
    after the other; for each booking, the time from its 201 (the commit is just before) to its
    event. One booker: the push on a quiet server; 16: while the server is saturated with bookings."""
    channel = f"tenant:{tenant_id}:appointments"
    arrived: dict[str, float] = {}
    answered: dict[str, tuple[float, float]] = {}  # id -> (request sent, 201 received)
    ready = asyncio.Event()

    async def listen(c: httpx.AsyncClient) -> None:
        async with c.stream("GET", "/api/v1/events/stream", params={"channel": channel}) as r:
            r.raise_for_status()
            event = None
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "ready":
                    ready.set()
                elif line.startswith("data:") and event == "message":
                    data = json.loads(line.split(":", 1)[1])["data"]
                    if data.get("type") == "appointment.booked":
                        arrived.setdefault(data["appointment_id"], time.perf_counter())

    async def book(c: httpx.AsyncClient, mine: range) -> None:
        for i in mine:
            sent = time.perf_counter()
            r = await c.post("/api/v1/appointments",
                             json=clinic.booking(provider, first_slot + i, patients[i % len(patients)]))
            got = time.perf_counter()
            if r.status_code != 201:
                raise RuntimeError(f"booking failed: {r.status_code} {r.text[:300]}")
            answered[r.json()["id"]] = (sent, got)

    async with httpx.AsyncClient(base_url=base, headers=desk, timeout=httpx.Timeout(60, read=None)) as c:
        listener = asyncio.create_task(listen(c))
        await asyncio.wait_for(ready.wait(), 30)
        await asyncio.gather(*(book(c, range(b, bookings, bookers)) for b in range(bookers)))
        deadline = time.perf_counter() + 10
        while len(arrived.keys() & answered.keys()) < len(answered) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        listener.cancel()
    after_201 = [(arrived[a] - got) * 1000 for a, (_, got) in answered.items() if a in arrived]
    after_send = [(arrived[a] - sent) * 1000 for a, (sent, _) in answered.items() if a in arrived]
    missing = len(answered) - len(after_201)
    if not after_201:
        raise RuntimeError("no booking reached the SSE subscriber")
    p99 = percentile(after_201, 99) if not missing else float("inf")
    log(f"  calendar push over {bookings} bookings, {bookers} booking at once: after the 201 p50 "
        f"{percentile(after_201, 50):.1f} ms, p99 {percentile(after_201, 99):.1f} ms, max {max(after_201):.1f} ms; "
        f"after the request was sent p99 {percentile(after_send, 99):.1f} ms; {missing} events missing")
    return [Row(f"calendar push p99 (ms), 201 to SSE event, {bookers} booker(s)", p99, None, None, "< 500 ms",
                p99 < 500),
            Row("  (reference) p99 from sending the booking (ms)", percentile(after_send, 99), None, None, "-", None)]


# -- the run -----------------------------------------------------------------------------------


def run(settings, urls, seconds: float, tmp: Path) -> list[Row]:
    log("Clinical core (issue 4)")
    dsn = urls_owner_dsn(urls)
    env = server_env(settings, urls)
    seed_demo(env)
    ids = _demo_ids(dsn)
    took = generate(dsn, ids)
    log(f"  generated {PATIENTS:,} patients and {PATIENTS * ENCOUNTERS_PER_PATIENT:,} encounters, vacuumed and "
        f"analyzed in {took:.1f} s")
    _check_folding(dsn, ids["tenant"])
    sample = _sample_patients(dsn, ids["tenant"], 3000)
    rnd = random.Random(7)
    rows = [Row("bulk generation of patients + encounters (s)", took, None, None, "-", None)]
    with carebase_server(env) as base:
        doctor = login(base, DOCTOR)
        queries = _search_queries(sample[:600])
        found = httpx.get(f"{base}/api/v1/patients", params={"q": queries[1]}, headers=doctor)
        if found.status_code != 200 or not found.json():
            raise RuntimeError(f"search for {queries[1]!r} found nothing: {found.status_code} {found.text[:300]}")
        log(f"  patient search: GET /api/v1/patients?q=<name> as the demo doctor, {len(queries)} queries "
            f"(e.g. {', '.join(repr(q) for q in queries[:3])})")
        rows += _latency_rows("patient search", f"{base}/api/v1/patients", doctor,
                              [("GET", f"/api/v1/patients?q={quote(q)}", None) for q in queries], seconds, 30, tmp)
        charts = [("GET", f"/api/v1/patients/{p[0]}/chart", None) for p in rnd.sample(sample, 2000)]
        chart = httpx.get(base + charts[0][1], headers=doctor)
        if chart.status_code != 200 or len(chart.json()["encounters"]) != ENCOUNTERS_PER_PATIENT:
            raise RuntimeError(f"unexpected chart: {chart.status_code} {chart.text[:300]}")
        log(f"  chart load: GET /api/v1/patients/{{id}}/chart, {len(charts)} patients, "
            f"{ENCOUNTERS_PER_PATIENT} encounters each")
        rows += _latency_rows("chart load", f"{base}/api/v1/patients", doctor, charts, seconds, 50, tmp)

        desk = login(base, RECEPTIONIST)
        clinic = Clinic(base, login(base, ADMIN), providers=6)
        patients = [p[0] for p in sample]
        rows += _throughput(base, desk, clinic, clinic.providers[:4], patients, seconds, tmp)
        rows += asyncio.run(_contended(base, desk, clinic, clinic.providers[4], patients))
        for bookers, first_slot in ((1, 0), (16, 1000)):
            rows += asyncio.run(_push_latency(base, desk, ids["tenant"], clinic, clinic.providers[5], patients,
                                              bookers, first_slot))
    return rows
