"""Password reset over real SMTP: the server speaks SMTP to a local aiosmtpd server."""

from __future__ import annotations

import email
import time

import httpx
from aiosmtpd.controller import Controller

from tests.conftest import ProcessServer, WorkerProcess, free_port, login, new_staff


class Inbox:
    def __init__(self):
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def test_reset_link_arrives_by_smtp_and_works_once(client, owner, backend):
    staff = new_staff(client, owner, "nurse")
    inbox = Inbox()
    port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    smtp_env = {"CAREBASE_EMAIL_PROVIDER": "smtp", "CAREBASE_SMTP_HOST": "127.0.0.1", "CAREBASE_SMTP_PORT": str(port)}
    srv = ProcessServer(backend, CAREBASE_PUBLIC_URL="https://clinic.example", **smtp_env)
    worker = WorkerProcess(backend, **smtp_env)  # the mail goes out as a background job
    local_before = owner.execute("SELECT count(*) FROM outbound_messages WHERE recipient = %s",
                                 (staff["email"],)).fetchone()[0]
    try:
        r = httpx.post(srv.url + "/api/v1/auth/password/forgot", json={"email": staff["email"]})
        assert r.status_code == 202
        # Generous: the worker starts cold and first sends whatever earlier tests left queued (a CI
        # run under load took more than 10 s); a working path answers in about a second.
        deadline = time.time() + 60

        def mine():  # the worker also sends whatever else other tests left queued
            return [m for m in inbox.messages if m["To"] == staff["email"]]

        while not mine() and time.time() < deadline:
            time.sleep(0.05)
        assert mine(), "no mail arrived"
        msg = mine()[-1]
        body = msg.get_payload(decode=True).decode()
        assert "https://clinic.example/reset-password?token=" in body
        token = body.split("reset token: ")[1].split()[0]
        ok = httpx.post(srv.url + "/api/v1/auth/password/reset", json={"token": token, "new_password": "via smtp now"})
        assert ok.status_code == 204
        again = httpx.post(srv.url + "/api/v1/auth/password/reset", json={"token": token, "new_password": "twice over"})
        assert again.status_code == 422
        # Delivered over SMTP, logged with the server's message id; the reset link does not linger.
        sent = owner.execute(
            "SELECT d.status, d.content, d.addresses, a.provider, a.outcome, a.provider_message_id "
            "FROM deliveries d JOIN delivery_attempts a ON a.delivery_id = d.id "
            "WHERE d.kind = 'security.email' AND a.provider_message_id = %s", (msg["Message-ID"],)).fetchone()
        assert sent[0] == "delivered" and sent[3:5] == ("smtp", "sent") and sent[5] == msg["Message-ID"]
        assert "token" not in str(sent[1]) and sent[2] == {}
        assert owner.execute("SELECT count(*) FROM outbound_messages WHERE recipient = %s",
                             (staff["email"],)).fetchone()[0] == local_before  # nothing in the local outbox
    finally:
        srv.stop()
        worker.stop()
        smtp.stop()
    login(client, staff["email"], "via smtp now")
