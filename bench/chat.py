"""Chat fan-out (issue 5): a message sent through one `carebase serve` process reaches a WebSocket
held by another process. The time from the sender's 201 (the message is committed) to the event on
the receiver's socket, over a conversation between the demo doctor and the demo patient; first one
message at a time, then 8 senders at once. Target: p99 < 100 ms."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import websockets

from bench.harness import Row, carebase_server, log, login, seed_demo, server_env

DOCTOR = "doctor@demo.carebase.local"
PATIENT = "patient@demo.carebase.local"


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


async def _fan_out(sender_base: str, receiver_base: str, doctor: dict[str, str], patient_token: str,
                   conversation: str, messages: int, senders: int) -> tuple[list[float], list[float]]:
    arrived: dict[str, float] = {}
    answered: dict[str, float] = {}
    sent: dict[str, float] = {}
    ws_url = receiver_base.replace("http://", "ws://") + "/api/v1/messages/ws?access_token=" + patient_token
    async with websockets.connect(ws_url) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"

        async def listen() -> None:
            async for frame in ws:
                event = json.loads(frame)
                if event.get("type") == "message:new":
                    arrived[event["message_id"]] = time.monotonic()

        listener = asyncio.create_task(listen())
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(messages):
            queue.put_nowait(i)
        async with httpx.AsyncClient(base_url=sender_base, headers=doctor, timeout=30) as http:
            async def sender() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    started = time.monotonic()
                    r = await http.post("/api/v1/messages/send", json={"conversation_id": conversation,
                                                                       "body": f"bench {i}"})
                    r.raise_for_status()
                    answered[r.json()["id"]] = time.monotonic()
                    sent[r.json()["id"]] = started

            await asyncio.gather(*(sender() for _ in range(senders)))
        deadline = time.monotonic() + 10
        while len(arrived) < len(answered) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        listener.cancel()
    missing = set(answered) - set(arrived)
    if missing:
        raise RuntimeError(f"{len(missing)} messages never reached the other process's socket")
    # An event may beat the sender's own answer (it leaves at commit): that counts as 0. The second
    # list, from sending the request, includes the send itself (an upper bound).
    return ([max(0.0, arrived[m] - answered[m]) * 1000 for m in answered],
            [(arrived[m] - sent[m]) * 1000 for m in answered])


def run(settings, urls, seconds: float, tmp) -> list[Row]:
    log("Chat fan-out between two server processes (issue 5)")
    env = server_env(settings, urls)
    seed_demo(env)
    rows: list[Row] = []
    with carebase_server(env) as a, carebase_server(env) as b:
        doctor = login(a, DOCTOR)
        patient_token = login(b, PATIENT)["Authorization"].split()[1]
        patient_id = httpx.get(f"{b}/api/v1/me/patient", headers={"Authorization": f"Bearer {patient_token}"}).json()["id"]
        first = httpx.post(f"{a}/api/v1/messages/send", headers=doctor, json={"patient_id": patient_id, "body": "hi"})
        first.raise_for_status()
        conversation = first.json()["conversation_id"]
        for senders, messages in ((1, 300), (8, 800)):
            ms, whole = asyncio.run(_fan_out(a, b, doctor, patient_token, conversation, messages, senders))
            p50, p99 = percentile(ms, 50), percentile(ms, 99)
            log(f"  {messages} messages, {senders} sender(s) at once: 201 -> other process's socket "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(ms):.1f} ms; from sending the message "
                f"p50 {percentile(whole, 50):.1f} ms, p99 {percentile(whole, 99):.1f} ms")
            rows.append(Row(f"chat fan-out p99 (ms), 201 to the socket on another process, {senders} sender(s)",
                            p99, None, None, "< 100 ms", p99 < 100))
            rows.append(Row(f"  (reference) p99 (ms) from sending the message, {senders} sender(s)",
                            percentile(whole, 99), None, None, "-", None))
    return rows
