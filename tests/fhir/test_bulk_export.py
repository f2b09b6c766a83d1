"""Bulk Data $export: kick-off (system, Patient and Group level), status polling, NDJSON files
with the requester's token, _type and _since, cancellation, and nobody else following it."""

from __future__ import annotations

import json
import time

import pytest
from fhir.resources.R4B import get_fhir_model_class

from tests.conftest import WorkerProcess, bearer, login
from tests.fhir.test_fhir_patient import assert_outcome

FHIR = "/fhir/R4"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def worker(backend):
    w = WorkerProcess(backend)
    yield w
    w.stop()


def _finish(client, token, status_url: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = client.get(status_url, headers=bearer(token))
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 202, r.text
        assert r.headers["x-progress"]
        time.sleep(0.3)
    raise AssertionError("the export did not finish")


def _ndjson(client, token, url: str) -> list[dict]:
    r = client.get(url, headers=bearer(token))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+ndjson")
    # Streamed with its length: a client can tell a download cut short from a whole one.
    assert r.headers["content-length"] == str(len(r.content)) and "transfer-encoding" not in r.headers
    return [json.loads(line) for line in r.text.splitlines() if line]


def test_system_export_writes_ndjson_per_type(client, worker, backend):
    admin = login(client, "admin@demo.carebase.local")
    r = client.get(f"{FHIR}/$export", headers={**bearer(admin), **ASYNC})
    assert r.status_code == 202, r.text
    manifest = _finish(client, admin, r.headers["content-location"])
    assert manifest["requiresAccessToken"] is True and manifest["transactionTime"]
    by_type = {o["type"]: o for o in manifest["output"]}
    assert {"Patient", "Encounter", "Condition", "Observation", "Practitioner", "Organization"} <= set(by_type)
    for kind in ("Patient", "Encounter", "Practitioner"):
        rows = _ndjson(client, admin, by_type[kind]["url"])
        assert len(rows) == by_type[kind]["count"] > 0
        for row in rows[:50]:
            assert row["resourceType"] == kind
            get_fhir_model_class(kind).model_validate(row)
    # The files are the requester's: another account (even an admin elsewhere) cannot follow or fetch.
    other = login(client, "admin@demo2.carebase.local")
    assert_outcome(client.get(r.headers["content-location"], headers=bearer(other)), 404)
    # Files are streamed from storage; one that is not in the manifest, or gone from storage, is a
    # clean 404 before any byte is sent.
    url = by_type["Patient"]["url"]
    assert_outcome(client.get(url.rsplit("/", 1)[0] + "/Spaceship.ndjson", headers=bearer(admin)), 404,
                   "export-file-not-found")
    export_id = url.split("/")[-2]
    (stored,) = (backend.settings.home / "storage" / "exports").glob(f"*/{export_id}/Patient.ndjson")
    stored.unlink()
    assert_outcome(client.get(url, headers=bearer(admin)), 404, "file-not-found")
    assert_outcome(client.get(by_type["Patient"]["url"], headers=bearer(other)), 404)
    assert client.get(by_type["Patient"]["url"]).status_code == 401


def test_outside_records_are_exported_with_carebase_s_own(client, worker):
    doctor = login(client, "doctor@demo.carebase.local")
    patient = client.get(f"{FHIR}/Patient", params={"_count": 1}, headers=bearer(doctor)).json()["entry"][0]
    shot = client.post(f"{FHIR}/Immunization", headers=bearer(doctor), json={
        "resourceType": "Immunization", "status": "completed", "occurrenceDateTime": "2026-11-02",
        "patient": {"reference": f"Patient/{patient['resource']['id']}"},
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "208"}]}}).json()
    elsewhere = client.post(f"{FHIR}/Practitioner", headers=bearer(doctor), json={
        "resourceType": "Practitioner", "name": [{"family": "Outsider", "given": ["Olga"]}]}).json()
    r = client.get(f"{FHIR}/Patient/$export", params={"_type": "Immunization,Patient"},
                   headers={**bearer(doctor), **ASYNC})
    manifest = _finish(client, doctor, r.headers["content-location"])
    by_type = {o["type"]: o for o in manifest["output"]}
    rows = _ndjson(client, doctor, by_type["Immunization"]["url"])
    assert shot["id"] in {row["id"] for row in rows} and all(row["resourceType"] == "Immunization" for row in rows)
    # The directory of other organizations comes with a system-level export, not a patient-level one.
    admin = login(client, "admin@demo.carebase.local")
    r = client.get(f"{FHIR}/$export", params={"_type": "Practitioner"}, headers={**bearer(admin), **ASYNC})
    manifest = _finish(client, admin, r.headers["content-location"])
    practitioners = _ndjson(client, admin, manifest["output"][0]["url"])
    assert elsewhere["id"] in {p["id"] for p in practitioners}
    assert any(p["id"] != elsewhere["id"] for p in practitioners)  # Carebase's own as well


