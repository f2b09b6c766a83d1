"""Scale-out proof (issue 5): 10,000 queued notifications are delivered exactly once each, with
workers SIGKILLed and replaced midway.

Real `carebase worker` processes, the local channels (the message is written to the outbox in the
delivery's own transaction) and procrastinate's recovery of the jobs of dead workers. A worker
killed mid-job leaves its jobs `doing`; another worker puts them back in the queue once the dead
one's heartbeat is stale, and their second run must neither lose nor repeat a message.
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
CONCURRENCY = "4"  # jobs at once per worker: the worker's owner pool holds 4 connections
# A dead worker's jobs go back to the queue 1-2 s after its last heartbeat.
FAST_RECOVERY = {"CAREBASE_WORKER_HEARTBEAT_SECONDS": "0.25", "CAREBASE_WORKER_STALLED_SECONDS": "1.5",
                 "CAREBASE_WORKER_POLL_SECONDS": "0.2", "CAREBASE_LOG_LEVEL": "WARNING"}


class Worker(CarebaseProcess):
    def __init__(self, backend):
        super().__init__(backend, ["worker", "--concurrency", CONCURRENCY],
                         {**WorkerProcess.DEFAULTS, **FAST_RECOVERY}, f"worker-eo-{uuid.uuid4().hex[:6]}.log")


def _say(started: float, what: str) -> None:
    print(f"[exactly-once {time.perf_counter() - started:6.1f} s] {what}", file=sys.stderr, flush=True)


def _queue(backend, tenant: uuid.UUID, recipients: list[str]) -> list[uuid.UUID]:
    """One transaction: a delivery (and its `delivery.run` job) per recipient. The chain starts
    with push, which this recipient has no device for (skipped), so each delivery takes two steps."""
    content = delivery.Content(title="Order ORD-1: out for delivery", body="Your order is out for delivery.",
                               short="Carebase: your order ORD-1 is out for delivery.")

    async def go(session):
        return [await delivery.deliver(session, kind="order.status", chain=["push", "sms", "email"],
                                       addresses={"sms": to}, content=content, tenant_id=tenant)
                for to in recipients]

    return run_db(backend, go, tenant_id=tenant)


def _delivered(owner, batch: str) -> int:
    return owner.execute("SELECT count(*) FROM deliveries d JOIN eo_ids e USING (id) "
                         "WHERE e.batch = %s AND d.status = 'delivered'", (batch,)).fetchone()[0]


def test_ten_thousand_notifications_are_delivered_exactly_once_with_workers_killed(backend, owner):
    started = time.perf_counter()
    tenant = tenant_id_of(owner, "demo")
    batch = secrets.token_hex(4)
    prefix = f"+91{secrets.randbelow(10**5):05d}"  # + a 5-digit index: a distinct phone per delivery
    recipients = [f"{prefix}{i:05d}" for i in range(DELIVERIES)]
    # The test's own bookkeeping: the deliveries' addresses are scrubbed once they are delivered.
    owner.execute("CREATE TEMP TABLE IF NOT EXISTS eo_ids (batch text, id uuid PRIMARY KEY, recipient text)")

    workers: list[CarebaseProcess] = []
    try:
        ids: list[uuid.UUID] = []
        for first in range(0, DELIVERIES, BATCH):
            ids += _queue(backend, tenant, recipients[first:first + BATCH])
        _say(started, f"queued {len(ids)} deliveries")
        assert len(set(ids)) == DELIVERIES and None not in ids
        with owner.cursor().copy("COPY eo_ids (batch, id, recipient) FROM STDIN") as copy:
            for delivery_id, to in zip(ids, recipients, strict=True):
                copy.write_row((batch, delivery_id, to))

        workers = [Worker(backend), Worker(backend)]
        progress = started
        for fraction, victim in ((1 / 3, 0), (2 / 3, 1)):
            wait_for(lambda f=fraction: _delivered(owner, batch) >= DELIVERIES * f, 120, 0.1,
                     f"{fraction:.0%} of the deliveries")
            # In the middle of its work: jobs fetched, transactions open, messages half-written.
            workers[victim].kill()
            workers[victim] = Worker(backend)
            _say(started, f"killed worker {victim + 1} at {_delivered(owner, batch)} delivered, started a new one")
            progress = time.perf_counter()
        wait_for(lambda: _delivered(owner, batch) == DELIVERIES, 180, 0.2, "every delivery")
        _say(started, f"all delivered ({time.perf_counter() - progress:.1f} s after the last kill)")
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.stop()

    rows = owner.execute("SELECT d.status, d.delivered_channel, count(*) FROM deliveries d JOIN eo_ids e USING (id) "
                         "WHERE e.batch = %s GROUP BY 1, 2", (batch,)).fetchall()
    assert rows == [("delivered", "sms", DELIVERIES)]

    # Exactly one message in the outbox per delivery: none missing, none twice.
    sent = owner.execute("SELECT recipient, count(*) FROM outbound_messages WHERE recipient LIKE %s "
                         "GROUP BY recipient", (prefix + "%",)).fetchall()
    assert len(sent) == DELIVERIES and {r for r, _ in sent} == set(recipients)
    assert [r for r, n in sent if n != 1] == []

    # The attempt log: push skipped, one sent SMS whose outbox row is this delivery's message.
    attempts = owner.execute(
        "SELECT a.channel, a.outcome, count(*), count(DISTINCT a.delivery_id) FROM delivery_attempts a "
        "JOIN eo_ids e ON e.id = a.delivery_id WHERE e.batch = %s GROUP BY 1, 2 ORDER BY 1, 2", (batch,)).fetchall()
    assert attempts == [("push", "skipped", DELIVERIES, DELIVERIES), ("sms", "sent", DELIVERIES, DELIVERIES)]
    mismatched = owner.execute(
        "SELECT count(*) FROM delivery_attempts a JOIN eo_ids e ON e.id = a.delivery_id "
        "LEFT JOIN outbound_messages m ON m.id::text = a.provider_message_id "
        "WHERE e.batch = %s AND a.outcome = 'sent' AND m.recipient IS DISTINCT FROM e.recipient", (batch,)).fetchone()[0]
    assert mismatched == 0

    # Every job finished; the kills interrupted some of them, which ran again.
    jobs = dict(owner.execute(
        "SELECT j.status, count(*) FROM procrastinate_jobs j JOIN eo_ids e ON e.id::text = j.args->>'delivery_id' "
        "WHERE j.task_name = 'delivery.run' AND e.batch = %s GROUP BY 1", (batch,)).fetchall())
    assert jobs == {"succeeded": DELIVERIES}, jobs
    rerun = owner.execute(
        "SELECT count(*) FROM procrastinate_jobs j JOIN eo_ids e ON e.id::text = j.args->>'delivery_id' "
        "WHERE j.task_name = 'delivery.run' AND e.batch = %s AND j.attempts > 0", (batch,)).fetchone()[0]
    assert rerun >= 1, "the kills hit no job in flight"
    _say(started, f"checked: {rerun} job(s) recovered from the killed workers and run again")
