"""Server-Sent Events with per-channel authorization, fanned out between separate server
processes through PostgreSQL LISTEN/NOTIFY."""

from __future__ import annotations

import json
import queue
import threading
import time

import httpx
import pytest

from tests.conftest import ProcessServer, bearer, login, tenant_id_of, wait_for


class Listener:
    """Reads an SSE stream in a thread and hands over its events."""

    def __init__(self, url: str, token: dict, channels: list[str]):
        self.events: queue.Queue = queue.Queue()
        self.status: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, token, channels), daemon=True)
        self._thread.start()

    def _run(self, url, token, channels):
        try:
            with httpx.Client(timeout=httpx.Timeout(30, read=30)) as c, \
                    c.stream("GET", url + "/api/v1/events/stream", params={"channel": channels},
                             headers=bearer(token)) as r:
                self.status = r.status_code
                self._response = r
                event = None
                for line in r.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        self.events.put((event, json.loads(line.split(":", 1)[1])))
        except httpx.HTTPError:
            if not self._stop.is_set():
                raise

    def next(self, kind: str, timeout: float = 15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                event, data = self.events.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                break
            if event == kind:
                return data
        raise AssertionError(f"no {kind!r} event within {timeout}s")

    def stop(self):
        self._stop.set()
        response = getattr(self, "_response", None)
        if response is not None:
            response.close()  # hang up now rather than at the next ping
        self._thread.join(10)


def test_a_write_on_one_server_reaches_a_listener_on_another(backend, owner):
    demo = tenant_id_of(owner, "demo")
    channel = f"tenant:{demo}:patients"
    a, b = ProcessServer(backend), ProcessServer(backend)
    try:
        with httpx.Client(base_url=a.url) as ca:
            token = login(ca, "receptionist@demo.carebase.local")
            listener = Listener(b.url, token, [channel])
            assert listener.next("ready")["channels"] == [channel]
            r = ca.post("/api/v1/patients", headers=bearer(token),
                        json={"given_name": "Live", "family_name": "Update", "birth_date": "1999-09-09",
                              "allow_duplicate": True})
            assert r.status_code == 201
            started = time.time()
            msg = listener.next("message")
            assert time.time() - started < 2  # the seed asks for < 500 ms; leave CI some slack
            assert msg == {"channel": channel, "data": {"type": "patient.registered", "patient_id": r.json()["id"]}}
            assert "Live" not in json.dumps(msg)  # ids only, never PHI
            listener.stop()
    finally:
        a.stop()
        b.stop()


def test_a_refused_write_sends_nothing(server, client, owner):
    demo = tenant_id_of(owner, "demo")
    token = login(client, "doctor@demo.carebase.local")
    listener = Listener(server.url, token, [f"tenant:{demo}:patients"])
    listener.next("ready")
    r = client.post("/api/v1/patients", headers=bearer(token),
                    json={"given_name": "No", "family_name": "Show", "birth_date": "2999-01-01"})
    assert r.status_code == 422
    with pytest.raises(AssertionError):
        listener.next("message", timeout=1.5)
    listener.stop()


@pytest.mark.parametrize("who,channel,status", [
    ("pharmacist@demo", "tenant:{demo}:patients", 403),  # role may not read the topic
    ("doctor@demo", "tenant:{demo2}:patients", 403),  # another tenant
    ("doctor@demo", "account:{other}", 403),  # another person's feed
    ("doctor@demo", "tenant:{demo}:nonsense", 422),
    ("doctor@demo", "everything", 422),
])
def test_channels_are_authorized(client, owner, who, channel, status):
    ids = {"demo": tenant_id_of(owner, "demo"), "demo2": tenant_id_of(owner, "demo2"),
           "other": owner.execute("SELECT id FROM accounts WHERE email = 'nurse@demo.carebase.local'").fetchone()[0]}
    token = login(client, f"{who}.carebase.local")
    r = client.get("/api/v1/events/stream", params={"channel": channel.format(**ids)}, headers=bearer(token))
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"


def test_own_account_feed_is_allowed_and_no_token_is_401(client, server):
    token = login(client, "nurse@demo.carebase.local")
    me = client.get("/api/v1/me", headers=bearer(token)).json()
    listener = Listener(server.url, token, [f"account:{me['id']}"])
    assert listener.next("ready")
    listener.stop()
    assert client.get("/api/v1/events/stream", params={"channel": f"account:{me['id']}"}).status_code == 401


def subscribers_gauge(client) -> float:
    return next(float(line.split()[1]) for line in client.get("/metrics").text.splitlines()
                if line.startswith("carebase_realtime_subscribers "))


def test_many_connects_and_disconnects_leak_nothing(server, client, owner):
    demo = tenant_id_of(owner, "demo")
    token = login(client, "doctor@demo.carebase.local")
    hub = server.app.state.hub
    baseline = hub.subscriber_count()
    gauge_baseline = subscribers_gauge(client)
    for _ in range(60):
        with httpx.Client(timeout=10) as c, c.stream(
                "GET", server.url + "/api/v1/events/stream", params={"channel": f"tenant:{demo}:patients"},
                headers=bearer(token)) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data:"):
                    break  # got "ready"; hang up
    # Streams of earlier tests may still be winding down, so "no more than before", not "equal". The gauge
    # is process-wide and this process also hosts the other backend's server, so it is compared with its
    # own starting value rather than with this hub's count.
    wait_for(lambda: hub.subscriber_count() <= baseline and subscribers_gauge(client) <= gauge_baseline, 10,
             message="all subscriptions to end, in the hub and in the gauge")
    # Still one listening connection for the whole process, and the pool was given back.
    listening = owner.execute("SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN carebase_realtime' "
                              "AND usename = 'carebase_app'").fetchone()[0]
    assert listening <= 3  # this server's hub, plus at most the process servers of other tests
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