def test_patient_and_group_level_with_type_and_since(client, worker, owner):
    doctor = login(client, "doctor@demo.carebase.local")
    r = client.get(f"{FHIR}/Patient/$export", params={"_type": "Patient,Observation", "_since": "2000-01-01"},
                   headers={**bearer(doctor), **ASYNC})
    assert r.status_code == 202, r.text
    manifest = _finish(client, doctor, r.headers["content-location"])
    assert {o["type"] for o in manifest["output"]} <= {"Patient", "Observation"}
    # A practitioner's panel: only the patients they have seen.
    provider = owner.execute("SELECT p.id FROM providers p JOIN tenants t ON t.id = p.tenant_id "
                             "WHERE t.slug = 'demo' AND p.npi = '1047293117'").fetchone()[0]
    group = client.get(f"{FHIR}/Group/{provider}", headers=bearer(doctor)).json()
    assert group["type"] == "person" and group["quantity"] == len(group["member"]) > 0
    r = client.get(f"{FHIR}/Group/{provider}/$export", params={"_type": "Patient"},
                   headers={**bearer(doctor), **ASYNC})
    manifest = _finish(client, doctor, r.headers["content-location"])
    (out,) = manifest["output"]
    exported = {p["id"] for p in _ndjson(client, doctor, out["url"])}
    assert exported == {m["entity"]["reference"].split("/")[1] for m in group["member"]}


def test_kick_off_refusals_and_cancel(client, worker):
    doctor = login(client, "doctor@demo.carebase.local")
    assert_outcome(client.get(f"{FHIR}/$export", headers=bearer(doctor)), 400, "prefer-async")
    assert_outcome(client.get(f"{FHIR}/$export", params={"_type": "Spaceship"}, headers={**bearer(doctor), **ASYNC}),
                   400, "bad-export-type")
    assert_outcome(client.get(f"{FHIR}/$export", params={"_outputFormat": "text/csv"},
                              headers={**bearer(doctor), **ASYNC}), 400, "bad-output-format")
    reader = login(client, "doctor@demo.carebase.local", scope="user/Patient.read")
    assert_outcome(client.get(f"{FHIR}/Patient/$export", headers={**bearer(reader), **ASYNC}), 403)
    worker.stop()  # nothing runs it now: it stays queued until cancelled
    r = client.get(f"{FHIR}/Patient/$export", headers={**bearer(doctor), **ASYNC})
    status = r.headers["content-location"]
    assert client.get(status, headers=bearer(doctor)).status_code == 202
    assert client.delete(status, headers=bearer(doctor)).status_code == 202
    assert_outcome(client.get(status, headers=bearer(doctor)), 404, "export-cancelled")


