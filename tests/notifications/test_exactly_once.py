"""Scale-out proof (issue 5): 10,000 queued notifications are delivered exactly once each, with
workers SIGKILLed and replaced midway.

Real `carebase worker` processes, the local channels (the message is written to the outbox in the
delivery's own transaction) and procrastinate's recovery of the jobs of dead workers: a worker
killed mid-job leaves its jobs `doing` and maybe a delivery transaction half done (rolled back by
PostgreSQL when the connection drops); another worker puts those jobs back in the queue once the
dead one's heartbeat is stale, and their second run must neither lose nor repeat a message.
"""

from __future__ import annotations

import secrets
import sys
import time
import uuid

from carebase.platform import delivery
from tests.conftest import CarebaseProcess, WorkerProcess, run_db, tenant_id_of, wait_for

DELIVERIES = 10_000
BATCH = 2_500  # deliveries queued per transaction
# Jobs at once per worker. Each job holds one of the worker's four owner connections while its
# delivery transaction is open; the machine's cores, not the concurrency, bound the rate.
CONCURRENCY = "4"
# Heartbeats every 0.5 s; a worker silent for 3 s is dead and its jobs go back to the queue (a
# replacement worker takes longer than that to start, so it recovers them as it comes up).
FAST_RECOVERY = {"CAREBASE_WORKER_HEARTBEAT_SECONDS": "0.5", "CAREBASE_WORKER_STALLED_SECONDS": "3",
                 "CAREBASE_WORKER_POLL_SECONDS": "0.2", "CAREBASE_LOG_LEVEL": "WARNING"}
CONTENT = delivery.Content(title="Order ORD-1: out for delivery", body="Your order ORD-1 is out for delivery.",
                           short="Carebase: your order ORD-1 is out for delivery.")


class Worker(CarebaseProcess):
    def __init__(self, backend):
        super().__init__(backend, ["worker", "--concurrency", CONCURRENCY],
                         {**WorkerProcess.DEFAULTS, **FAST_RECOVERY}, f"worker-eo-{uuid.uuid4().hex[:6]}.log")


def _say(started: float, what: str) -> None:
    print(f"[exactly-once {time.perf_counter() - started:5.1f} s] {what}", file=sys.stderr, flush=True)


def _chain(i: int) -> list[str]:
    """SMS first, e-mail as the fallback; one in ten starts with push, which nobody here has a
    device for: skipped in a transaction of its own, then SMS in the next (a kill can fall between)."""
    return ["push", "sms", "email"] if i % 10 == 0 else ["sms", "email"]


def _queue(backend, tenant: uuid.UUID, recipients: list[tuple[int, str]]) -> list[uuid.UUID]:
    """One transaction: a delivery (and its `delivery.run` job) per recipient."""

    async def go(session):
        return [await delivery.deliver(session, kind="order.status", chain=_chain(i),
                                       addresses={"sms": to, "email": f"eo{to[1:]}@example.org"}, content=CONTENT,
                                       tenant_id=tenant)
                for i, to in recipients]

    return run_db(backend, go, tenant_id=tenant)


def _delivered(owner, batch: str) -> int:
    return owner.execute("SELECT count(*) FROM deliveries d JOIN eo_deliveries e USING (id) "
                         "WHERE e.batch = %s AND d.status = 'delivered'", (batch,)).fetchone()[0]


