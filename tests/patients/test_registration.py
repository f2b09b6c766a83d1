"""Patient registration with the seed's fields, global ids, duplicate detection, search, hashed
government ids, e-mail verification, merges and the patient's own profile and consents."""

from __future__ import annotations

import random
import re
import string

from carebase.patients.service import _luhn_digit
from tests.conftest import assert_problem, bearer, login, outbox, unique_email


def _word(n: int = 8) -> str:
    return "".join(random.choices(string.ascii_lowercase, k=n))


def _phone() -> str:
    return "+9198" + "".join(random.choices(string.digits, k=8))


def _register(client, token, expect: int = 201, **fields) -> dict:
    body = {"given_name": "Zoë", "family_name": "Ö" + _word().capitalize(), "birth_date": "1990-05-06"}
    body.update(fields)
    r = client.post("/api/v1/patients", json=body, headers=bearer(token))
    assert r.status_code == expect, r.text
    return r.json()


def _count(owner) -> int:
    return owner.execute("SELECT count(*) FROM patients").fetchone()[0]


def test_registration_keeps_the_seed_fields_and_a_collision_free_global_id(client, owner):
    token = login(client, "receptionist@demo.carebase.local")
    p = _register(client, token, gender="F", phone=_phone(), email=unique_email("pt"), country="IN",
                  timezone="Asia/Kolkata", preferred_language="hi",
                  emergency_contact={"name": "Vikram", "relationship": "spouse", "phone": _phone()},
                  consents={"gdpr": True, "hipaa": True, "data_sharing": False})
    m = re.fullmatch(r"WXQ-IN-(\d{8})(\d)", p["global_id"])
    assert m and _luhn_digit(m.group(1)) == m.group(2)
    assert p["gender"] == "F" and p["country"] == "IN" and p["timezone"] == "Asia/Kolkata"
    assert p["preferred_language"] == "hi" and p["emergency_contact"]["relationship"] == "spouse"
    assert p["consents"]["gdpr"]["given"] and p["consents"]["gdpr"]["given_at"]
    assert p["consents"]["data_sharing"]["given"] is False and p["consents"]["data_sharing"]["given_at"] is None
    assert p["email_verified"] is False
    # Another tenant's registration draws from the same sequence: never the same id.
    other = _register(client, login(client, "receptionist@demo2.carebase.local"), country="DE")
    assert other["global_id"].startswith("WXQ-DE-") and other["global_id"] != p["global_id"]


def test_government_ids_are_kept_as_a_keyed_hash_and_last_four_only(client, owner):
    token = login(client, "receptionist@demo.carebase.local")
    number = "".join(random.choices(string.digits, k=12))
    p = _register(client, token, government_id={"system": "IN-AADHAAR", "value": number})
    assert p["government_id"] == {"system": "IN-AADHAAR", "last4": number[-4:]}
    row = owner.execute("SELECT government_id_hash FROM patients WHERE id = %s", (p["id"],)).fetchone()
    assert row[0] and number not in row[0]
    assert owner.execute("SELECT count(*) FROM events WHERE data::text LIKE %s OR metadata::text LIKE %s",
                         (f"%{number}%", f"%{number}%")).fetchone()[0] == 0
    # Found by the full number (spaces and dashes ignored), not by a wrong one.
    spaced = f"{number[:4]} {number[4:8]}-{number[8:]}"
    found = client.get("/api/v1/patients", params={"government_id_system": "IN-AADHAAR",
                                                    "government_id_value": spaced}, headers=bearer(token)).json()
    assert [x["id"] for x in found] == [p["id"]]
    wrong = client.get("/api/v1/patients", params={"government_id_system": "IN-AADHAAR",
                                                    "government_id_value": "0000" + number[4:]}, headers=bearer(token))
    assert wrong.json() == []
    assert_problem(client.get("/api/v1/patients", params={"government_id_system": "IN-AADHAAR"},
                              headers=bearer(token)), 422, "incomplete-government-id")


