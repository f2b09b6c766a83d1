"""HL7 v2 ADT ingestion over HTTP and MLLP: A01/A03/A04/A08/A40 onto patients and encounters,
acknowledgements AA/AE/AR, one application per control id, malformed messages kept in an inbox an
admin can read and replay, and API keys for integrations (also as a FHIR backend client)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import hl7
import hl7.mllp
import pytest

from tests.conftest import CarebaseProcess, bearer, free_port, login, wait_for

DOCTOR_NPI = "1047293117"  # Dr Meera Iyer of the demo clinic
ER7 = "x-application/hl7-v2+er7"


def message(event: str, mrn: str, *, control: str | None = None, family: str = "Okafor", given: str = "Chidi",
            birth: str = "19780412", sex: str = "M", phone: str = "+2348031234567", visit: str = "",
            attending: str = DOCTOR_NPI, patient_class: str = "I", extra: list[str] = (), msg_type: str = "ADT",
            admit: str = "", discharge: str = "") -> str:
    control = control or uuid.uuid4().hex[:20]
    segments = [f"MSH|^~\\&|HIS|CITYHOSP|CAREBASE|DEMO|20261207080000+0000||{msg_type}^{event}^ADT_{event}|{control}|P|2.5",
                f"EVN|{event}|20261207080000+0000",
                f"PID|1||{mrn}^^^CITYHOSP^MR||{family}^{given}^A||{birth}|{sex}|||12 Marina Road^^Lagos^^^NG||"
                f"{phone}"]
    if event in ("A01", "A03"):
        # PV1-7 attending doctor, PV1-19 visit number, PV1-44/45 admit and discharge times.
        segments.append(f"PV1|1|{patient_class}|W3^301^1||||{attending}^Iyer^Meera|||MED|||||||||{visit}"
                        + "|" * 25 + f"{admit}|{discharge}")
    segments += list(extra)
    return "\r".join(segments) + "\r"


def msa(ack: str) -> list[str]:
    return next(s for s in ack.split("\r") if s.startswith("MSA")).split("|")


def err(ack: str) -> str:
    return next((s for s in ack.split("\r") if s.startswith("ERR")), "")


@pytest.fixture(scope="module")
def feed_key(server) -> str:
    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as client:
        admin = login(client, "admin@demo.carebase.local")
        r = client.post("/api/v1/api-keys", json={"name": "ADT feed", "scope": "hl7:ingest"}, headers=bearer(admin))
        assert r.status_code == 201, r.text
        return r.json()["key"]


def send(client, key: str, text: str) -> str:
    r = client.post("/api/v1/hl7/v2", content=text.encode(), headers={"X-API-Key": key, "Content-Type": ER7})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(ER7)
    return r.text


def fhir_patient(client, token, mrn: str) -> list[dict]:
    r = client.get("/fhir/R4/Patient", params={"identifier": mrn}, headers=bearer(token)).json()
    return [e["resource"] for e in r.get("entry", []) if e["search"]["mode"] == "match"]


def test_register_update_admit_discharge_and_merge(client, owner, feed_key):
    doctor = login(client, "doctor@demo.carebase.local")
    mrn = "H" + uuid.uuid4().hex[:9].upper()
    ack = send(client, feed_key, message("A04", mrn))
    assert msa(ack)[1] == "AA" and ack.startswith("MSH|^~\\&|Carebase|")
    (p,) = fhir_patient(client, doctor, mrn)
    assert p["name"][0]["family"] == "Okafor" and p["birthDate"] == "1978-04-12" and p["gender"] == "male"
    assert p["telecom"][0]["value"] == "+2348031234567" and p["address"][0]["country"] == "NG"

    assert msa(send(client, feed_key, message("A08", mrn, phone="+2348039999999")))[1] == "AA"
    (p,) = fhir_patient(client, doctor, mrn)
    assert p["telecom"][0]["value"] == "+2348039999999"

    visit = "V" + uuid.uuid4().hex[:8]
    assert msa(send(client, feed_key, message("A01", mrn, visit=visit, admit="202612070730+0000")))[1] == "AA"
    stays = client.get("/fhir/R4/Encounter", params={"patient": p["id"]}, headers=bearer(doctor)).json()["entry"]
    (stay,) = [e["resource"] for e in stays]
    assert stay["status"] == "in-progress" and stay["class"]["code"] == "IMP"
    assert stay["identifier"][0]["value"] == visit and stay["period"]["start"] == "2026-12-07T07:30:00.000Z"
    assert stay["participant"][0]["individual"]["reference"].startswith("Practitioner/")
    # The same admission under a new control id (a resend after a lost ACK) does not admit twice.
    assert msa(send(client, feed_key, message("A01", mrn, visit=visit)))[1] == "AA"
    assert msa(send(client, feed_key, message("A03", mrn, visit=visit, discharge="202612070900+0000")))[1] == "AA"
    (stay,) = [e["resource"] for e in client.get("/fhir/R4/Encounter", params={"patient": p["id"]},
                                                  headers=bearer(doctor)).json()["entry"]]
    assert stay["status"] == "finished" and stay["period"]["end"] == "2026-12-07T09:00:00.000Z"

    prior = "H" + uuid.uuid4().hex[:9].upper()
    assert msa(send(client, feed_key, message("A04", prior, family="Okafor", given="C.")))[1] == "AA"
    merge = message("A40", mrn, extra=[f"MRG|{prior}^^^CITYHOSP^MR"])
    assert msa(send(client, feed_key, merge))[1] == "AA"
    merged = owner.execute("SELECT merged_into FROM patients WHERE mrn = %s", (prior,)).fetchone()[0]
    assert str(merged) == p["id"]


def test_the_same_control_id_is_applied_once(client, owner, feed_key):
    mrn = "H" + uuid.uuid4().hex[:9].upper()
    text = message("A04", mrn, control="DUP-" + uuid.uuid4().hex[:8])
    first, again = send(client, feed_key, text), send(client, feed_key, text)
    assert msa(first)[1] == msa(again)[1] == "AA" and msa(first)[2] == msa(again)[2]
    assert "Already processed" in msa(again)[3]
    assert owner.execute("SELECT count(*) FROM patients WHERE mrn = %s", (mrn,)).fetchone()[0] == 1
    statuses = owner.execute("SELECT status FROM hl7_messages WHERE control_id = %s ORDER BY received_at",
                             (msa(first)[2],)).fetchall()
    assert [s[0] for s in statuses] == ["processed", "duplicate"]


@pytest.mark.parametrize("text,code,reason", [
    ("PID|1||X^^^H^MR||Doe^John\r", "AR", "does not start with an MSH"),
    ("MSH|^~\\&|HIS|CITYHOSP|CAREBASE|DEMO|20261207||ADT^A04\r", "AR", "MSH-10"),
    ("MSH|^~\\&|HIS|CITYHOSP|CAREBASE|DEMO|20261207||ORU^R01|X1|P|2.5\rOBX|1|NM|1^x||5\r", "AR", "not taken here"),
    ("MSH|^~\\&|HIS|CITYHOSP|CAREBASE|DEMO|20261207||ADT^A04|X2|P|3.0\r", "AR", "not v2"),
    ("", "AR", "does not start with an MSH"),
    # Corrupt: PostgreSQL cannot store NUL, so this one was a 500 and kept nothing.
    ("MSH|^~\\&|HIS|CITYHOSP|CAREBASE|DEMO|20261207||ADT^A04|X3|P|2.5\rPID|1||X3^^^H^MR||Do\x00e^John\r", "AR",
     "NUL"),
])
def test_malformed_messages_are_rejected_and_kept(client, owner, feed_key, text, code, reason):
    before = owner.execute("SELECT count(*) FROM patients").fetchone()[0]
    ack = send(client, feed_key, text)
    assert msa(ack)[1] == code and reason in ack, ack
    assert err(ack).startswith("ERR|")
    assert owner.execute("SELECT count(*) FROM patients").fetchone()[0] == before
    assert owner.execute("SELECT status, ack_code FROM hl7_messages ORDER BY received_at DESC LIMIT 1").fetchone() \
        == ("rejected", "AR")


def test_an_application_error_writes_nothing_and_can_be_replayed(client, owner, feed_key):
    admin = login(client, "admin@demo.carebase.local")
    mrn = "H" + uuid.uuid4().hex[:9].upper()
    # A truncated PID (no birth date) cannot register anyone: AE, with the reason in ERR.
    ack = send(client, feed_key, message("A04", mrn, birth=""))
    assert msa(ack)[1] == "AE" and "PID-7 birth date" in err(ack) and "PID" in err(ack).split("|")[2]
    # An admission by a doctor the directory does not know: AE, and not even the patient is written.
    ack = send(client, feed_key, message("A01", mrn, visit="V1", attending="9999999999"))
    assert msa(ack)[1] == "AE" and "9999999999" in err(ack)
    assert owner.execute("SELECT count(*) FROM patients WHERE mrn = %s", (mrn,)).fetchone()[0] == 0
    # An update for a patient nobody registered yet: AE; once registered, the admin replays it.
    update = send(client, feed_key, message("A08", mrn, phone="+2348035555555"))
    assert msa(update)[1] == "AE" and "No patient with record number" in err(update)
    inbox = client.get("/api/v1/hl7/messages", params={"status": "error"}, headers=bearer(admin)).json()
    failed = next(i for i in inbox["items"] if i["control_id"] == msa(update)[2])
    assert failed["ack_code"] == "AE" and failed["message_type"] == "ADT^A08" and inbox["counts"]["error"] >= 3
    opened = client.get(f"/api/v1/hl7/messages/{failed['id']}", headers=bearer(admin)).json()
    assert opened["body"].startswith("MSH|") and "+2348035555555" in opened["body"]
    assert msa(send(client, feed_key, message("A04", mrn)))[1] == "AA"
    r = client.post(f"/api/v1/hl7/messages/{failed['id']}/replay", headers=bearer(admin))
    assert r.status_code == 200, r.text
    assert r.json()["ack_code"] == "AA" and r.json()["status"] == "processed"
    assert owner.execute("SELECT phone FROM patients WHERE mrn = %s", (mrn,)).fetchone()[0] == "+2348035555555"
    again = client.post(f"/api/v1/hl7/messages/{r.json()['message_id']}/replay", headers=bearer(admin))
    assert again.status_code == 409
    # The inbox is the organization's: a doctor may not read it, another clinic does not see it.
    assert client.get("/api/v1/hl7/messages", headers=bearer(login(client, "doctor@demo.carebase.local"))
                      ).status_code == 403
    assert client.get(f"/api/v1/hl7/messages/{failed['id']}",
                      headers=bearer(login(client, "admin@demo2.carebase.local"))).status_code == 404


def test_a_message_with_a_nul_is_rejected_kept_as_it_came_and_rejected_again_on_replay(client, owner, feed_key):
    admin = login(client, "admin@demo.carebase.local")
    mrn = "H" + uuid.uuid4().hex[:9].upper()
    ack = send(client, feed_key, message("A04", mrn, family="Oka\x00for"))
    assert msa(ack)[1] == "AR" and "NUL" in err(ack), ack
    inbox = client.get("/api/v1/hl7/messages", params={"status": "rejected"}, headers=bearer(admin)).json()
    kept = next(i for i in inbox["items"] if i["control_id"] == msa(ack)[2])
    opened = client.get(f"/api/v1/hl7/messages/{kept['id']}", headers=bearer(admin)).json()
    assert "Oka\x00for" in opened["body"]  # sealed as it came, not "repaired"
    r = client.post(f"/api/v1/hl7/messages/{kept['id']}/replay", headers=bearer(admin))
    assert r.status_code == 200 and r.json()["ack_code"] == "AR", r.text
    assert owner.execute("SELECT count(*) FROM patients WHERE mrn = %s", (mrn,)).fetchone()[0] == 0


def test_only_a_live_key_with_the_hl7_scope_may_send(client, feed_key):
    text = message("A04", "H" + uuid.uuid4().hex[:9].upper())
    assert client.post("/api/v1/hl7/v2", content=text.encode()).status_code == 401
    assert client.post("/api/v1/hl7/v2", content=text.encode(), headers={"X-API-Key": "cbk_nope"}).status_code == 401
    assert client.post("/api/v1/hl7/v2", content=text.encode(),
                       headers=bearer(login(client, "doctor@demo.carebase.local"))).status_code == 403
    admin = login(client, "admin@demo.carebase.local")
    reader = client.post("/api/v1/api-keys", json={"name": "FHIR reader", "scope": "system/*.read"},
                         headers=bearer(admin)).json()
    r = client.post("/api/v1/hl7/v2", content=text.encode(), headers={"X-API-Key": reader["key"]})
    assert r.status_code == 403 and r.json()["code"] == "insufficient-scope"
    # That key is a FHIR backend client: client credentials, then read-only FHIR, and no JSON API.
    token = client.post("/api/v1/auth/client-token", data={"grant_type": "client_credentials",
                                                    "client_secret": reader["key"]}).json()
    assert token["scope"] == "system/*.read" and token["refresh_token"] is None
    assert client.get("/fhir/R4/Patient", params={"_count": 1}, headers=bearer(token)).status_code == 200
    assert client.post("/fhir/R4/Patient", json={"resourceType": "Patient"}, headers=bearer(token)).status_code == 403
    assert client.get("/api/v1/patients", headers=bearer(token)).status_code == 403
    listed = client.get("/api/v1/api-keys", headers=bearer(admin)).json()
    assert all(k["key"] is None for k in listed) and reader["id"] in {k["id"] for k in listed}
    assert client.delete(f"/api/v1/api-keys/{reader['id']}", headers=bearer(admin)).status_code == 204
    assert client.get("/fhir/R4/Patient", headers=bearer(token)).status_code == 401
    assert client.post("/api/v1/hl7/v2", content=text.encode(), headers={"X-API-Key": reader["key"]}).status_code == 401
    bad = client.post("/api/v1/api-keys", json={"name": "x", "scope": "user/*.*"}, headers=bearer(admin))
    assert bad.status_code == 422 and bad.json()["code"] == "invalid-scope"


def _mllp_exchange(port: int, frames: list[bytes]) -> list[str]:
    """A raw TCP peer: send bytes as given (frames split anywhere), read the framed ACKs."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        for chunk in frames:
            s.sendall(chunk)
            time.sleep(0.05)
        out, buffer = [], b""
        while buffer.count(b"\x1c\x0d") < sum(c.count(b"\x1c\x0d") for c in frames):
            data = s.recv(65536)
            if not data:
                break
            buffer += data
        for frame in buffer.split(b"\x1c\x0d")[:-1]:
            out.append(frame.lstrip(b"\x0b").decode())
        return out


