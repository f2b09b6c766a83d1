"""Prescriptions end to end through the API: the assistant's draft from a consultation, the
physicians' queue, an edit that reruns the safety rules, approval with an Ed25519 signature,
override reasons for blocking flags, rejection with a note, who sees what, and the public
verification that tells valid from revoked and tampered."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.conftest import assert_problem, bearer, demo_patient, login
from tests.consult.test_consult import ANSWERS
from tests.encounters.test_export import pdf_text

PATIENT = "patient@demo.carebase.local"
DOCTOR = "doctor@demo.carebase.local"


def _consultation_draft(client, owner) -> tuple[dict, dict, dict]:
    """The demo patient completes a consultation; returns the doctor's and patient's logins and the draft."""
    patient = login(client, PATIENT)
    c = client.post("/api/v1/consultations", headers=bearer(patient),
                    json={"text": "Sore throat, runny nose and sneezing"}).json()
    for answer in ANSWERS:
        if c["status"] != "active":
            break
        c = client.post(f"/api/v1/consultations/{c['id']}/messages", headers=bearer(patient),
                        json={"text": answer}).json()
    assert c["status"] == "completed"
    doctor = login(client, DOCTOR)
    queue = client.get("/api/v1/prescriptions/queue", headers=bearer(doctor)).json()
    draft = next(p for p in queue if p["consultation_id"] == c["id"])
    return doctor, patient, draft


def test_a_draft_is_edited_approved_signed_and_verified(client, owner, server):
    doctor, patient, draft = _consultation_draft(client, owner)
    assert draft["status"] == "draft" and draft["source"] == "assistant"
    assert "paracetamol" in [i["medicine"] for i in draft["items"]]
    assert "Common cold" in draft["diagnosis"]
    # Not yet the patient's to see.
    assert client.get(f"/api/v1/prescriptions/{draft['id']}", headers=bearer(patient)).status_code == 404

    # One edit: a dose, and a second medicine; the safety rules run again on it.
    items = [{"medicine": "paracetamol", "dose": 1000, "unit": "mg", "times_per_day": 4, "duration_days": 5,
              "instructions": "after food"},
             {"medicine": "Cetirizine", "dose": 10, "unit": "mg", "times_per_day": 1, "duration_days": 5}]
    edited = client.patch(f"/api/v1/prescriptions/{draft['id']}", headers=bearer(doctor), json={"items": items})
    assert edited.status_code == 200, edited.text
    body = edited.json()
    assert [i["medicine"] for i in body["items"]] == ["paracetamol", "cetirizine"]
    assert not [f for f in body["safety"] if f["severity"] == "blocking"], body["safety"]

    approved = client.post(f"/api/v1/prescriptions/{draft['id']}/approve", headers=bearer(doctor),
                           json={"notes": "Rest and fluids; come back if not better in 5 days."})
    assert approved.status_code == 200, approved.text
    a = approved.json()
    assert a["status"] == "approved" and a["signed"] and len(a["content_hash"]) == 64
    # Decided: no second decision.
    assert_problem(client.post(f"/api/v1/prescriptions/{draft['id']}/reject", headers=bearer(doctor),
                               json={"notes": "changed my mind"}), 409, "prescription-decided")
    # The patient was told, and now sees it.
    account = owner.execute("SELECT id FROM accounts WHERE email = %s", (PATIENT,)).fetchone()[0]
    assert owner.execute("SELECT count(*) FROM notifications WHERE account_id = %s AND kind = 'prescription.approved'",
                         (account,)).fetchone()[0] >= 1
    assert client.get(f"/api/v1/prescriptions/{draft['id']}", headers=bearer(patient)).json()["status"] == "approved"
    assert draft["id"] in [p["id"] for p in client.get("/api/v1/me/prescriptions", headers=bearer(patient)).json()]

    # Anyone with the QR code can verify it, without signing in.
    anonymous = httpx.Client(base_url=server.url)
    v = anonymous.get(f"/api/v1/prescriptions/verify/{draft['id']}").json()
    assert v["status"] == "valid" and v["content_hash"] == a["content_hash"] and v["prescriber"]
    # Change a stored dose behind the API's back: tampered. Put it back: valid again.
    owner.execute("UPDATE prescriptions SET signed_content = jsonb_set(signed_content, '{items,0,dose}', '4000') "
                  "WHERE id = %s", (draft["id"],))
    assert anonymous.get(f"/api/v1/prescriptions/verify/{draft['id']}").json()["status"] == "tampered"
    owner.execute("UPDATE prescriptions SET signed_content = jsonb_set(signed_content, '{items,0,dose}', '1000.0') "
                  "WHERE id = %s", (draft["id"],))
    assert anonymous.get(f"/api/v1/prescriptions/verify/{draft['id']}").json()["status"] == "valid"
    # Forging the hash as well does not help: the signature is over the hash.
    owner.execute("UPDATE prescriptions SET content_hash = repeat('0', 64) WHERE id = %s", (draft["id"],))
    assert anonymous.get(f"/api/v1/prescriptions/verify/{draft['id']}").json()["status"] == "tampered"
    owner.execute("UPDATE prescriptions SET content_hash = %s WHERE id = %s", (a["content_hash"], draft["id"]))
    assert anonymous.get(f"/api/v1/prescriptions/verify/{draft['id']}").json()["status"] == "valid"
    # The doctor revokes it (with a reason): from now on it verifies as revoked.
    assert client.post(f"/api/v1/prescriptions/{draft['id']}/revoke", headers=bearer(patient),
                       json={"reason": "mine"}).status_code == 403
    r = client.post(f"/api/v1/prescriptions/{draft['id']}/revoke", headers=bearer(doctor),
                    json={"reason": "Wrong dose: reissued."})
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    # The patient never signed it: revoked, its medicines stay theirs to see only after signing.
    seen = client.get(f"/api/v1/prescriptions/{draft['id']}", headers=bearer(patient)).json()
    assert seen["status"] == "revoked" and seen["items"] == [] and seen["awaiting_patient_signature"]
    assert client.get(f"/api/v1/prescriptions/{draft['id']}/pdf", headers=bearer(patient)).status_code == 409
    # Every clinician read of it is in the read audit.
    assert owner.execute("SELECT count(*) FROM audit_reads WHERE record_type = 'prescription' AND record_id = %s",
                         (draft["id"],)).fetchone()[0] >= 1
    assert anonymous.get(f"/api/v1/prescriptions/verify/{draft['id']}").json()["status"] == "revoked"
    assert_problem(client.post(f"/api/v1/prescriptions/{draft['id']}/revoke", headers=bearer(doctor),
                               json={"reason": "again"}), 409, "prescription-not-approved")
    assert_problem(anonymous.get(f"/api/v1/prescriptions/verify/{uuid.uuid4()}"), 404, "prescription-not-found")
    # The private key is sealed at rest: the stored value is not a raw 32-byte key.
    sealed = owner.execute("SELECT sealed_private_key FROM prescriber_keys k JOIN prescriptions p "
                           "ON p.signer_key_id = k.id WHERE p.id = %s", (draft["id"],)).fetchone()[0]
    assert len(sealed) > 60


def test_a_blocking_flag_needs_an_override_reason(client, owner):
    doctor = login(client, DOCTOR)
    patient_id = demo_patient(owner)  # allergic to penicillin (the seeded visit)
    r = client.post(f"/api/v1/patients/{patient_id}/prescriptions", headers=bearer(doctor),
                    json={"items": [{"medicine": "amoxicillin", "dose": 500, "unit": "mg", "times_per_day": 3}],
                          "diagnosis": "Acute otitis media"})
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["source"] == "physician"
    assert any(f["rule"] == "allergy" and f["severity"] == "blocking" for f in p["safety"]), p["safety"]
    refused = client.post(f"/api/v1/prescriptions/{p['id']}/approve", headers=bearer(doctor), json={})
    problem = assert_problem(refused, 409, "override-required")
    assert "allergic to Penicillin" in problem["detail"]
    assert owner.execute("SELECT status FROM prescriptions WHERE id = %s", (p["id"],)).fetchone()[0] == "draft"
    ok = client.post(f"/api/v1/prescriptions/{p['id']}/approve", headers=bearer(doctor),
                     json={"override_reason": "Rash as a child was viral; tolerated amoxicillin in 2024."})
    assert ok.status_code == 200 and ok.json()["override_reason"].startswith("Rash as a child")


def test_a_rejection_needs_a_note_and_tells_the_patient(client, owner):
    doctor, patient, draft = _consultation_draft(client, owner)
    assert client.post(f"/api/v1/prescriptions/{draft['id']}/reject", headers=bearer(doctor),
                       json={"notes": ""}).status_code == 422
    r = client.post(f"/api/v1/prescriptions/{draft['id']}/reject", headers=bearer(doctor),
                    json={"notes": "A cold needs no medicine beyond paracetamol you already have."})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    account = owner.execute("SELECT id FROM accounts WHERE email = %s", (PATIENT,)).fetchone()[0]
    assert owner.execute("SELECT count(*) FROM notifications WHERE account_id = %s AND kind = 'prescription.rejected'",
                         (account,)).fetchone()[0] >= 1
    seen = client.get(f"/api/v1/prescriptions/{draft['id']}", headers=bearer(patient)).json()
    assert seen["status"] == "rejected" and "paracetamol you already have" in seen["notes"]


def test_who_may_do_what(client, owner):
    doctor, patient, draft = _consultation_draft(client, owner)
    for who in ("receptionist@demo.carebase.local", "nurse@demo.carebase.local", PATIENT):
        token = login(client, who)
        assert client.get("/api/v1/prescriptions/queue", headers=bearer(token)).status_code == 403, who
        assert client.post(f"/api/v1/prescriptions/{draft['id']}/approve", headers=bearer(token),
                           json={}).status_code == 403, who
    for who in ("doctor@demo2.carebase.local", "patient@demo2.carebase.local"):
        assert client.get(f"/api/v1/prescriptions/{draft['id']}",
                          headers=bearer(login(client, who))).status_code == 404, who
    # A draft's medicines must be real lines; bad ones are refused and nothing changes.
    before = client.get(f"/api/v1/prescriptions/{draft['id']}", headers=bearer(doctor)).json()["items"]
    for bad in ({"items": []}, {"items": [{"medicine": ""}]}, {"items": [{"medicine": "x", "dose": -1}]},
                {"items": [{"medicine": "x", "unit": "kg"}]}):
        assert client.patch(f"/api/v1/prescriptions/{draft['id']}", headers=bearer(doctor),
                            json=bad).status_code == 422, bad
    assert client.get(f"/api/v1/prescriptions/{draft['id']}", headers=bearer(doctor)).json()["items"] == before


def _signature_png() -> str:
    """A signature pad's drawing: a small PNG with a stroke on it, as a data URL."""
    import base64
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (300, 100), "white")
    ImageDraw.Draw(image).line([(10, 80), (80, 20), (150, 70), (290, 30)], fill="black", width=3)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def test_the_patient_signs_before_seeing_the_final_prescription_and_its_pdf(client, owner, server):
    doctor, patient, draft = _consultation_draft(client, owner)
    pid = draft["id"]
    # Before approval there is nothing to sign or print.
    assert client.post(f"/api/v1/prescriptions/{pid}/patient-signature", headers=bearer(patient),
                       json={"image": _signature_png()}).status_code == 404
    assert client.post(f"/api/v1/prescriptions/{pid}/approve", headers=bearer(doctor),
                       json={"notes": "Paracetamol as needed."}).status_code == 200
    # Approved, not yet signed by the patient: they see that it exists, not what it says.
    seen = client.get(f"/api/v1/prescriptions/{pid}", headers=bearer(patient)).json()
    assert seen["status"] == "approved" and seen["awaiting_patient_signature"] and seen["items"] == []
    assert_problem(client.get(f"/api/v1/prescriptions/{pid}/pdf", headers=bearer(patient)), 409,
                   "patient-signature-required")
    # Not a PNG, a PNG that claims a huge picture, or not theirs: refused, nothing stored.
    assert client.post(f"/api/v1/prescriptions/{pid}/patient-signature", headers=bearer(patient),
                       json={"image": "data:image/png;base64,aGVsbG8="}).status_code == 422
    import base64

    png = bytearray(base64.b64decode(_signature_png().split(",", 1)[1]))
    png[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR width and height
    bomb = "data:image/png;base64," + base64.b64encode(bytes(png)).decode()
    assert client.post(f"/api/v1/prescriptions/{pid}/patient-signature", headers=bearer(patient),
                       json={"image": bomb}).status_code == 422
    other = login(client, "patient@demo2.carebase.local")
    assert client.post(f"/api/v1/prescriptions/{pid}/patient-signature", headers=bearer(other),
                       json={"image": _signature_png()}).status_code == 404
    assert owner.execute("SELECT patient_signed_at FROM prescriptions WHERE id = %s", (pid,)).fetchone()[0] is None

    signed = client.post(f"/api/v1/prescriptions/{pid}/patient-signature", headers=bearer(patient),
                         json={"image": _signature_png()})
    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert body["patient_signed_at"] and not body["awaiting_patient_signature"] and body["items"]
    stored = owner.execute("SELECT patient_signature_sha256, patient_signature_ip, patient_signature_key "
                           "FROM prescriptions WHERE id = %s", (pid,)).fetchone()
    assert len(stored[0]) == 64 and stored[1] == "127.0.0.1" and stored[2].endswith("patient-signature.png")
    # The consent is in the append-only log, its address sealed as personal data.
    event = owner.execute("SELECT data FROM events WHERE stream_id = %s AND type = 'prescription.patient_signed'",
                          (pid,)).fetchone()
    assert event and event[0]["signature_sha256"] == stored[0] and "sealed" in event[0]["_phi"]
    assert "127.0.0.1" not in json.dumps(event[0])
    # Signing again keeps the first signature.
    again = client.post(f"/api/v1/prescriptions/{pid}/patient-signature", headers=bearer(patient),
                        json={"image": _signature_png()})
    assert again.json()["patient_signed_at"] == body["patient_signed_at"]

    # The PDF: for the patient now, and for the doctor; it carries the QR code of the verify link.
    r = client.get(f"/api/v1/prescriptions/{pid}/pdf", headers=bearer(patient))
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF") and r.headers["content-disposition"].startswith("attachment")
    text = pdf_text(r.content)
    assert "Prescription (Rx)" in text and "paracetamol" in text and body["content_hash"] in text
    assert f"/api/v1/prescriptions/verify/{pid}" in text
    assert _pdf_images(r.content) >= 2  # the QR code and the patient's signature
    assert client.get(f"/api/v1/prescriptions/{pid}/pdf", headers=bearer(doctor)).status_code == 200
    assert client.get(f"/api/v1/prescriptions/{pid}/pdf", headers=bearer(other)).status_code == 404



def _pdf_images(data: bytes) -> int:
    return data.count(b"/Subtype /Image")


@pytest.mark.parametrize("line", [
    {"medicine": "paracetamol", "dose": float("nan")}, {"medicine": "paracetamol", "dose": float("inf")},
    {"medicine": "paracetamol", "dose": -500}, {"medicine": "paracetamol", "times_per_day": 0},
    {"medicine": "paracetamol", "duration_days": 1.5}, {"medicine": "paracetamol", "unit": "kg"},
    {"medicine": "x" * 201},
])
def test_every_door_checks_the_lines(backend, owner, line):
    """The portal's form reaches the service without the API's schema: the service checks too."""
    from carebase.platform.authz import Principal
    from carebase.platform.errors import DomainError
    from carebase.prescribing import service
    from tests.conftest import run_db, tenant_id_of

    tenant = tenant_id_of(owner, "demo")
    doctor = owner.execute("SELECT id FROM accounts WHERE email = %s", (DOCTOR,)).fetchone()[0]
    principal = Principal.of(doctor, tenant, ["doctor"])
    with pytest.raises(DomainError) as refused:
        run_db(backend, lambda s: service.write(s, principal, demo_patient(owner), items=[line]), owner=False,
               tenant_id=tenant, account_id=doctor)
    assert refused.value.status == 422