def test_possible_duplicates_are_offered_not_silently_twinned(client, owner):
    token = login(client, "receptionist@demo.carebase.local")
    family = "Vérma" + _word(5)
    phone = _phone()
    first = _register(client, token, given_name="Ásha", family_name=family, birth_date="1987-04-12", phone=phone)
    before = _count(owner)
    # Same person typed without accents and in another case: offered as a candidate, nothing written.
    r = client.post("/api/v1/patients", headers=bearer(token),
                    json={"given_name": "ASHA", "family_name": family.replace("é", "e").upper(),
                          "birth_date": "1987-04-12"})
    problem = assert_problem(r, 409, "possible-duplicates")
    assert [c["id"] for c in problem["candidates"]] == [first["id"]]
    assert problem["candidates"][0]["matched_on"] == ["name+birth_date"]
    assert _count(owner) == before
    # The refusal showed a patient, and that read is audited all the same.
    assert owner.execute("SELECT count(*) FROM audit_reads WHERE patient_id = %s AND purpose = 'operations'",
                         (first["id"],)).fetchone()[0] >= 1
    # Same phone, different person: also a candidate.
    r = client.post("/api/v1/patients", headers=bearer(token),
                    json={"given_name": "Other", "family_name": _word(), "birth_date": "2001-01-01", "phone": phone})
    assert assert_problem(r, 409, "possible-duplicates")["candidates"][0]["matched_on"] == ["phone"]
    # After checking, the receptionist may still register a genuinely different person.
    twin = _register(client, token, given_name="Other", family_name=_word(), birth_date="2001-01-01", phone=phone,
                     allow_duplicate=True)
    assert twin["id"] != first["id"]


def test_search_by_name_prefix_ignores_accents_and_case(client):
    token = login(client, "doctor@demo.carebase.local")
    family = "Ñúñez" + _word(4)
    p = _register(client, login(client, "receptionist@demo.carebase.local"), given_name="Zoë", family_name=family,
                  phone=_phone(), email=unique_email("zoe"), birth_date="1975-03-02")

    def ids(**params):
        r = client.get("/api/v1/patients", params=params, headers=bearer(token))
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()]

    assert p["id"] in ids(q="zoe " + family[:6].lower().replace("ñ", "n").replace("ú", "u"))
    assert p["id"] in ids(q="NUNE")  # a prefix of the family name, accents dropped
    assert p["id"] not in ids(q="zoex")
    assert ids(q=p["phone"]) == [p["id"]]
    assert ids(q=p["email"].upper()) == [p["id"]]
    assert ids(q=p["global_id"].lower()) == [p["id"]]
    assert ids(q=p["id"]) == [p["id"]]
    assert p["id"] in ids(q="1975-03-02")
    assert p["id"] in ids(q="zoe", birth_date="1975-03-02")
    assert p["id"] not in ids(q="zoe", birth_date="1975-03-03")
    assert_problem(client.get("/api/v1/patients", params={"q": "2023-02-30"}, headers=bearer(token)), 422, "bad-date")


def test_email_verification_link_confirms_once(client, owner):
    token = login(client, "receptionist@demo.carebase.local")
    email = unique_email("verify")
    p = _register(client, token, email=email)
    body = outbox(owner, email)[-1][2]
    assert "/verify-email?token=" in body
    code = body.split("Or use this code: ")[1].split()[0]
    assert client.post("/api/v1/patient-email-verifications", json={"token": code}).status_code == 204
    assert client.get(f"/api/v1/patients/{p['id']}", headers=bearer(token)).json()["email_verified"] is True
    assert_problem(client.post("/api/v1/patient-email-verifications", json={"token": code}), 422,
                   "bad-verification-token")
    assert_problem(client.post("/api/v1/patient-email-verifications", json={"token": "f" * 32 + ".nope-nope"}),
                   422, "bad-verification-token")
    # A new address must be verified again, with a new link.
    new_email = unique_email("verify2")
    r = client.patch(f"/api/v1/patients/{p['id']}", json={"email": new_email}, headers=bearer(token))
    assert r.status_code == 200 and r.json()["email_verified"] is False
    assert "/verify-email?token=" in outbox(owner, new_email)[-1][2]