def test_the_mllp_listener_with_a_real_client(backend, owner, feed_key):
    port = free_port()
    proc = CarebaseProcess(backend, ["hl7-listen", "--port", str(port), "--host", "127.0.0.1"],
                           {"CAREBASE_HL7_API_KEY": feed_key}, f"hl7-{port}.log")
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return proc.proc.poll() is not None
        wait_for(up, timeout=90, message="the MLLP listener to start")
        assert proc.proc.poll() is None, proc.log.read_text()
        mrn = "M" + uuid.uuid4().hex[:9].upper()

        async def with_python_hl7():
            # python-hl7's own MLLP client: a third-party implementation of the framing.
            reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port)
            try:
                writer.writemessage(hl7.parse(message("A04", mrn)))
                await writer.drain()
                return await asyncio.wait_for(reader.readmessage(), 30)
            finally:
                writer.close()

        answer = asyncio.run(with_python_hl7())
        assert str(answer.segment("MSA")[1]) == "AA"
        assert owner.execute("SELECT count(*) FROM patients WHERE mrn = %s", (mrn,)).fetchone()[0] == 1
        # Two messages in one write, the second split across writes, then a malformed one.
        one = b"\x0b" + message("A08", mrn, phone="+2348030000001").encode() + b"\x1c\x0d"
        two = b"\x0b" + message("A08", mrn, phone="+2348030000002").encode() + b"\x1c\x0d"
        bad = b"\x0bNOT HL7 AT ALL\x1c\x0d"
        acks = _mllp_exchange(port, [one + two[:40], two[40:], bad])
        assert [msa(a)[1] for a in acks] == ["AA", "AA", "AR"]
        assert owner.execute("SELECT phone FROM patients WHERE mrn = %s", (mrn,)).fetchone()[0] == "+2348030000002"
        assert owner.execute("SELECT count(*) FROM hl7_messages WHERE via = 'mllp' AND status = 'rejected'"
                             ).fetchone()[0] >= 1
    finally:
        proc.stop()


def test_a_listener_with_a_wrong_key_refuses_to_start(backend):
    port = free_port()
    proc = CarebaseProcess(backend, ["hl7-listen", "--port", str(port)], {"CAREBASE_HL7_API_KEY": "cbk_0_wrong"},
                           f"hl7-bad-{port}.log")
    try:
        proc.proc.wait(90)
        assert proc.proc.returncode != 0
        assert "API key is not valid" in proc.log.read_text()
    finally:
        proc.stop()
