"""Appointment reminders: queued 24 h and 2 h ahead in the booking's transaction, delivered once as
an in-app notice, and silent when the visit was moved or cancelled."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from carebase.platform.db import Database
from carebase.scheduling import service as scheduling
from carebase.settings import set_settings
from tests.conftest import bearer, demo_patient, login
from tests.scheduling.test_scheduling import Clinic, _next_monday, _utc


def _reminder_jobs(owner, appointment_id: str) -> list[tuple[datetime, dict]]:
    rows = owner.execute("SELECT scheduled_at, args FROM procrastinate_jobs WHERE task_name = 'scheduling.remind' "
                         "AND args->>'appointment_id' = %s ORDER BY scheduled_at", (appointment_id,)).fetchall()
    return [(r[0], r[1] if isinstance(r[1], dict) else json.loads(r[1])) for r in rows]


def _run_job(backend, args: dict) -> None:
    """The job's own handler, on the real database, as the worker would call it."""
    async def go():
        set_settings(backend.settings)
        db = Database(backend.settings, backend.urls)
        try:
            await scheduling._remind_job(db, **args)
        finally:
            await db.dispose()

    asyncio.run(go())


def _notices(client, token) -> list[dict]:
    return [n for n in client.get("/api/v1/notifications", headers=bearer(token)).json()
            if n["kind"] == "appointment.reminder"]


def test_a_booking_queues_two_reminders_and_each_is_delivered_once(client, owner, backend):
    c = Clinic(client)
    patient = str(demo_patient(owner))
    token = login(client, "patient@demo.carebase.local")
    before = len(_notices(client, token))
    slot = c.slots(_next_monday(), 1)[1]
    a = c.book(slot, patient=patient, type="telemedicine").json()
    jobs = _reminder_jobs(owner, a["id"])
    assert [when for when, _ in jobs] == [_utc(slot) - timedelta(hours=24), _utc(slot) - timedelta(hours=2)]
    for _, args in jobs:
        _run_job(backend, args)
        _run_job(backend, args)  # a job that runs twice still notifies once
    notices = _notices(client, token)
    assert len(notices) == before + 2
    assert {n["title"] for n in notices[:2]} == {"Your telemedicine is tomorrow", "Your telemedicine is in 2 hours"}
    assert "Berlin" in notices[0]["body"]
    r = client.patch(f"/api/v1/notifications/{notices[0]['id']}/read", headers=bearer(token))
    assert r.status_code == 204
    unread = client.get("/api/v1/notifications", params={"unread_only": True}, headers=bearer(token)).json()
    assert notices[0]["id"] not in [n["id"] for n in unread]
    # Somebody else's notice cannot be touched.
    other = login(client, "doctor@demo.carebase.local")
    assert client.patch(f"/api/v1/notifications/{notices[1]['id']}/read", headers=bearer(other)).status_code == 404


def test_a_moved_or_cancelled_visit_gets_no_stale_reminder(client, owner, backend):
    c = Clinic(client)
    patient = str(demo_patient(owner))
    token = login(client, "patient@demo.carebase.local")
    day = c.slots(_next_monday(), 1)
    a = c.book(day[0], patient=patient).json()
    old_jobs = _reminder_jobs(owner, a["id"])
    r = client.post(f"/api/v1/appointments/{a['id']}/reschedule", headers=bearer(c.token), json={"starts_at": day[3]})
    assert r.status_code == 200, r.text
    assert len(_reminder_jobs(owner, a["id"])) == 4  # the new time has its own two
    before = len(_notices(client, token))
    for _, args in old_jobs:
        _run_job(backend, args)
    assert len(_notices(client, token)) == before
    c.status(a["id"], "cancelled", reason="Clinic closed")
    for _, args in _reminder_jobs(owner, a["id"])[2:]:
        _run_job(backend, args)
    assert len(_notices(client, token)) == before


def test_no_reminder_is_queued_for_a_time_already_past(client, owner):
    c = Clinic(client)
    soon = (datetime.now(UTC) + timedelta(minutes=90)).replace(second=0, microsecond=0)
    soon -= timedelta(minutes=soon.minute % 5)
    a = c.book(soon.isoformat(), type="emergency").json()
    assert _reminder_jobs(owner, a["id"]) == []  # both the 24 h and the 2 h marks have passed