def test_merge_redirects_the_merged_id_and_hides_it_from_search(client):
    token = login(client, "receptionist@demo.carebase.local")
    keep = _register(client, token)
    dup = _register(client, token, allow_duplicate=True, given_name=keep["given_name"],
                    family_name=keep["family_name"])
    r = client.post(f"/api/v1/patients/{dup['id']}/merge", json={"into": keep["id"]}, headers=bearer(token))
    assert r.status_code == 200 and r.json()["id"] == keep["id"]
    r = client.get(f"/api/v1/patients/{dup['id']}", headers=bearer(token), follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == f"/api/v1/patients/{keep['id']}"
    found = client.get("/api/v1/patients", params={"q": keep["family_name"]}, headers=bearer(token)).json()
    assert [x["id"] for x in found] == [keep["id"]]
    assert_problem(client.post(f"/api/v1/patients/{keep['id']}/merge", json={"into": keep["id"]},
                               headers=bearer(token)), 422, "merge-into-self")
    assert_problem(client.post(f"/api/v1/patients/{keep['id']}/merge", json={"into": dup["id"]},
                               headers=bearer(token)), 409, "patient-inactive")
    assert_problem(client.patch(f"/api/v1/patients/{dup['id']}", json={"phone": _phone()}, headers=bearer(token)),
                   409, "patient-merged")


def test_patients_see_and_edit_their_own_profile_and_consents(client, owner):
    token = login(client, "patient@demo.carebase.local")
    me = client.get("/api/v1/me/patient", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json()["family_name"] == "Verma"
    phone = _phone()
    r = client.patch("/api/v1/me/patient", json={"phone": phone, "preferred_language": "en"},
                     headers={**bearer(token), "If-Match": me.headers["etag"]})
    assert r.status_code == 200 and r.json()["phone"] == phone
    # Names and birth date are corrected by staff, not by the patient.
    assert_problem(client.patch("/api/v1/me/patient", json={"family_name": "Other"}, headers=bearer(token)),
                   422, "validation-failed")
    r = client.put("/api/v1/me/patient/consents", json={"data_sharing": True}, headers=bearer(token))
    assert r.status_code == 200 and r.json()["consents"]["data_sharing"]["given"] is True
    given_at = r.json()["consents"]["data_sharing"]["given_at"]
    r = client.put("/api/v1/me/patient/consents", json={"data_sharing": False}, headers=bearer(token))
    c = r.json()["consents"]["data_sharing"]
    assert c["given"] is False and c["withdrawn_at"] >= given_at and c["given_at"] == given_at
    patient_id = me.json()["id"]
    assert owner.execute("SELECT count(*) FROM events WHERE stream_id = %s AND type = 'patients.consent_changed'",
                         (patient_id,)).fetchone()[0] >= 2
    # Staff have no patient record of their own.
    assert client.get("/api/v1/me/patient", headers=bearer(login(client, "doctor@demo.carebase.local"))).status_code == 403
    # And a patient cannot read somebody else's record.
    other = _register(client, login(client, "receptionist@demo.carebase.local"))
    assert_problem(client.get(f"/api/v1/patients/{other['id']}", headers=bearer(token)), 404, "patient-not-found")


def test_bad_registration_input_is_refused_and_writes_nothing(client, owner):
    token = login(client, "receptionist@demo.carebase.local")
    before = _count(owner)
    for bad in ({"timezone": "Mars/Olympus"}, {"country": "india"}, {"gender": "X"}, {"preferred_language": "english!"},
                {"government_id": {"system": "IN-AADHAAR", "value": "12<script>"}},
                {"emergency_contact": {"name": "x", "phone": "12345"}}, {"birth_date": "2999-01-01"},
                {"consents": {"gdpr": "maybe"}}):
        body = {"given_name": "Bad", "family_name": _word(), "birth_date": "1990-01-01", **bad}
        r = client.post("/api/v1/patients", json=body, headers=bearer(token))
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert _count(owner) == before


def test_erasure_scrubs_the_new_fields_too(client, owner):
    token = login(client, "admin@demo.carebase.local")
    p = _register(client, token, email=unique_email("erase"), emergency_contact={"name": "Kin", "phone": _phone()},
                  government_id={"system": "US-SSN", "value": "123-45-6789"})
    assert client.post(f"/api/v1/patients/{p['id']}/erase", headers=bearer(token)).status_code == 204
    row = owner.execute("SELECT given_name, email, emergency_contact_name, search_name, government_id_hash "
                        "FROM patients WHERE id = %s", (p["id"],)).fetchone()
    assert row == (None, None, None, None, None)
