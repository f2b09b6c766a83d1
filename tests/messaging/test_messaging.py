"""Messaging: patients and their care team, participants only, read receipts, unread badges,
search, attachments, the WebSocket across two server processes, and offline nudges."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from urllib.parse import urlsplit

import httpx
from websockets.sync.client import connect

from carebase.messaging import service as messaging
from carebase.platform.db import Database
from carebase.settings import set_settings
from tests.conftest import ProcessServer, assert_problem, bearer, demo_patient, login, new_staff, tenant_id_of

DOCTOR = "doctor@demo.carebase.local"
PATIENT = "patient@demo.carebase.local"


def _account(client, token) -> str:
    return client.get("/api/v1/me", headers=bearer(token)).json()["id"]


def _send(client, token, **body) -> httpx.Response:
    return client.post("/api/v1/messages/send", headers=bearer(token), json=body)


def _conversation_with_doctor(client, owner) -> tuple[dict, dict, str]:
    """A fresh doctor writes to the demo patient; returns both logins and the conversation id."""
    staff = new_staff(client, owner, "doctor")
    doctor = login(client, staff["email"], staff["password"])
    patient = login(client, PATIENT)
    r = _send(client, doctor, patient_id=str(demo_patient(owner)), body="Your blood results are in.",
              client_message_id="m-1")
    assert r.status_code == 201, r.text
    return doctor, patient, r.json()["conversation_id"]


def test_a_doctor_and_a_patient_talk_with_receipts_badges_and_search(client, owner):
    doctor, patient, conversation = _conversation_with_doctor(client, owner)
    # The patient sees the conversation with one unread message.
    mine = [c for c in client.get("/api/v1/messages/conversations", headers=bearer(patient)).json()
            if c["id"] == conversation][0]
    assert mine["unread"] == 1 and mine["last_message"]["body"] == "Your blood results are in."
    assert {p["role"] for p in mine["participants"]} == {"patient", "staff"}
    # A retry of the same client message stores nothing new.
    again = _send(client, doctor, conversation_id=conversation, body="Your blood results are in.",
                  client_message_id="m-1")
    assert again.status_code == 201
    msgs = client.get(f"/api/v1/messages/conversations/{conversation}", headers=bearer(patient)).json()["messages"]
    assert len(msgs) == 1
    # The patient answers (their reply marks what they have seen), then reads the doctor's next line.
    reply = _send(client, patient, conversation_id=conversation, body="Thank you! Is my sugar fine?").json()
    later = _send(client, doctor, conversation_id=conversation, body="Sugar is fine, cholesterol a little high.").json()
    assert client.get("/api/v1/messages/conversations", headers=bearer(patient)).json()[0]["unread"] >= 1
    assert client.patch(f"/api/v1/messages/{later['id']}/read", headers=bearer(patient)).status_code == 204
    thread = client.get(f"/api/v1/messages/conversations/{conversation}", headers=bearer(doctor)).json()
    assert [m["body"] for m in thread["messages"]][-2:] == [reply["body"], later["body"]]
    receipt = [p for p in thread["participants"] if p["role"] == "patient"][0]["last_read_at"]
    assert receipt == later["created_at"]  # the doctor sees the patient has read it
    assert [c for c in client.get("/api/v1/messages/conversations", headers=bearer(patient)).json()
            if c["id"] == conversation][0]["unread"] == 0
    found = client.get("/api/v1/messages/search", params={"q": "cholesterol HIGH"}, headers=bearer(patient)).json()
    assert [m["id"] for m in found] == [later["id"]]


def test_only_participants_read_or_post(client, owner):
    doctor, patient, conversation = _conversation_with_doctor(client, owner)
    first = client.get(f"/api/v1/messages/conversations/{conversation}", headers=bearer(doctor)).json()["messages"][0]
    outsiders = [login(client, DOCTOR), login(client, "nurse@demo.carebase.local"),
                 login(client, "admin@demo.carebase.local"), login(client, "doctor@demo2.carebase.local")]
    for token in outsiders:
        assert_problem(client.get(f"/api/v1/messages/conversations/{conversation}", headers=bearer(token)), 404,
                       "conversation-not-found")
        assert_problem(_send(client, token, conversation_id=conversation, body="let me in"), 404,
                       "conversation-not-found")
        assert_problem(client.patch(f"/api/v1/messages/{first['id']}/read", headers=bearer(token)), 404,
                       "message-not-found")
        assert client.get("/api/v1/messages/search", params={"q": "blood"}, headers=bearer(token)).json() == [] \
            or all(m["conversation_id"] != conversation
                   for m in client.get("/api/v1/messages/search", params={"q": "blood"}, headers=bearer(token)).json())
    assert owner.execute("SELECT count(*) FROM messages WHERE conversation_id = %s", (conversation,)).fetchone()[0] == 1
    # A patient writes only to their care team; the pharmacist of another clinic is nobody to them.
    other_clinic = _account(client, login(client, "doctor@demo2.carebase.local"))
    assert_problem(_send(client, patient, to_account_id=other_clinic, body="hello"), 422, "not-a-care-team-member")
    assert_problem(_send(client, patient, conversation_id=conversation, body="   "), 422, "empty-message")


def test_a_patient_starts_a_conversation_with_their_care_team(client, owner):
    patient = login(client, PATIENT)
    team = client.get("/api/v1/messages/contacts", headers=bearer(patient)).json()
    nurse = [c for c in team if c["role"] == "nurse"][0]
    r = _send(client, patient, to_account_id=nurse["account_id"], body="Can I take paracetamol with my tablets?")
    assert r.status_code == 201, r.text
    again = _send(client, patient, to_account_id=nurse["account_id"], body="(and with food?)")
    assert again.json()["conversation_id"] == r.json()["conversation_id"]  # one conversation per pair
    nurse_token = login(client, "nurse@demo.carebase.local")
    mine = client.get("/api/v1/messages/conversations", headers=bearer(nurse_token)).json()
    assert any(c["id"] == r.json()["conversation_id"] and c["unread"] >= 2 for c in mine)


def _run_nudge(backend, **args) -> bool:
    async def go():
        set_settings(backend.settings)
        db = Database(backend.settings, backend.urls)
        try:
            return await messaging.nudge(db, **args)
        finally:
            await db.dispose()

    return asyncio.run(go())


def test_an_unread_message_becomes_a_notification(client, owner, backend):
    doctor, patient, conversation = _conversation_with_doctor(client, owner)
    message = owner.execute("SELECT id, sender_id FROM messages WHERE conversation_id = %s",
                            (conversation,)).fetchone()
    job = owner.execute("SELECT args, scheduled_at - now() FROM procrastinate_jobs WHERE task_name = "
                        "'messaging.nudge' AND args->>'message_id' = %s", (str(message[0]),)).fetchone()
    assert job is not None and job[0]["account_id"] == _account(client, patient)
    args = {"message_id": message[0], "account_id": uuid.UUID(job[0]["account_id"]),
            "tenant_id": tenant_id_of(owner, "demo")}
    assert _run_nudge(backend, **args)
    notices = client.get("/api/v1/notifications", headers=bearer(patient)).json()
    assert notices[0]["kind"] == "message.new" and notices[0]["title"].startswith("New message from")
    # Read in time: no nudge.
    later = _send(client, doctor, conversation_id=conversation, body="Please fast before the next test.").json()
    client.patch(f"/api/v1/messages/{later['id']}/read", headers=bearer(patient))
    assert not _run_nudge(backend, **{**args, "message_id": uuid.UUID(later["id"])})


def test_attachments_are_checked_and_served_to_participants_only(client, owner):
    doctor, patient, conversation = _conversation_with_doctor(client, owner)
    pdf = b"%PDF-1.4\n% a lab report\n"
    up = client.post("/api/v1/messages/attachments", headers=bearer(doctor), data={"conversation_id": conversation},
                     files={"file": ("Lab report – März.pdf", pdf, "application/pdf")})
    assert up.status_code == 201, up.text
    fake = client.post("/api/v1/messages/attachments", headers=bearer(doctor), data={"conversation_id": conversation},
                       files={"file": ("notes.pdf", b"MZ\x90\x00 not a pdf", "application/pdf")})
    assert_problem(fake, 422, "attachment-type")
    exe = client.post("/api/v1/messages/attachments", headers=bearer(doctor), data={"conversation_id": conversation},
                      files={"file": ("run.exe", b"MZ\x90\x00", "application/x-msdownload")})
    assert_problem(exe, 422, "attachment-type")
    sent = _send(client, doctor, conversation_id=conversation, body="Here is the report.",
                 attachment_ids=[up.json()["id"]])
    assert sent.status_code == 201 and sent.json()["attachments"][0]["filename"] == "Lab report – März.pdf"
    assert_problem(_send(client, doctor, conversation_id=conversation, body="again",
                         attachment_ids=[up.json()["id"]]), 422, "bad-attachment")  # already sent
    link = client.get(f"/api/v1/messages/attachments/{up.json()['id']}", headers=bearer(patient),
                      follow_redirects=False)
    assert link.status_code == 307
    signed = urlsplit(link.headers["location"])  # on CAREBASE_PUBLIC_URL; fetched from this test server
    got = client.get(f"{signed.path}?{signed.query}")
    assert got.status_code == 200 and got.content == pdf
    assert "attachment" in got.headers["content-disposition"]
    outsider = login(client, DOCTOR)
    assert_problem(client.get(f"/api/v1/messages/attachments/{up.json()['id']}", headers=bearer(outsider),
                              follow_redirects=False), 404, "attachment-not-found")


def test_a_message_sent_through_one_server_reaches_a_websocket_on_another(client, owner, backend):
    doctor, patient, conversation = _conversation_with_doctor(client, owner)
    a, b = ProcessServer(backend), ProcessServer(backend)
    try:
        ws_url = b.url.replace("http://", "ws://") + "/api/v1/messages/ws?access_token=" + patient["access_token"]
        events: list[dict] = []
        with connect(ws_url, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"

            def listen():
                try:
                    while True:
                        events.append(json.loads(ws.recv(timeout=10)))
                except Exception:
                    pass

            reader = threading.Thread(target=listen, daemon=True)
            reader.start()
            # The doctor types and sends through server A; the patient's socket is on server B.
            with connect(a.url.replace("http://", "ws://") + "/api/v1/messages/ws?access_token="
                         + doctor["access_token"], open_timeout=10) as doctor_ws:
                assert json.loads(doctor_ws.recv(timeout=10))["type"] == "ready"
                doctor_ws.send(json.dumps({"type": "typing", "conversation_id": conversation}))
                deadline = time.time() + 10
                while not any(e["type"] == "typing" for e in events) and time.time() < deadline:
                    time.sleep(0.01)  # the indicator first (it has its own round trip), then the message
                sent_at = time.monotonic()
                r = httpx.post(a.url + "/api/v1/messages/send", headers=bearer(doctor),
                               json={"conversation_id": conversation, "body": "Across processes"})
                assert r.status_code == 201
                deadline = time.time() + 10
                while not any(e["type"] == "message:new" for e in events) and time.time() < deadline:
                    time.sleep(0.01)
                got = time.monotonic() - sent_at
                assert [e["type"] for e in events if e["type"] in ("typing", "message:new")] == ["typing",
                                                                                                 "message:new"]
                new = [e for e in events if e["type"] == "message:new"][0]
                assert new["message_id"] == r.json()["id"] and new["conversation_id"] == conversation
                assert got < 5, got  # delivery, not speed: bench/chat.py measures the latency
                # The patient reads it through server B; the doctor's socket on A gets the receipt.
                httpx.patch(b.url + f"/api/v1/messages/{r.json()['id']}/read", headers=bearer(patient))
                while True:
                    e = json.loads(doctor_ws.recv(timeout=10))
                    if e["type"] == "message:read":
                        assert e["message_id"] == r.json()["id"]
                        break
        # Strangers' sockets are refused, and a foreign page cannot ride the portal cookie.
        try:
            with connect(b.url.replace("http://", "ws://") + "/api/v1/messages/ws", open_timeout=10) as anon:
                anon.recv(timeout=5)
            raise AssertionError("an anonymous socket stayed open")
        except Exception as exc:  # closed with 4401
            assert "4401" in str(exc) or "403" in str(exc) or "closed" in str(exc).lower(), exc
    finally:
        a.stop()
        b.stop()


def test_bad_uploads_are_refused_and_store_nothing(client, owner):
    doctor, patient, conversation = _conversation_with_doctor(client, owner)
    before = owner.execute("SELECT count(*) FROM message_attachments").fetchone()[0]
    h = bearer(doctor)
    url = "/api/v1/messages/attachments"
    cases = [
        ({"conversation_id": conversation}, None, 422),  # no file
        ({}, {"file": ("a.txt", b"hello", "text/plain")}, 422),  # no conversation
        ({"conversation_id": "not-a-uuid"}, {"file": ("a.txt", b"hello", "text/plain")}, 422),
        ({"conversation_id": conversation}, {"file": ("a.txt", b"", "text/plain")}, 422),  # empty
        ({"conversation_id": conversation}, {"file": ("a.txt", b"\xff\xfe\x00bad", "text/plain")}, 422),
        ({"conversation_id": conversation}, {"file": ("big.txt", b"x" * (2 * 1024 * 1024 - 32 * 1024),
                                                      "text/plain")}, 422),  # over the attachment limit
        ({"conversation_id": conversation}, {"file": ("huge.txt", b"x" * (3 * 1024 * 1024), "text/plain")}, 413),
        ({"conversation_id": str(uuid.uuid4())}, {"file": ("a.txt", b"hello", "text/plain")}, 404),
    ]
    for data, files, status in cases:
        r = client.post(url, headers=h, data=data, files=files) if files else client.post(url, headers=h, data=data)
        assert r.status_code == status, (data, files and list(files.values())[0][0], r.status_code, r.text[:200])
        assert r.headers["content-type"].startswith("application/problem+json")
    # Someone else's conversation: not found, as if it did not exist.
    stranger = login(client, "nurse@demo.carebase.local")
    r = client.post(url, headers=bearer(stranger), data={"conversation_id": conversation},
                    files={"file": ("a.txt", b"hello", "text/plain")})
    assert_problem(r, 404, "conversation-not-found")
    assert owner.execute("SELECT count(*) FROM message_attachments").fetchone()[0] == before
