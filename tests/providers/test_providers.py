"""The provider directory over real HTTP: NPI check digit, create/read/correct with ETags,
verification by administrators only, search filters and pagination, tenant isolation, bad input."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carebase.providers.codes import make_npi, npi_check_digit, npi_problem
from tests.conftest import assert_problem, bearer, carebase_cli, login, new_staff

API = "/api/v1/providers"
ADMIN = "admin@demo.carebase.local"


def fresh_npi() -> str:
    return make_npi(f"{uuid.uuid4().int % 10**9:09d}")


def body(**over) -> dict:
    b = {"npi": fresh_npi(), "given_name": "Priya", "family_name": "Sharma", "specialty": "Cardiology",
         "country": "IN", "city": "Pune", "languages": ["en", "mr"]}
    b.update(over)
    return b


def create(client, token, **over) -> dict:
    r = client.post(API, json=body(**over), headers=bearer(token))
    assert r.status_code == 201, r.text
    return r.json()


def count_providers(owner) -> int:
    return owner.execute("SELECT count(*) FROM providers").fetchone()[0]


def account_id(owner, email: str) -> uuid.UUID:
    return owner.execute("SELECT id FROM accounts WHERE email = %s", (email,)).fetchone()[0]


@pytest.fixture
def admin(client) -> dict:
    return login(client, ADMIN)


# -- the NPI check digit -------------------------------------------------------------------------


def test_npi_check_digit_accepts_known_valid_numbers_and_rejects_typos():
    # CMS' worked example: 123456789 -> check digit 3 (Luhn over 80840123456789).
    assert npi_check_digit("123456789") == 3
    assert npi_problem("1234567893") is None
    assert "should be 3" in npi_problem("1234567890")
    for bad in ("123456789", "12345678931", "12345678a3", "", "１２３４５６７８９３"):
        assert npi_problem(bad) == "An NPI is exactly 10 digits.", bad


@given(st.from_regex(r"[0-9]{9}", fullmatch=True), st.integers(0, 9), st.integers(1, 9))
def test_every_single_digit_typo_in_an_npi_is_caught(first_nine, position, delta):
    npi = make_npi(first_nine)
    assert npi_problem(npi) is None
    typo = npi[:position] + str((int(npi[position]) + delta) % 10) + npi[position + 1:]
    assert npi_problem(typo) is not None


def test_an_invalid_npi_is_a_422_naming_the_problem_and_writes_nothing(client, owner, admin):
    before = count_providers(owner)
    r = client.post(API, json=body(npi="1234567890"), headers=bearer(admin))
    problem = assert_problem(r, 422, "validation-failed")
    assert "check digit" in problem["detail"] and "npi" in problem["detail"]
    assert any("npi" in e["loc"] for e in problem["errors"])
    r = client.post(API, json=body(npi="12345"), headers=bearer(admin))
    assert_problem(r, 422, "validation-failed")
    assert count_providers(owner) == before


# -- create, read, correct -----------------------------------------------------------------------


def test_create_read_and_correct_with_etags(client, admin):
    npi = fresh_npi()
    r = client.post(API, headers=bearer(admin), json=body(
        npi=npi, license_number="MMC-123", sub_specialty="Electrophysiology", practice_name="Pune Heart",
        state_province="Maharashtra", email="priya@pune-heart.test", phone="+912012345678", languages=["EN", "hi"],
        education=[{"institution": "BJ Medical College", "degree": "MBBS", "year": 2008}],
        certifications=[{"name": "Fellowship in EP", "issuer": "CSI", "year": 2015}], country="in"))
    assert r.status_code == 201, r.text
    p = r.json()
    assert r.headers["ETag"] == 'W/"1"' and r.headers["Location"] == f"{API}/{p['id']}"
    assert p["npi"] == npi and p["country"] == "IN" and p["languages"] == ["en", "hi"]
    assert p["accepts_new_patients"] is True and p["telemedicine_enabled"] is False  # the defaults
    assert p["verified"] is False and p["verified_by"] is None and p["verified_at"] is None
    assert p["education"] == [{"institution": "BJ Medical College", "degree": "MBBS", "year": 2008}]

    r = client.get(f"{API}/{p['id']}", headers=bearer(admin))
    assert r.status_code == 200 and r.json() == p and r.headers["ETag"] == 'W/"1"'

    r = client.patch(f"{API}/{p['id']}", json={"city": "Mumbai", "telemedicine_enabled": True, "sub_specialty": None},
                     headers={**bearer(admin), "If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == 'W/"2"'
    assert r.json()["city"] == "Mumbai" and r.json()["telemedicine_enabled"] is True
    assert r.json()["sub_specialty"] is None and r.json()["practice_name"] == "Pune Heart"

    # Someone else's edit in between: the stale ETag is refused and nothing changes.
    r = client.patch(f"{API}/{p['id']}", json={"city": "Nagpur"}, headers={**bearer(admin), "If-Match": 'W/"1"'})
    assert_problem(r, 409, "version-conflict")
    assert client.get(f"{API}/{p['id']}", headers=bearer(admin)).json()["city"] == "Mumbai"
    r = client.patch(f"{API}/{p['id']}", json={"city": "Nagpur"}, headers={**bearer(admin), "If-Match": "yesterday"})
    assert_problem(r, 422, "bad-if-match")
    # Required fields cannot be cleared.
    r = client.patch(f"{API}/{p['id']}", json={"family_name": None}, headers=bearer(admin))
    assert_problem(r, 422, "validation-failed")


def test_an_npi_is_unique_per_organization(client, admin):
    npi = fresh_npi()
    create(client, admin, npi=npi)
    r = client.post(API, json=body(npi=npi, given_name="Other"), headers=bearer(admin))
    assert_problem(r, 409, "npi-taken")
    other = create(client, admin)
    r = client.patch(f"{API}/{other['id']}", json={"npi": npi}, headers=bearer(admin))
    assert_problem(r, 409, "npi-taken")
    # Another clinic lists the same person under the same NPI: that is fine.
    r = client.post(API, json=body(npi=npi), headers=bearer(login(client, "admin@demo2.carebase.local")))
    assert r.status_code == 201, r.text


def test_only_administrators_add_and_correct_providers(client, admin):
    p = create(client, admin)
    for email in ("doctor@demo.carebase.local", "patient@demo.carebase.local", "receptionist@demo.carebase.local"):
        token = login(client, email)
        assert_problem(client.post(API, json=body(), headers=bearer(token)), 403, "forbidden")
        assert_problem(client.patch(f"{API}/{p['id']}", json={"city": "X"}, headers=bearer(token)), 403, "forbidden")
    assert client.get(f"{API}/{p['id']}", headers=bearer(admin)).json()["city"] == "Pune"


def test_every_member_can_search_and_read_the_directory(client, admin):
    p = create(client, admin)
    for email in ("doctor@demo.carebase.local", "patient@demo.carebase.local", "pharmacist@demo.carebase.local",
                  "lab@demo.carebase.local"):
        token = login(client, email)
        assert client.get(f"{API}/{p['id']}", headers=bearer(token)).status_code == 200, email
        r = client.get(API, params={"q": "Sharma"}, headers=bearer(token))
        assert r.status_code == 200 and r.json()["items"], email
    assert_problem(client.get(API), 401, "not-authenticated")


# -- verification ------------------------------------------------------------------------------


def test_only_an_admin_verifies_and_who_and_when_are_recorded(client, owner, admin):
    p = create(client, admin)
    for email in ("doctor@demo.carebase.local", "patient@demo.carebase.local"):
        r = client.post(f"{API}/{p['id']}/verify", headers=bearer(login(client, email)))
        assert_problem(r, 403, "forbidden")
    assert client.get(f"{API}/{p['id']}", headers=bearer(admin)).json()["verified"] is False

    started = datetime.now(UTC)
    r = client.post(f"{API}/{p['id']}/verify", headers=bearer(admin))
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["verified"] is True and v["verified_by"] == str(account_id(owner, ADMIN))
    verified_at = datetime.fromisoformat(v["verified_at"])
    assert verified_at.tzinfo is not None and started - timedelta(seconds=5) <= verified_at <= datetime.now(UTC)
    assert r.headers["ETag"] == 'W/"2"'
    # The event log says so too.
    ev = owner.execute("SELECT type, data, metadata FROM events WHERE stream_id = %s ORDER BY version",
                       (p["id"],)).fetchall()
    assert [e[0] for e in ev] == ["providers.registered", "providers.verified"]
    assert ev[1][1]["verified_by"] == v["verified_by"]

    # Verifying again changes nothing: the first verification stands.
    again = client.post(f"{API}/{p['id']}/verify", headers=bearer(admin)).json()
    assert again["verified_at"] == v["verified_at"] and again["version"] == 2


def test_verified_cannot_be_set_through_create_or_patch(client, owner, admin):
    before = count_providers(owner)
    for extra in ({"verified": True}, {"verified_by": str(uuid.uuid4())}, {"verified_at": "2020-01-01T00:00:00Z"}):
        r = client.post(API, json=body(**extra), headers=bearer(admin))
        problem = assert_problem(r, 422, "validation-failed")
        assert any(next(iter(extra)) in e["loc"] for e in problem["errors"])
    assert count_providers(owner) == before
    p = create(client, admin)
    for token in (admin, login(client, "doctor@demo.carebase.local")):
        r = client.patch(f"{API}/{p['id']}", json={"verified": True}, headers=bearer(token))
        assert r.status_code in (403, 422), r.text
    assert client.get(f"{API}/{p['id']}", headers=bearer(admin)).json()["verified"] is False


def test_changing_the_npi_or_licence_withdraws_the_verification(client, admin):
    p = create(client, admin, license_number="L-1")
    client.post(f"{API}/{p['id']}/verify", headers=bearer(admin))
    r = client.patch(f"{API}/{p['id']}", json={"city": "Nashik"}, headers=bearer(admin))
    assert r.json()["verified"] is True  # other corrections keep it
    r = client.patch(f"{API}/{p['id']}", json={"license_number": "L-2"}, headers=bearer(admin))
    assert r.status_code == 200
    assert r.json()["verified"] is False and r.json()["verified_by"] is None and r.json()["verified_at"] is None


# -- linking a login -------------------------------------------------------------------------


def test_a_provider_links_to_a_staff_login_of_the_clinic_once(client, owner, admin):
    staff = new_staff(client, owner, "doctor")
    doctor_account = account_id(owner, staff["email"])
    p = create(client, admin, account_id=str(doctor_account))
    assert p["account_id"] == str(doctor_account)
    assert_problem(client.post(API, json=body(account_id=str(doctor_account)), headers=bearer(admin)),
                   409, "account-linked")
    # Not a member here (demo2's doctor), or only a patient here: refused.
    for email in ("doctor@demo2.carebase.local", "patient@demo.carebase.local"):
        r = client.post(API, json=body(account_id=str(account_id(owner, email))), headers=bearer(admin))
        assert_problem(r, 422, "account-not-member")
    r = client.post(API, json=body(account_id=str(uuid.uuid4())), headers=bearer(admin))
    assert_problem(r, 422, "account-not-member")


# -- search and pagination -------------------------------------------------------------------


@pytest.fixture
def town(client, admin) -> tuple[str, dict[str, dict]]:
    """A made-up city with its own providers, so filters can be checked exactly."""
    city = "Town" + uuid.uuid4().hex[:8]
    made = {
        "a": create(client, admin, city=city, family_name="Agarwal", given_name="Anil", specialty="Cardiology",
                    languages=["en", "hi"], telemedicine_enabled=True),
        "b": create(client, admin, city=city, family_name="Bose", given_name="Bina", specialty="Pediatrics",
                    sub_specialty="Neonatology", languages=["bn", "en"], accepts_new_patients=False),
        "c": create(client, admin, city=city, family_name="Chandra", given_name="Chitra", specialty="cardiology",
                    languages=["ta"], telemedicine_enabled=True, accepts_new_patients=False),
        "d": create(client, admin, city=city, family_name="Das", given_name="Dev", specialty="Dermatology",
                    languages=["hi"]),
    }
    client.post(f"{API}/{made['d']['id']}/verify", headers=bearer(admin))
    return city, made


def _search(client, token, **params) -> set[str]:
    r = client.get(API, params=params, headers=bearer(token))
    assert r.status_code == 200, r.text
    return {p["family_name"] for p in r.json()["items"]}


def test_each_search_filter_works_and_they_combine(client, admin, town):
    city, _ = town
    patient = login(client, "patient@demo.carebase.local")
    assert _search(client, patient, city=city) == {"Agarwal", "Bose", "Chandra", "Das"}
    assert _search(client, patient, city=city.upper()) == {"Agarwal", "Bose", "Chandra", "Das"}
    assert _search(client, patient, city=city, specialty="CARDIOLOGY") == {"Agarwal", "Chandra"}
    assert _search(client, patient, city=city, specialty="Neonatology") == {"Bose"}  # sub-specialty too
    assert _search(client, patient, city=city, language="hi") == {"Agarwal", "Das"}
    assert _search(client, patient, city=city, language="EN") == {"Agarwal", "Bose"}
    assert _search(client, patient, city=city, telemedicine_enabled="true") == {"Agarwal", "Chandra"}
    assert _search(client, patient, city=city, telemedicine_enabled="false") == {"Bose", "Das"}
    assert _search(client, patient, city=city, accepts_new_patients="true") == {"Agarwal", "Das"}
    assert _search(client, patient, city=city, verified="true") == {"Das"}
    assert _search(client, patient, city=city, q="ch") == {"Chandra"}
    assert _search(client, patient, city=city, q="Dev D") == {"Das"}  # full-name prefix
    assert _search(client, patient, city=city, q="%") == set()  # a wildcard is a character here
    # Combined: AND.
    assert _search(client, patient, city=city, specialty="cardiology", telemedicine_enabled="true",
                   accepts_new_patients="true") == {"Agarwal"}
    assert _search(client, patient, city=city, language="hi", accepts_new_patients="true", verified="true") == {"Das"}
    assert _search(client, patient, city=city, language="ta", accepts_new_patients="true") == set()
    # Bad filter values are 422, not 500.
    assert_problem(client.get(API, params={"language": "english"}, headers=bearer(patient)), 422, "validation-failed")
    assert_problem(client.get(API, params={"telemedicine_enabled": "maybe"}, headers=bearer(patient)),
                   422, "validation-failed")
    assert_problem(client.get(API, params={"limit": 0}, headers=bearer(patient)), 422, "validation-failed")


def test_pages_return_every_provider_exactly_once_in_a_stable_order(client, admin):
    city = "Paged" + uuid.uuid4().hex[:8]
    names = ["Zeta", "alpha", "Mu", "Beta", "beta", "Omega", "Mu", "Mu"]  # ties broken by id
    ids = {create(client, admin, city=city, family_name=n, given_name="Same")["id"] for n in names}
    seen, pages = [], 0
    url, params = API, {"city": city, "limit": 3}
    while url:
        r = client.get(url, params=params, headers=bearer(admin))
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 3
        seen += [(p["family_name"].lower(), p["id"]) for p in page["items"]]
        pages += 1
        url, params = page["next"], None
        assert (page["next"] is None) == (page["next_cursor"] is None)
        if url:
            assert f"city={city}" in url and "limit=3" in url  # the filters carry over
    assert pages == 3
    assert [i for _, i in seen] and len(seen) == len(ids) and {i for _, i in seen} == ids
    assert [n for n, _ in seen] == sorted(n for n, _ in seen)
    # Same query again: same order.
    again = client.get(API, params={"city": city, "limit": 100}, headers=bearer(admin)).json()
    assert [p["id"] for p in again["items"]] == [i for _, i in seen] and again["next"] is None


def test_a_forged_cursor_is_a_422(client, admin):
    for cursor in ("garbage!", "bm90IGpzb24", "WzEsMiwzXQ"):  # junk, "not json", [1,2,3]
        assert_problem(client.get(API, params={"cursor": cursor}, headers=bearer(admin)), 422, "bad-cursor")


# -- tenants -----------------------------------------------------------------------------------


def test_another_clinic_never_sees_or_touches_the_directory(client, owner, admin):
    p = create(client, admin, family_name="Isolated" + uuid.uuid4().hex[:6])
    other = login(client, "admin@demo2.carebase.local")
    r = client.get(API, params={"limit": 200}, headers=bearer(other))
    assert r.status_code == 200
    assert p["id"] not in r.text and p["npi"] not in r.text
    assert_problem(client.get(f"{API}/{p['id']}", headers=bearer(other)), 404, "provider-not-found")
    assert_problem(client.patch(f"{API}/{p['id']}", json={"city": "X"}, headers=bearer(other)),
                   404, "provider-not-found")
    assert_problem(client.post(f"{API}/{p['id']}/verify", headers=bearer(other)), 404, "provider-not-found")
    assert client.get(f"{API}/{p['id']}", headers=bearer(admin)).json() == p
    # demo2's own directory has its own seeded entry.
    names = {x["family_name"] for x in client.get(API, headers=bearer(other)).json()["items"]}
    assert "Fischer" in names and "Iyer" not in names


# -- bad input ---------------------------------------------------------------------------------


BAD_BODIES = [
    ("npi", {"npi": 1234567893}),
    ("country", {"country": "XX"}),
    ("country", {"country": "India"}),
    ("languages", {"languages": ["english"]}),
    ("languages", {"languages": ["xx"]}),
    ("languages", {"languages": "en"}),
    ("education", {"education": [{"institution": "X", "degree": "MD"}]}),
    ("education", {"education": [{"institution": "X", "degree": "MD", "year": 1700}]}),
    ("certifications", {"certifications": [{"name": "X", "issuer": "Y", "year": "soon"}]}),
    ("email", {"email": "not an email"}),
    ("phone", {"phone": "12345"}),
    ("given_name", {"given_name": ""}),
    ("specialty", {"specialty": "x" * 101}),
    ("accepts_new_patients", {"accepts_new_patients": "perhaps"}),
    ("account_id", {"account_id": "not-a-uuid"}),
]


@pytest.mark.parametrize("field,bad", BAD_BODIES, ids=[f"{f}={v!r}"[:40] for f, v in BAD_BODIES])
def test_bad_input_is_a_422_naming_the_field_and_writes_nothing(client, owner, admin, field, bad):
    before = owner.execute("SELECT count(*) FROM providers").fetchone()[0], \
        owner.execute("SELECT max(position) FROM events").fetchone()[0]
    r = client.post(API, json=body(**bad), headers=bearer(admin))
    problem = assert_problem(r, 422, "validation-failed")
    assert any(field in e["loc"] for e in problem["errors"]), problem
    existing = create(client, admin)
    after_create = owner.execute("SELECT max(position) FROM events").fetchone()[0]
    r = client.patch(f"{API}/{existing['id']}", json=bad, headers=bearer(admin))
    assert_problem(r, 422, "validation-failed")
    assert owner.execute("SELECT max(position) FROM events").fetchone()[0] == after_create
    assert owner.execute("SELECT count(*) FROM providers").fetchone()[0] == before[0] + 1


def test_a_future_year_is_refused_by_the_service(client, admin):
    next_year = datetime.now(UTC).year + 1
    r = client.post(API, json=body(certifications=[{"name": "X", "issuer": "Y", "year": next_year}]),
                    headers=bearer(admin))
    assert_problem(r, 422, "future-year")


def test_malformed_json_and_unknown_ids_are_4xx_not_500(client, admin):
    r = client.post(API, content=b'{"npi": ', headers={**bearer(admin), "Content-Type": "application/json"})
    assert_problem(r, 422, "validation-failed")
    assert_problem(client.get(f"{API}/not-a-uuid", headers=bearer(admin)), 422, "validation-failed")
    assert_problem(client.get(f"{API}/{uuid.uuid4()}", headers=bearer(admin)), 404, "provider-not-found")
    assert_problem(client.post(f"{API}/{uuid.uuid4()}/verify", headers=bearer(admin)), 404, "provider-not-found")


# -- demo data and rebuilds --------------------------------------------------------------------


def test_the_demo_clinics_have_providers_and_the_demo_doctor_is_one_of_them(client, owner, backend):
    from carebase.cli import _seed

    admin = login(client, ADMIN)
    npis = owner.execute("SELECT p.npi FROM providers p JOIN tenants t ON t.id = p.tenant_id "
                         "WHERE t.slug = 'demo' AND p.npi = ANY(%s)",
                         (["1047293117", "1152087346", "1269345025", "1380462170"],)).fetchall()
    assert len(npis) == 4 and all(npi_problem(n) is None for (n,) in npis)
    doctor = account_id(owner, "doctor@demo.carebase.local")
    linked = owner.execute("SELECT family_name, verified FROM providers WHERE account_id = %s", (doctor,)).fetchall()
    assert linked == [("Iyer", True)]
    r = client.get(API, params={"q": "Iyer"}, headers=bearer(admin))
    assert r.json()["items"][0]["account_id"] == str(doctor)
    assert owner.execute("SELECT count(*) FROM providers p JOIN tenants t ON t.id = p.tenant_id "
                         "WHERE t.slug = 'demo2' AND p.npi = '1493576080'").fetchone()[0] == 1
    # Seeding again adds nothing.
    assert not [c for c in _seed(backend.settings) if c.startswith("provider")]


def test_rebuilding_projections_reproduces_the_directory(client, owner, backend, admin):
    p = create(client, admin, license_number="R-1")
    client.post(f"{API}/{p['id']}/verify", headers=bearer(admin))
    client.patch(f"{API}/{p['id']}", json={"license_number": "R-2", "languages": ["en"]}, headers=bearer(admin))
    before = owner.execute("SELECT * FROM providers ORDER BY id").fetchall()
    r = carebase_cli(backend, "rebuild-projections")
    assert r.returncode == 0, r.stderr
    assert owner.execute("SELECT * FROM providers ORDER BY id").fetchall() == before

