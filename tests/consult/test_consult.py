"""Consultations: the offline assistant's intake from first message to summary, emergencies that
stop at once and top the queue, who may read what, and the LLM adapter against a stand-in
OpenAI-compatible server that must never see an identifier."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import SecretStr

from carebase.consult import service as consult
from carebase.platform.authz import Principal
from carebase.platform.errors import DomainError
from tests.conftest import assert_problem, bearer, login, run_db, tenant_id_of
from tests.standins.llm import LlmStandIn

PATIENT = "patient@demo.carebase.local"
DOCTOR = "doctor@demo.carebase.local"

ANSWERS = ["It started 3 days ago and is getting worse.", "About 6 out of 10.",
           "A bit of fever, no rash. Warm tea helps.", "Paracetamol 500 mg twice, it helped a little.",
           "No, my breathing is fine.", "No ear pain.", "No.", "Temperature 38.2, pulse 88."]


def _converse(client, token, first: str) -> dict:
    r = client.post("/api/v1/consultations", headers=bearer(token), json={"text": first})
    assert r.status_code == 201, r.text
    c = r.json()
    for answer in ANSWERS:
        if c["status"] != "active":
            break
        r = client.post(f"/api/v1/consultations/{c['id']}/messages", headers=bearer(token), json={"text": answer})
        assert r.status_code == 200, r.text
        c = r.json()
    return c


def test_a_patient_consults_and_the_doctor_reads_the_summary(client, owner):
    patient = login(client, PATIENT)
    c = _converse(client, patient, "Hi, I'm Asha Verma. Sore throat, runny nose and sneezing; call me on "
                                   "+91 98000 00001 if needed.")
    assert c["status"] == "completed" and c["engine"] == "offline", c
    exchanges = sum(1 for t in c["turns"] if t["role"] == "patient")
    assert 5 <= exchanges <= 10
    assert [t["role"] for t in c["turns"]] == ["patient", "assistant"] * exchanges  # every message answered
    s = c["summary"]
    assert {"sore throat", "runny nose", "sneezing"} <= set(s["symptoms"])
    assert s["duration"] == "3 days ago" or "3 days" in s["duration"]
    assert s["severity"] == 6
    assert s["vitals"] == {"temperature": "38.2", "pulse": 88}
    # From the chart (the seeded visit): allergies, medicines and problems.
    assert "Penicillin" in s["allergies"] and "Amlodipine" in s["current_medicines"] and "Hypertension" in s["history"]
    assert any("cold" in p["name"].casefold() for p in s["possible_conditions"])
    # The patient sees their own words; what the assistant saw had tokens instead of identifiers.
    assert "Asha Verma" in c["turns"][0]["text"]
    seen = owner.execute("SELECT model_text FROM consultation_turns WHERE consultation_id = %s AND role = 'patient' "
                         "ORDER BY seq", (c["id"],)).fetchall()
    assert "Asha" not in seen[0][0] and "98000" not in seen[0][0] and "[NAME_1]" in seen[0][0], seen[0][0]

    # The doctor finds it in the queue and reads the transcript (an audited read).
    doctor = login(client, DOCTOR)
    queue = client.get("/api/v1/consultations", headers=bearer(doctor)).json()
    assert c["id"] in [q["id"] for q in queue]
    full = client.get(f"/api/v1/consultations/{c['id']}", headers=bearer(doctor)).json()
    assert full["summary"] == s and len(full["turns"]) == 2 * exchanges
    assert owner.execute("SELECT count(*) FROM audit_reads WHERE record_type = 'consultation' AND record_id = %s",
                         (c["id"],)).fetchone()[0] >= 1
    # A finished consultation takes no more messages.
    r = client.post(f"/api/v1/consultations/{c['id']}/messages", headers=bearer(patient), json={"text": "one more"})
    assert_problem(r, 409, "consultation-closed")


def test_chest_pain_on_exertion_stops_at_once_and_tops_the_queue(client, owner):
    patient = login(client, PATIENT)
    routine = _converse(client, patient, "I have a runny nose and sneezing")
    r = client.post("/api/v1/consultations", headers=bearer(patient),
                    json={"text": "I get a crushing chest pain when I climb the stairs and it goes to my left arm"})
    assert r.status_code == 201
    c = r.json()
    assert c["status"] == "emergency" and c["urgency"] == "emergency"
    assert c["emergency"]["signs"] == ["chest pain with exertion or radiation"]
    assert [t["role"] for t in c["turns"]] == ["patient", "assistant"]
    assert "emergency services" in c["turns"][1]["text"]
    doctor = login(client, DOCTOR)
    queue = client.get("/api/v1/consultations", headers=bearer(doctor)).json()
    ids = [q["id"] for q in queue]
    # Every emergency waiting comes before anything routine (the oldest emergency first).
    assert all(q["urgency"] == "emergency" for q in queue[:ids.index(c["id"]) + 1])
    assert ids.index(c["id"]) < ids.index(routine["id"])
    emergencies = client.get("/api/v1/consultations?status=emergency", headers=bearer(doctor)).json()
    assert {q["status"] for q in emergencies} == {"emergency"} and c["id"] in [q["id"] for q in emergencies]
    r = client.post(f"/api/v1/consultations/{c['id']}/messages", headers=bearer(patient), json={"text": "hello?"})
    assert_problem(r, 409, "consultation-closed")

    # A clinician deals with it and says what was done; it leaves the emergencies.
    assert client.post(f"/api/v1/consultations/{c['id']}/handled", headers=bearer(patient),
                       json={"note": "fine now"}).status_code == 403
    assert client.post(f"/api/v1/consultations/{c['id']}/handled", headers=bearer(doctor),
                       json={"note": ""}).status_code == 422
    r = client.post(f"/api/v1/consultations/{c['id']}/handled", headers=bearer(doctor),
                    json={"note": "Called her; ambulance sent to the address on file."})
    assert r.status_code == 200 and r.json()["status"] == "handled" and r.json()["handled_note"].startswith("Called")
    emergencies = client.get("/api/v1/consultations?status=emergency", headers=bearer(doctor)).json()
    assert c["id"] not in [q["id"] for q in emergencies]
    assert_problem(client.post(f"/api/v1/consultations/{routine['id']}/handled", headers=bearer(doctor),
                               json={"note": "n/a"}), 409, "not-an-emergency")


def test_only_the_patient_and_the_clinicians_read_a_consultation(client, owner):
    patient = login(client, PATIENT)
    r = client.post("/api/v1/consultations", headers=bearer(patient), json={"text": "headache since yesterday"})
    cid = r.json()["id"]
    for who in ("receptionist@demo.carebase.local", "pharmacist@demo.carebase.local",
                "patient@demo2.carebase.local", "doctor@demo2.carebase.local"):
        r = client.get(f"/api/v1/consultations/{cid}", headers=bearer(login(client, who)))
        assert r.status_code == 404, (who, r.text)
    # Staff cannot talk as the patient, nor start one (they have no consultation of their own).
    doctor = login(client, DOCTOR)
    assert_problem(client.post(f"/api/v1/consultations/{cid}/messages", headers=bearer(doctor),
                               json={"text": "hi"}), 403, "forbidden")
    assert_problem(client.post("/api/v1/consultations", headers=bearer(doctor), json={"text": "hi"}), 403,
                   "forbidden")
    # Patients see their own list only.
    mine = client.get("/api/v1/consultations", headers=bearer(patient)).json()
    assert cid in [m["id"] for m in mine]
    other = client.get("/api/v1/consultations", headers=bearer(login(client, "patient@demo2.carebase.local"))).json()
    assert cid not in [m["id"] for m in other]


@pytest.mark.parametrize("text", ["", "   ", "x" * 2001])
def test_bad_messages_are_refused_and_store_nothing(client, owner, text):
    patient = login(client, PATIENT)
    before = owner.execute("SELECT count(*) FROM consultations").fetchone()[0]
    r = client.post("/api/v1/consultations", headers=bearer(patient), json={"text": text})
    assert r.status_code == 422, r.text
    assert owner.execute("SELECT count(*) FROM consultations").fetchone()[0] == before


# -- the LLM adapter ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llm():
    with LlmStandIn() as standin:
        yield standin


def _as_patient(backend, owner, llm: LlmStandIn | None, fn):
    """Run ``fn(session, principal)`` as the demo patient, with the assistant on the stand-in."""
    tenant = tenant_id_of(owner, "demo")
    account = owner.execute("SELECT id FROM accounts WHERE email = %s", (PATIENT,)).fetchone()[0]
    principal = Principal.of(account, tenant, ["patient"])
    update = {"llm_base_url": f"{llm.url}/v1", "llm_model": llm.model,
              "llm_api_key": SecretStr(llm.api_key)} if llm else {}
    settings = backend.settings.model_copy(update=update)
    return run_db(backend, lambda session: fn(session, principal), owner=False, tenant_id=tenant, account_id=account,
                  settings=settings)


def test_the_llm_sees_tokens_never_identifiers_and_its_answers_are_re_identified(backend, owner, llm):
    llm.reset()
    llm.script = ["Sorry to hear that, [NAME_1]. When did the cough start?",
                  "```json\n" + json.dumps({"done": True, "message": "Thank you [NAME_1], a doctor will review this.",
                                            "summary": {"complaint": "cough (patient [NAME_1])", "symptoms": ["cough"],
                                                        "duration": "2 weeks", "severity": 3,
                                                        "possible_conditions": [{"name": "Acute bronchitis",
                                                                                 "code": "J20.9"}]}}) + "\n```"]

    async def go(session, principal):
        c = await consult.start(session, principal, "This is Asha Verma (asha.v@example.org), dry cough, "
                                                    "born 12/04/1987")
        return await consult.say(session, principal, c.id, "Two weeks ago, call +919800000001")

    c = _as_patient(backend, owner, llm, go)
    assert c.status == "completed" and c.engine == f"llm:{llm.model}"
    assert c.turns[1].text == "Sorry to hear that, Asha Verma. When did the cough start?"
    assert c.turns[3].text == "Thank you Asha Verma, a doctor will review this."
    assert c.summary["complaint"] == "cough (patient Asha Verma)" and c.summary["duration"] == "2 weeks"
    # What left the server: two requests, the system prompt with the chart's context, no identifier.
    assert len(llm.received) == 2
    sent = json.dumps([r.json() for r in llm.received])
    for identifier in ("Asha", "Verma", "asha.v@example.org", "12/04/1987", "9800000001", "DEMO-0001"):
        assert identifier not in sent, identifier
    messages = llm.received[1].json()["messages"]
    assert messages[0]["role"] == "system" and "Penicillin" in messages[0]["content"]
    # The knowledge base's entries for the complaint ride along (full text, fused with vectors where present).
    assert "curated knowledge base" in messages[0]["content"] and "cough" in messages[0]["content"].casefold()
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user"]
    assert "[NAME_1]" in messages[1]["content"] and "[EMAIL_1]" in messages[1]["content"]


def test_an_unreachable_model_is_a_503_and_stores_nothing(backend, owner, llm):
    llm.reset()
    llm.fail_next(1, 500, {"error": {"message": "overloaded", "type": "server_error"}})
    before = owner.execute("SELECT count(*) FROM consultations").fetchone()[0]

    async def go(session, principal):
        return await consult.start(session, principal, "sore throat")

    with pytest.raises(DomainError) as refused:
        _as_patient(backend, owner, llm, go)
    assert refused.value.status == 503 and refused.value.code == "assistant-unavailable"
    assert owner.execute("SELECT count(*) FROM consultations").fetchone()[0] == before


def test_an_assistant_that_never_finishes_is_summarised_after_ten_exchanges(backend, owner, llm):
    llm.reset()
    llm.script = ["And then?"] * 20

    async def go(session, principal):
        c = await consult.start(session, principal, "back pain after lifting a box")
        for i in range(20):
            if c.status != "active":
                break
            c = await consult.say(session, principal, c.id, f"answer {i}")
        return c

    c = _as_patient(backend, owner, llm, go)
    assert c.status == "completed" and sum(1 for t in c.turns if t.role == "patient") == 10
    assert c.summary["complaint"] == "back pain after lifting a box"


def test_a_consultation_id_of_another_patient_is_not_found(backend, owner):
    async def go(session, principal):
        return await consult.say(session, principal, uuid.uuid4(), "hello")

    with pytest.raises(DomainError) as refused:
        _as_patient(backend, owner, None, go)
    assert refused.value.status == 404


def test_a_summary_of_the_wrong_shape_is_replaced_by_the_offline_one(backend, owner, llm):
    llm.reset()
    llm.script = ['{"done": true, "message": "Done.", "summary": {"vitals": "high", "possible_conditions": ["flu"]}}']

    async def go(session, principal):
        return await consult.start(session, principal, "sore throat and a runny nose")

    c = _as_patient(backend, owner, llm, go)
    assert c.status == "completed" and c.summary["engine"] == "offline"
    assert c.summary["complaint"] == "sore throat and a runny nose"