def test_ten_thousand_notifications_are_delivered_exactly_once_with_workers_killed(backend, owner):
    started = time.perf_counter()
    tenant = tenant_id_of(owner, "demo")
    batch = secrets.token_hex(4)
    prefix = f"+91{secrets.randbelow(10**5):05d}"  # + a 5-digit index: a phone number per delivery
    recipients = [f"{prefix}{i:05d}" for i in range(DELIVERIES)]
    # The test's own record of which delivery went to whom (a finished delivery forgets its addresses).
    owner.execute("CREATE TEMP TABLE IF NOT EXISTS eo_deliveries (batch text, id uuid PRIMARY KEY, recipient text, "
                  "chain text)")

    # The workers boot while the deliveries are queued, and start on the first batch once it commits.
    workers: list[CarebaseProcess] = [Worker(backend), Worker(backend)]
    try:
        for first in range(0, DELIVERIES, BATCH):
            todo = list(enumerate(recipients))[first:first + BATCH]
            ids = _queue(backend, tenant, todo)
            assert None not in ids
            with owner.cursor().copy("COPY eo_deliveries (batch, id, recipient, chain) FROM STDIN") as copy:
                for delivery_id, (i, to) in zip(ids, todo, strict=True):
                    copy.write_row((batch, delivery_id, to, ",".join(_chain(i))))
            # Fresh planner statistics for the job queue, as the workers' upkeep leaves them within
            # seconds (jobs.analyze_if_grown): with none, procrastinate's fetch reads every queued
            # job to pick one (docs/benchmarks.md, "Notifications (issue 5)").
            owner.execute("ANALYZE procrastinate_jobs")
        _say(started, f"queued {DELIVERIES} deliveries; {_delivered(owner, batch)} delivered already")

        for fraction, victim in ((1 / 3, 0), (2 / 3, 1)):
            wait_for(lambda f=fraction: _delivered(owner, batch) >= DELIVERIES * f, 300, 0.05,
                     f"{fraction:.0%} of the deliveries")
            # In the middle of its work: jobs fetched, delivery transactions open.
            workers[victim].kill()
            _say(started, f"killed worker {victim + 1} at {_delivered(owner, batch)} delivered; starting another")
            workers[victim] = Worker(backend)
        last_kill = time.perf_counter()
        wait_for(lambda: _delivered(owner, batch) == DELIVERIES, 300, 0.2, "every delivery")
        _say(started, f"all delivered, {time.perf_counter() - last_kill:.1f} s after the last kill")
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.stop()

    rows = owner.execute("SELECT d.status, d.delivered_channel, count(*) FROM deliveries d "
                         "JOIN eo_deliveries e USING (id) WHERE e.batch = %s GROUP BY 1, 2", (batch,)).fetchall()
    assert rows == [("delivered", "sms", DELIVERIES)]

    # Exactly one message in the outbox per delivery: none missing, none twice, none by e-mail.
    sent = owner.execute("SELECT recipient, count(*) FROM outbound_messages WHERE recipient LIKE %s "
                         "GROUP BY recipient", (prefix + "%",)).fetchall()
    assert len(sent) == DELIVERIES and {r for r, _ in sent} == set(recipients)
    assert [r for r, n in sent if n != 1] == []
    assert owner.execute("SELECT count(*) FROM outbound_messages WHERE recipient LIKE %s",
                         (f"eo{prefix[1:]}%",)).fetchone()[0] == 0

    # The attempt log: push skipped where the chain starts with it, then one sent SMS per delivery,
    # whose provider message id is the outbox row with this delivery's own recipient.
    attempts = owner.execute(
        "SELECT e.chain, a.channel, a.outcome, count(*), count(DISTINCT a.delivery_id) FROM delivery_attempts a "
        "JOIN eo_deliveries e ON e.id = a.delivery_id WHERE e.batch = %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        (batch,)).fetchall()
    pushed_first = DELIVERIES // 10
    assert attempts == [("push,sms,email", "push", "skipped", pushed_first, pushed_first),
                        ("push,sms,email", "sms", "sent", pushed_first, pushed_first),
                        ("sms,email", "sms", "sent", DELIVERIES - pushed_first, DELIVERIES - pushed_first)]
    mismatched = owner.execute(
        "SELECT count(*) FROM delivery_attempts a JOIN eo_deliveries e ON e.id = a.delivery_id "
        "LEFT JOIN outbound_messages m ON m.id::text = a.provider_message_id "
        "WHERE e.batch = %s AND a.outcome = 'sent' AND m.recipient IS DISTINCT FROM e.recipient",
        (batch,)).fetchone()[0]
    assert mismatched == 0

    # One job per delivery, every one finished; the kills interrupted some, which ran again.
    jobs = owner.execute(
        "SELECT j.status, count(*), count(DISTINCT e.id), count(*) FILTER (WHERE j.attempts > 1) "
        "FROM procrastinate_jobs j JOIN eo_deliveries e ON e.id::text = j.args->>'delivery_id' "
        "WHERE j.task_name = 'delivery.run' AND e.batch = %s GROUP BY 1", (batch,)).fetchall()
    assert [j[:3] for j in jobs] == [("succeeded", DELIVERIES, DELIVERIES)], jobs
    recovered = jobs[0][3]
    assert recovered >= 1, "the kills hit no job in flight"
    _say(started, f"checked; {recovered} job(s) of the killed workers were recovered and ran again")
