"""The MLLP listener: HL7 v2 over TCP (or TLS), one ACK per message, in order per connection.

Framing ``0x0b <message> 0x1c 0x0d``, read as integration engines write it: bytes between
frames (a CR/LF after the end block, keep-alive noise) are skipped, a block without its
final CR is accepted, a message larger than the limit is answered AE (its MSH is kept, so
MSA-2 still echoes its control id) and the connection goes on. A message is acknowledged
AA only after its canonical events are stored on the broker; AR asks the sender to resend
later (the broker is away) or says the message is not for us (type, version, character
set); AE asks to fix the message. Idle connections and messages that stop half way are
closed after their timeouts; connections beyond the limit are closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from common.clock import Clock
from common.logs import get_logger
from common.sites import SiteRegistry
from services.tracker.hl7_siu import Header, Rejected, ack, read, read_header
from services.tracker.ingest import CanonicalSink
from services.tracker.metrics import (
    HL7_DOUBLED_LOCAL_TIMES,
    INGEST_REJECTED,
    MLLP_CONNECTIONS,
    MLLP_CONNECTIONS_REFUSED,
    MLLP_STRAY_BYTES,
)

log = get_logger(__name__)

START, END, CR = b"\x0b", b"\x1c", b"\x0d"
HEAD_KEPT = 4096  # of an oversized message: enough for its MSH

# HL7 table 0357 error codes -> the metric's reason label
REASONS = {
    "100": "malformed",
    "101": "missing_field",
    "102": "invalid_value",
    "103": "invalid_value",
    "200": "unsupported_type",
    "201": "unsupported_trigger",
    "203": "unsupported_version",
    "204": "unknown_site",
    "207": "unavailable",
}


@dataclass(frozen=True)
class MllpLimits:
    max_bytes: int = 64 * 1024
    idle_timeout: float = 300.0  # seconds without a byte between messages
    read_timeout: float = 30.0  # seconds from a message's start block to its end block
    max_connections: int = 64
    store_timeout: float = 10.0  # seconds to wait for the broker before answering AR


class Framer:
    """MLLP frames out of a byte stream, tolerant of what lies between them. Pure."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._buffer = bytearray()
        self._inside = False
        self._size = 0  # of the current message, kept or not
        self.stray = 0  # bytes skipped between frames

    @property
    def inside(self) -> bool:
        return self._inside

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """Complete messages in ``data``: (bytes, oversized). An oversized message keeps
        only its first HEAD_KEPT bytes."""
        out: list[tuple[bytes, bool]] = []
        view = memoryview(data)
        i = 0
        while i < len(view):
            if not self._inside:
                at = data.find(START, i)
                if at < 0:
                    self.stray += len(view) - i
                    break
                self.stray += at - i
                i = at + 1
                self._inside, self._size = True, 0
                self._buffer.clear()
                continue
            end = data.find(END, i)
            start_again = data.find(START, i)
            stop = end if end >= 0 else len(view)
            if 0 <= start_again < stop:
                # A new start block before the end: the sender gave up on the last one.
                self.stray += self._size + (start_again - i)
                i = start_again
                self._inside = False
                continue
            chunk = view[i:stop]
            self._size += len(chunk)
            room = (HEAD_KEPT if self._size > self._max else self._max) - len(self._buffer)
            if room > 0:
                self._buffer += chunk[:room]
            if end < 0:
                break
            oversized = self._size > self._max
            body = bytes(self._buffer[:HEAD_KEPT] if oversized else self._buffer)
            out.append((body, oversized))
            self._inside = False
            self._buffer.clear()
            i = end + 1
            if i < len(view) and view[i] == CR[0]:
                i += 1
        return out


class MllpListener:
    def __init__(
        self,
        *,
        sink: CanonicalSink,
        clock: Clock,
        zone: ZoneInfo,
        department: str,
        max_bytes: int = 64 * 1024,
        limits: MllpLimits | None = None,
        tls: ssl.SSLContext | None = None,
        patient_id_type: str = "",
        sites: SiteRegistry | None = None,
    ) -> None:
        self._patient_id_type = patient_id_type
        self._sites = sites
        self._sink = sink
        self._clock = clock
        self._zone = zone
        self._department = department
        self._limits = limits or MllpLimits(max_bytes=max_bytes)
        self._tls = tls
        self._server: asyncio.Server | None = None
        self._open = 0
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, ssl=self._tls)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self._limits.max_connections:
            MLLP_CONNECTIONS_REFUSED.inc()
            log.warning("mllp_connection_refused", open=self._open)
            writer.close()
            return
        self._open += 1
        MLLP_CONNECTIONS.inc()
        framer = Framer(self._limits.max_bytes)
        try:
            while True:
                timeout = self._limits.read_timeout if framer.inside else self._limits.idle_timeout
                try:
                    data = await asyncio.wait_for(reader.read(65536), timeout)
                except TimeoutError:
                    log.info("mllp_timeout", inside_message=framer.inside)
                    return
                if not data:
                    return  # the sender closed the connection
                stray = framer.stray
                messages = framer.feed(data)
                if framer.stray > stray:
                    MLLP_STRAY_BYTES.inc(framer.stray - stray)
                for body, oversized in messages:
                    if oversized:
                        answer = self._refuse(
                            read_header(body),
                            Rejected("AE", "100", "message is larger than the limit", "MSH"),
                        )
                    else:
                        answer = await self.handle(body)
                    writer.write(START + answer.encode() + END + CR)
                    await writer.drain()
        except (ConnectionError, OSError, ssl.SSLError):
            return
        finally:
            self._open -= 1
            MLLP_CONNECTIONS.dec()
            writer.close()

    async def handle(self, block: bytes) -> str:
        """One message in, its ACK out (as text)."""
        now = self._clock.now()
        header = read_header(block)
        try:
            result = read(
                block,
                zone=self._zone,
                now=now,
                department=self._department,
                patient_id_type=self._patient_id_type,
                sites=self._sites.current() if self._sites is not None else None,
            )
        except Rejected as rejected:
            return self._refuse(header, rejected)
        except Exception as exc:  # a reading bug must not cost the connection its answer
            log.error("hl7_read_failed", error=type(exc).__name__)
            return self._refuse(
                header, Rejected("AE", "207", "the message could not be read", "MSH")
            )
        for _ in result.doubled:
            HL7_DOUBLED_LOCAL_TIMES.inc()
        try:
            await asyncio.wait_for(
                self._sink.publish("hl7", result.events()), self._limits.store_timeout
            )
        except Exception as exc:  # the broker is away: the sender keeps it and resends
            log.error("hl7_store_failed", control_id=result.control_id, error=type(exc).__name__)
            return self._refuse(
                header, Rejected("AR", "207", "temporarily unable to store; resend later")
            )
        log.info("hl7_accepted", message_type=result.message_type, control_id=result.control_id)
        return ack(header, code="AA", now=now)

    def _refuse(self, header: Header | None, rejected: Rejected) -> str:
        INGEST_REJECTED.labels("hl7", REASONS.get(rejected.error_code, "invalid")).inc()
        log.warning(
            "hl7_refused",
            ack_code=rejected.ack_code,
            error_code=rejected.error_code,
            location=rejected.location,
        )
        return ack(header, code=rejected.ack_code, now=self._clock.now(), rejected=rejected)


def tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A server context for MLLP over TLS (TLS 1.2+); with ``client_ca``, clients must show
    a certificate it signed (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
