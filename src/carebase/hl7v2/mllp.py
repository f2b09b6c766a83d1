"""The MLLP listener: HL7 v2 over TCP, each message framed as <VT> message <FS><CR>.

Each message is taken in its own transaction, which commits before the ACK is written back: a
sender that got AA can forget the message, because it is stored. A sender that gets no ACK (the
connection dropped, the process died) sends again, and the control id makes that harmless.
"""

from __future__ import annotations

import asyncio
import signal

from carebase.hl7v2 import service
from carebase.identity import service as identity
from carebase.platform.db import Database
from carebase.platform.logging import get_logger

log = get_logger("carebase.hl7v2.mllp")

START, END = b"\x0b", b"\x1c\x0d"
MAX_FRAME = service.MAX_MESSAGE + 16


class Listener:
    def __init__(self, db: Database, api_key: str):
        self.db = db
        self.api_key = api_key

    async def handle(self, raw: bytes) -> bytes:
        text = raw.decode("utf-8", errors="replace")
        async with self.db.transaction() as session:
            principal = await identity.authenticate_api_key(session, self.api_key)
            outcome = await service.ingest(session, principal, text, via="mllp")
        return START + outcome.ack.encode() + END

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        buffer = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buffer += chunk
                if len(buffer) > MAX_FRAME:
                    log.warning("mllp_frame_too_large", peer=str(peer))
                    break
                while END in buffer:
                    frame, buffer = buffer.split(END, 1)
                    start = frame.find(START)
                    if start < 0:
                        continue  # noise between frames
                    writer.write(await self.handle(frame[start + 1:]))
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # a failure on one connection must not stop the listener
            log.error("mllp_connection_failed", error_type=type(exc).__name__)
        finally:
            writer.close()


async def listen(db: Database, api_key: str, host: str, port: int, ready=None) -> None:
    """Serve until SIGTERM/SIGINT. The key is checked first: a listener with a wrong key would
    answer every message AE, so it refuses to start instead."""
    async with db.transaction() as session:
        await identity.authenticate_api_key(session, api_key)
    listener = Listener(db, api_key)
    server = await asyncio.start_server(listener.connection, host, port, limit=MAX_FRAME)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("mllp_listening", host=host, port=port)
    if ready is not None:
        ready()
    async with server:
        await stop.wait()
    log.info("mllp_stopped")
