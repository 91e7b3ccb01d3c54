"""The MLLP listener: HL7 v2 over TCP, one ACK per message, in order per connection.

Framing and the bounded read come from the hl7 library's asyncio MLLP streams. A message
is acknowledged AA only after its canonical events are stored on the broker; AE asks the
sender to fix or resend, AR refuses what is not a usable HL7 message. An oversized
message is refused and the connection closed, since the rest of its bytes cannot be
told apart from the next message.
"""

from __future__ import annotations

import asyncio
import contextlib
from zoneinfo import ZoneInfo

import hl7
from hl7.mllp import InvalidBlockError, start_hl7_server
from hl7.mllp.streams import HL7StreamReader, HL7StreamWriter

from common.clock import Clock
from common.logs import get_logger
from services.tracker.hl7_siu import Rejected, ack, map_siu, parse_message
from services.tracker.ingest import CanonicalSink
from services.tracker.metrics import INGEST_REJECTED

log = get_logger(__name__)

# HL7 table 0357 error codes -> the metric's reason label
REASONS = {
    "100": "malformed",
    "101": "missing_field",
    "102": "invalid_value",
    "200": "unsupported_type",
    "201": "unsupported_trigger",
    "207": "unavailable",
}


class MllpListener:
    def __init__(
        self,
        *,
        sink: CanonicalSink,
        clock: Clock,
        zone: ZoneInfo,
        department: str,
        max_bytes: int = 64 * 1024,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._zone = zone
        self._department = department
        self._max_bytes = max_bytes
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await start_hl7_server(self._serve, host, port, limit=self._max_bytes)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _serve(self, reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
        try:
            while True:
                try:
                    block: bytes = await reader.readblock()
                except asyncio.IncompleteReadError:
                    return  # the sender closed the connection
                except ValueError:
                    await self._reply(
                        writer, self._refuse(None, Rejected("AR", "100", "message too large"))
                    )
                    return
                except InvalidBlockError:
                    await self._reply(
                        writer, self._refuse(None, Rejected("AR", "100", "not an MLLP block"))
                    )
                    continue
                await self._reply(writer, await self.handle(block))
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    async def _reply(self, writer: HL7StreamWriter, text: str) -> None:
        writer.writeblock(text.encode())
        await writer.drain()

    async def handle(self, block: bytes) -> str:
        """One message in, its ACK out (as text)."""
        now = self._clock.now()
        message = None
        try:
            try:
                text = block.decode("utf-8")
            except UnicodeDecodeError:
                raise Rejected("AR", "100", "message is not UTF-8 text") from None
            message = parse_message(text)
            result = map_siu(message, zone=self._zone, now=now, department=self._department)
        except Rejected as rejected:
            return self._refuse(message, rejected)
        try:
            await self._sink.publish("hl7", result.events())
        except Exception as exc:  # the broker is away: the sender keeps it and resends
            log.error("hl7_store_failed", control_id=result.control_id, error=type(exc).__name__)
            return self._refuse(message, Rejected("AE", "207", "temporarily unable to store"))
        log.info("hl7_accepted", message_type=result.message_type, control_id=result.control_id)
        return ack(message, code="AA", now=now)

    def _refuse(self, message: hl7.Message | None, rejected: Rejected) -> str:
        INGEST_REJECTED.labels("hl7", REASONS.get(rejected.error_code, "invalid")).inc()
        log.warning("hl7_refused", ack_code=rejected.ack_code, error_code=rejected.error_code)
        return ack(
            message,
            code=rejected.ack_code,
            now=self._clock.now(),
            error_code=rejected.error_code,
            reason=rejected.reason,
        )
