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
    smtp_env = {"CAREBASE_MAIL_BACKEND": "smtp", "CAREBASE_SMTP_HOST": "127.0.0.1", "CAREBASE_SMTP_PORT": str(port)}
    srv = ProcessServer(backend, CAREBASE_PUBLIC_URL="https://clinic.example", **smtp_env)
    worker = WorkerProcess(backend, **smtp_env)  # the mail goes out as a background job
    try:
        r = httpx.post(srv.url + "/api/v1/auth/password/forgot", json={"email": staff["email"]})
        assert r.status_code == 202
        deadline = time.time() + 10
        while not inbox.messages and time.time() < deadline:
            time.sleep(0.05)
        assert inbox.messages, "no mail arrived"
        msg = inbox.messages[-1]
        assert msg["To"] == staff["email"]
        body = msg.get_payload(decode=True).decode()
        assert "https://clinic.example/reset-password?token=" in body
        token = body.split("reset token: ")[1].split()[0]
        ok = httpx.post(srv.url + "/api/v1/auth/password/reset", json={"token": token, "new_password": "via smtp now"})
        assert ok.status_code == 204
        again = httpx.post(srv.url + "/api/v1/auth/password/reset", json={"token": token, "new_password": "twice over"})
        assert again.status_code == 422
        sent = owner.execute("SELECT status, body FROM outbound_messages WHERE recipient = %s ORDER BY id DESC",
                             (staff["email"],)).fetchone()
        assert sent == ("sent", "")  # the reset link does not linger in the database
    finally:
        srv.stop()
        worker.stop()
        smtp.stop()
    login(client, staff["email"], "via smtp now")