def test_the_job_holds_one_batch_not_the_export(tmp_path):
    """The export's files grow on disk batch by batch (Spool), and reach storage from there in
    chunks (put_file): a 20 MB export never has more than a few batches' worth in memory."""
    import asyncio
    import tracemalloc

    from pydantic import SecretStr

    from carebase.fhir.bulk import Spool
    from carebase.platform.storage import LocalStorage
    from carebase.settings import Settings

    async def export() -> tuple[int, int, int]:
        spool = Spool(tmp_path / "home", ["Observation", "Patient"])
        try:
            for n in range(20):  # 20 batches of 1,000 ~1 KB resources
                batch = [{"resourceType": "Observation", "id": f"{n}-{i}", "status": "final",
                          "note": [{"text": "x" * 1000}]} for i in range(1000)]
                await spool.write("Observation", batch)
                del batch
            assert spool.counts == {"Observation": 20_000, "Patient": 0}
            size = spool.path("Observation").stat().st_size
            store = LocalStorage(Settings(home=tmp_path / "home", secret_key=SecretStr("s" * 40)))
            await store.put_file("exports/t/e/Observation.ndjson", spool.path("Observation"), "application/fhir+ndjson")
            peak = tracemalloc.get_traced_memory()[1]  # before this test reads the file back whole
            stored = store.path_for("exports/t/e/Observation.ndjson")
            lines = stored.read_bytes().splitlines()
            assert len(lines) == 20_000 and json.loads(lines[-1])["id"] == "19-999"
            return size, stored.stat().st_size, peak
        finally:
            spool.close()

    tracemalloc.start()
    try:
        size, stored, peak = asyncio.run(export())
    finally:
        tracemalloc.stop()
    assert size == stored > 20_000_000
    assert peak < size / 4, f"peak {peak} bytes for a {size}-byte export"
    assert not list((tmp_path / "home").glob(".export-*"))  # the spool cleans up after itself


def test_a_starting_worker_deletes_the_spools_killed_workers_left(backend, owner):
    """A worker killed mid-export leaves its spool (patients' records) on disk; the next worker to
    start deletes it, and leaves a spool that is still being written alone."""
    import os
    import uuid as uuid_module

    import tests.jobs_fixture  # noqa: F401 - the heap probe job, to know the worker has started
    from carebase.platform import jobs
    from tests.conftest import run_db, wait_for

    home = backend.settings.home
    stale, live = home / f".export-{uuid_module.uuid4().hex}", home / f".export-{uuid_module.uuid4().hex}"
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "Patient.ndjson").write_text('{"resourceType":"Patient"}\n')
    old = time.time() - 2 * 3600
    for path in (stale / "Patient.ndjson", stale):
        os.utime(path, (old, old))
    tag = uuid_module.uuid4().hex

    async def defer(session):
        return await jobs.defer(session, "testing.heap", tag=tag)

    run_db(backend, defer)
    worker = WorkerProcess(backend)
    try:
        wait_for(lambda: owner.execute("SELECT to_regclass('job_probe')").fetchone()[0] and owner.execute(
            "SELECT 1 FROM job_probe WHERE job = %s", (tag,)).fetchone(), 30, message="the worker to start")
    finally:
        worker.stop()
    assert not stale.exists() and (live / "Patient.ndjson").exists()


def test_a_download_that_never_starts_still_closes_its_file(tmp_path):
    """The route reads a file's first chunk before answering (a missing file is then a clean 404);
    if the answer never goes out, closing the download closes the file."""
    import asyncio
    import os

    from pydantic import SecretStr

    from carebase.fhir.bulk import _Prefetched
    from carebase.platform.storage import LocalStorage
    from carebase.settings import Settings

    store = LocalStorage(Settings(home=tmp_path, secret_key=SecretStr("s" * 40)))

    async def go():
        await store.put("exports/t/e/Patient.ndjson", b'{"resourceType":"Patient"}\n' * 10, "application/fhir+ndjson")
        before = len(os.listdir("/proc/self/fd"))
        chunks = store.stream("exports/t/e/Patient.ndjson")
        download = _Prefetched(await anext(chunks), chunks)
        opened = len(os.listdir("/proc/self/fd"))
        await download.aclose()
        return before, opened, len(os.listdir("/proc/self/fd"))

    before, opened, after = asyncio.run(go())
    assert opened == before + 1 and after == before
