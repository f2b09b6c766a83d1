"""Scheduling: weekly availability in local time across daylight-saving changes, exceptions,
free slots, booking without double booking under concurrency, the status workflow, reschedules
and patients booking for themselves."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx

from carebase.providers.codes import make_npi
from tests.conftest import assert_problem, bearer, login

ADMIN = "admin@demo.carebase.local"


class Clinic:
    """A fresh provider at a fresh Berlin location with its own patient, booked through the API."""

    def __init__(self, client: httpx.Client, windows=None, slot_minutes: int = 30):
        self.client = client
        self.token = login(client, ADMIN)
        h = bearer(self.token)
        self.location = client.post("/api/v1/locations", json={"name": f"Loc {uuid.uuid4().hex[:6]}",
                                                               "timezone": "Europe/Berlin"}, headers=h).json()["id"]
        r = client.post("/api/v1/providers", headers=h, json={
            "npi": make_npi(f"{uuid.uuid4().int % 10**9:09d}"), "given_name": "Sched", "family_name": "Uler",
            "specialty": "Family Medicine", "country": "DE"})
        assert r.status_code == 201, r.text
        self.provider = r.json()["id"]
        windows = windows or [{"weekday": d, "starts": "09:00", "ends": "12:00", "slot_minutes": slot_minutes}
                              for d in range(5)]
        r = client.put(f"/api/v1/providers/{self.provider}/availability", headers=h,
                       json={"location_id": self.location, "windows": windows})
        assert r.status_code == 200, r.text
        self.patient = self.new_patient()

    def new_patient(self) -> str:
        r = self.client.post("/api/v1/patients", headers=bearer(self.token), json={
            "given_name": "Slot", "family_name": uuid.uuid4().hex[:8], "birth_date": "1980-01-01",
            "allow_duplicate": True})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def slots(self, start: date, days: int = 7) -> list[str]:
        r = self.client.get(f"/api/v1/providers/{self.provider}/slots", headers=bearer(self.token),
                            params={"location_id": self.location, "start_date": start.isoformat(), "days": days})
        assert r.status_code == 200, r.text
        return [s["starts_at"] for s in r.json()]

    def book(self, starts_at: str, token=None, patient=None, **extra) -> httpx.Response:
        return self.client.post("/api/v1/appointments", headers=bearer(token or self.token), json={
            "patient_id": patient or self.patient, "provider_id": self.provider, "location_id": self.location,
            "starts_at": starts_at, **extra})

    def status(self, appointment_id: str, status: str, **extra) -> httpx.Response:
        return self.client.post(f"/api/v1/appointments/{appointment_id}/status", headers=bearer(self.token),
                                json={"status": status, **extra})


def _utc(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


def _next_monday() -> date:
    today = datetime.now(UTC).date() + timedelta(days=7)
    return today + timedelta(days=(7 - today.weekday()) % 7)


def test_slots_keep_local_wall_clock_time_across_a_daylight_saving_change(client):
    c = Clinic(client, windows=[{"weekday": 0, "starts": "09:00", "ends": "10:00", "slot_minutes": 30}])
    # Berlin moves to summer time on Sunday 28 March 2027: 09:00 is 08:00 UTC before, 07:00 UTC after.
    got = [_utc(s) for s in c.slots(date(2027, 3, 22), days=14)]
    assert got == [datetime(2027, 3, 22, 8, 0, tzinfo=UTC), datetime(2027, 3, 22, 8, 30, tzinfo=UTC),
                   datetime(2027, 3, 29, 7, 0, tzinfo=UTC), datetime(2027, 3, 29, 7, 30, tzinfo=UTC)]


def test_a_window_in_the_skipped_hour_offers_no_impossible_slot(client):
    # 02:00-03:00 on the night clocks jump from 02:00 to 03:00 does not exist in Berlin.
    c = Clinic(client, windows=[{"weekday": 6, "starts": "01:00", "ends": "04:00", "slot_minutes": 60}])
    got = [_utc(s) for s in c.slots(date(2027, 3, 28), days=1)]
    assert got == [datetime(2027, 3, 28, 0, 0, tzinfo=UTC), datetime(2027, 3, 28, 1, 0, tzinfo=UTC)]


def test_exceptions_and_bookings_take_slots_away_and_cancelling_gives_them_back(client):
    c = Clinic(client)
    monday = _next_monday()
    first_day = [s for s in c.slots(monday, 1)]
    assert len(first_day) == 6  # 09:00-12:00 in 30-minute slots
    r = c.book(first_day[0], type="office_visit")
    assert r.status_code == 201, r.text
    appointment = r.json()
    assert appointment["status"] == "scheduled" and "confirmed" in appointment["allowed_next"]
    assert first_day[0] not in c.slots(monday, 1)
    r = client.post(f"/api/v1/providers/{c.provider}/availability-exceptions", headers=bearer(c.token), json={
        "starts_at": first_day[3], "ends_at": first_day[5], "reason": "Training"})
    assert r.status_code == 201, r.text
    assert c.slots(monday, 1) == [first_day[1], first_day[2], first_day[5]]
    assert_problem(c.book(first_day[3]), 409, "slot-taken")  # the provider is away
    assert_problem(c.status(appointment["id"], "cancelled"), 422, "reason-required")
    assert c.status(appointment["id"], "cancelled", reason="Patient is travelling").status_code == 200
    assert first_day[0] in c.slots(monday, 1)
    exception_id = r.json()["id"]
    assert client.delete(f"/api/v1/providers/{c.provider}/availability-exceptions/{exception_id}",
                         headers=bearer(c.token)).status_code == 204
    assert len(c.slots(monday, 1)) == 6


def test_slots_for_a_visit_type_fit_that_visit(client):
    # 15-minute grid 09:00-10:00; a 30-minute office visit fits at 09:00, 09:15 and 09:30, not 09:45,
    # and not where it would run into a booking.
    c = Clinic(client, windows=[{"weekday": d, "starts": "09:00", "ends": "10:00", "slot_minutes": 15}
                                for d in range(5)])
    monday = _next_monday()
    grid = c.slots(monday, 1)
    assert len(grid) == 4
    h = bearer(c.token)

    def fitting(kind: str) -> list[dict]:
        r = client.get(f"/api/v1/providers/{c.provider}/slots", headers=h, params={
            "location_id": c.location, "start_date": monday.isoformat(), "days": 1, "type": kind})
        assert r.status_code == 200, r.text
        return r.json()

    office = fitting("office_visit")
    assert [s["starts_at"] for s in office] == grid[:3]
    assert all(_utc(s["ends_at"]) - _utc(s["starts_at"]) == timedelta(minutes=30) for s in office)
    assert c.book(grid[3], type="follow_up").status_code == 201  # 09:45-10:00
    assert [s["starts_at"] for s in fitting("office_visit")] == grid[:2]  # 09:30 would overlap it
    assert [s["starts_at"] for s in fitting("follow_up")] == grid[:3]
    assert c.book(fitting("office_visit")[-1]["starts_at"], type="office_visit").status_code == 201
    assert_problem(client.get(f"/api/v1/providers/{c.provider}/slots", headers=h, params={
        "location_id": c.location, "start_date": monday.isoformat(), "type": "house_call"}), 422, "validation-failed")


def test_fifty_concurrent_bookings_of_one_slot_exactly_one_wins(client, server, owner):
    c = Clinic(client)
    slot = c.slots(_next_monday(), 1)[2]
    patients = [c.new_patient() for _ in range(50)]
    results: list[httpx.Response] = []
    barrier = threading.Barrier(50)

    def attempt(patient: str):
        with httpx.Client(base_url=server.url, timeout=60) as cl:
            barrier.wait()
            results.append(cl.post("/api/v1/appointments", headers=bearer(c.token), json={
                "patient_id": patient, "provider_id": c.provider, "location_id": c.location, "starts_at": slot,
                "type": "follow_up"}))

    threads = [threading.Thread(target=attempt, args=(p,)) for p in patients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [201] + [409] * 49, codes
    assert {r.json()["code"] for r in results if r.status_code == 409} == {"slot-taken"}
    assert owner.execute("SELECT count(*) FROM appointments WHERE provider_id = %s",
                         (c.provider,)).fetchone()[0] == 1


def test_overlapping_lengths_collide_too(client):
    c = Clinic(client, slot_minutes=15)
    day = c.slots(_next_monday(), 1)
    assert c.book(day[0], type="consultation").status_code == 201  # 45 minutes: three slots
    assert_problem(c.book(day[2], type="follow_up", patient=c.new_patient()), 409, "slot-taken")
    assert c.book(day[3], type="follow_up", patient=c.new_patient()).status_code == 201


def test_the_status_workflow_allows_only_its_transitions(client):
    c = Clinic(client)
    day = c.slots(_next_monday(), 1)
    a = c.book(day[0]).json()
    problem = assert_problem(c.status(a["id"], "completed"), 409, "invalid-transition")
    assert problem["allowed"] == ["confirmed", "checked_in", "cancelled", "no_show"]
    assert "confirmed, checked_in, cancelled, no_show" in problem["detail"]
    for step in ("confirmed", "checked_in", "in_progress", "completed"):
        r = c.status(a["id"], step)
        assert r.status_code == 200 and r.json()["status"] == step, r.text
    assert_problem(c.status(a["id"], "cancelled", reason="too late"), 409, "invalid-transition")
    b = c.book(day[1], patient=c.new_patient()).json()
    assert c.status(b["id"], "no_show").json()["allowed_next"] == []
    assert day[1] not in c.slots(_next_monday(), 1)  # a no-show keeps its (past) time on record


def test_reschedule_moves_the_visit_and_frees_the_old_time(client):
    c = Clinic(client)
    day = c.slots(_next_monday(), 1)
    a = c.book(day[0]).json()
    other = c.book(day[2], patient=c.new_patient()).json()
    r = client.post(f"/api/v1/appointments/{a['id']}/reschedule", headers=bearer(c.token),
                    json={"starts_at": day[2]})
    assert_problem(r, 409, "slot-taken")
    r = client.post(f"/api/v1/appointments/{a['id']}/reschedule", headers=bearer(c.token),
                    json={"starts_at": day[4]})
    assert r.status_code == 200 and _utc(r.json()["starts_at"]) == _utc(day[4])
    assert day[0] in c.slots(_next_monday(), 1) and day[4] not in c.slots(_next_monday(), 1)
    assert other["status"] == "scheduled"


def test_bad_booking_requests_are_refused_clearly(client, owner):
    c = Clinic(client)
    monday = _next_monday()
    before = owner.execute("SELECT count(*) FROM appointments").fetchone()[0]
    assert_problem(c.book(f"{monday.isoformat()}T09:00:00"), 422, "naive-datetime")
    assert_problem(c.book(f"{monday.isoformat()}T09:02:00+01:00"), 422, "slot-not-aligned")
    assert_problem(c.book("2020-01-06T09:00:00+01:00"), 422, "slot-in-past")
    assert_problem(c.book(f"{monday.isoformat()}T19:00:00+01:00"), 409, "outside-availability")
    assert_problem(c.book(f"{monday.isoformat()}T09:00:00+01:00", type="house_call"), 422, "validation-failed")
    assert_problem(c.book(f"{monday.isoformat()}T09:00:00+01:00", patient=str(uuid.uuid4())), 404,
                   "patient-not-found")
    r = client.put(f"/api/v1/providers/{c.provider}/availability", headers=bearer(c.token), json={
        "location_id": c.location, "windows": [{"weekday": 0, "starts": "09:00", "ends": "11:00"},
                                               {"weekday": 0, "starts": "10:00", "ends": "12:00"}]})
    assert_problem(r, 422, "overlapping-windows")
    assert owner.execute("SELECT count(*) FROM appointments").fetchone()[0] == before
    # An emergency may be booked outside the template, but still not on top of another visit.
    assert c.book(f"{monday.isoformat()}T19:00:00+01:00", type="emergency").status_code == 201


def test_a_patient_books_a_telemedicine_visit_for_themselves_only(client, owner):
    c = Clinic(client)
    token = login(client, "patient@demo.carebase.local")
    me = client.get("/api/v1/me/patient", headers=bearer(token)).json()
    day = c.slots(_next_monday(), 1)
    r = c.book(day[1], token=token, patient=me["id"], type="telemedicine")
    assert r.status_code == 201, r.text
    assert_problem(c.book(day[3], token=token, patient=c.patient), 404, "patient-not-found")
    assert_problem(c.book(f"{_next_monday().isoformat()}T20:00:00+01:00", token=token, patient=me["id"],
                          type="emergency"), 403, "forbidden")
    mine = client.get("/api/v1/appointments", headers=bearer(token)).json()
    assert r.json()["id"] in [a["id"] for a in mine] and all(a["patient_id"] == me["id"] for a in mine)
    # Patients may cancel their own visit, but not move it along the clinical workflow.
    assert_problem(client.post(f"/api/v1/appointments/{r.json()['id']}/status", headers=bearer(token),
                               json={"status": "checked_in"}), 403, "forbidden")
    r = client.post(f"/api/v1/appointments/{r.json()['id']}/status", headers=bearer(token),
                    json={"status": "cancelled", "reason": "Feeling better"})
    assert r.status_code == 200 and r.json()["cancel_reason"] == "Feeling better"
    # Another clinic's staff see nothing of it.
    other = login(client, "receptionist@demo2.carebase.local")
    assert client.get(f"/api/v1/appointments/{r.json()['id']}", headers=bearer(other)).status_code == 404
