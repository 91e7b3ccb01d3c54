"""A hospital scheduling system speaking HL7 v2.5 scheduling messages over MLLP (for the
notifier's ``slots_hl7`` adapter in tests and the demo).

It holds slots (department, practitioner, start, end, free or busy) and answers:

- ``SQM^S25`` (schedule query) with ``SQR^S25``: ``MSA|AA``, ``QAK``, then per free slot in
  the asked window (``ARQ-11``), department (``AIL-3.4``) and practitioner (``AIP-3``), at
  most ``QRD-7`` of them: ``SCH`` (``SCH-2`` slot id, ``SCH-11`` ``^^<min>^<start>^<end>``),
  ``AIL``, ``AIP``.
- ``SRM^S01`` (request new appointment) with ``SRR^S01``: the slot ``ARQ-2`` free -> taken
  and ``MSA|AA``, ``SCH-1`` the placer id, ``SCH-2`` the new appointment id, ``SCH-25``
  ``Pending``; the same placer id again -> the same answer; the slot busy or unknown ->
  ``MSA|AE`` and ``ERR-5`` ``SLOT_UNAVAILABLE``.
- anything else: ``ACK`` ``AR`` with ``ERR-3`` 200 (unsupported message type); bytes that
  do not parse: ``AE`` 100.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime

import hl7

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"


@dataclass
class HeldSlot:
    slot_id: str
    department: str
    start: datetime
    end: datetime
    practitioner_id: str | None = None
    status: str = "free"


@dataclass
class ReceivedBooking:
    placer_id: str
    slot_id: str
    patient_id: str
    appointment_id: str
    message: str  # the SRM as received


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def _read_time(text: str) -> datetime | None:
    for shape in ("%Y%m%d%H%M%S%z", "%Y%m%d%H%M%z"):
        try:
            return datetime.strptime(text, shape)
        except ValueError:
            continue
    return None


def _get(message: hl7.Message, segment: str, number: int, component: int = 1) -> str:
    try:
        found = message.segment(segment)
        return str(found.extract_field(field_num=number, component_num=component) or "")
    except (IndexError, KeyError):
        return ""


@dataclass
class Hl7SchedulingStandIn:
    slots: list[HeldSlot] = field(default_factory=list)
    booked_status: str = "Pending"
    received: list[str] = field(default_factory=list)
    bookings: list[ReceivedBooking] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> int:
        """Listen; with ``tls``, MLLP over TLS (an interface engine's TLS listener)."""
        self._server = await asyncio.start_server(self._connection, host, port, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def take(self, slot_id: str) -> None:
        """Someone else books the slot at the hospital."""
        for slot in self.slots:
            if slot.slot_id == slot_id:
                slot.status = "busy"

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                block = await reader.readuntil(FS + CR)
                text = block.lstrip(b"\r\n").removeprefix(VT).removesuffix(FS + CR).decode()
                self.received.append(text)
                writer.write(VT + self.answer(text).encode() + FS + CR)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    # --- answers (pure over the held slots) -------------------------------------------------

    def answer(self, text: str) -> str:
        try:
            message = hl7.parse(text)
            kind = f"{_get(message, 'MSH', 9, 1)}^{_get(message, 'MSH', 9, 2)}"
            control = _get(message, "MSH", 10)
        except Exception:
            return self._ack("ACK", "", "AE", "100^Segment sequence error^HL70357")
        if kind == "SQM^S25":
            return self._slots(message, control)
        if kind == "SRM^S01":
            return self._book(message, control)
        return self._ack("ACK", control, "AR", "200^Unsupported message type^HL70357")

    def _msh(self, kind: str, control: str) -> str:
        stamp = _time(datetime.now(UTC))
        return f"MSH|^~\\&|SCHEDULING|HOSPITAL|FOLLOWUP|FOLLOWUP|{stamp}||{kind}|R{control}|P|2.5"

    def _ack(self, kind: str, control: str, code: str, error: str, app: str = "") -> str:
        return (
            "\r".join([self._msh(kind, control), f"MSA|{code}|{control}", f"ERR|||{error}|E|{app}"])
            + "\r"
        )

    def _slots(self, message: hl7.Message, control: str) -> str:
        after = _read_time(_get(message, "ARQ", 11, 1))
        before = _read_time(_get(message, "ARQ", 11, 2))
        department = _get(message, "AIL", 3, 4)
        practitioner = _get(message, "AIP", 3)
        limit = int(_get(message, "QRD", 7) or "10")
        fitting = [
            s
            for s in sorted(self.slots, key=lambda s: s.start)
            if s.status == "free"
            and (after is None or s.start >= after)
            and (before is None or s.start < before)
            and (not department or s.department == department)
            and (not practitioner or s.practitioner_id == practitioner)
        ][:limit]
        segments = [
            self._msh("SQR^S25^SQR_S25", control),
            f"MSA|AA|{control}",
            f"QAK|{_get(message, 'QRD', 4)}|{'OK' if fitting else 'NF'}",
        ]
        for slot in fitting:
            minutes = int((slot.end - slot.start).total_seconds() // 60)
            segments.append(
                f"SCH||{slot.slot_id}^HOSPITAL|||||||||^^{minutes}^{_time(slot.start)}^"
                f"{_time(slot.end)}"
            )
            segments.append(f"AIL|1||^^^{slot.department}")
            if slot.practitioner_id:
                segments.append(f"AIP|1||{slot.practitioner_id}")
        return "\r".join(segments) + "\r"

    def _book(self, message: hl7.Message, control: str) -> str:
        placer = _get(message, "ARQ", 1)
        slot_id = _get(message, "ARQ", 2)
        patient = _get(message, "PID", 3)
        done = next((b for b in self.bookings if b.placer_id == placer), None)
        if done is None:
            slot = next((s for s in self.slots if s.slot_id == slot_id), None)
            if not placer or not patient or slot is None or slot.status != "free":
                return self._ack(
                    "SRR^S01^SRR_S01",
                    control,
                    "AE",
                    "207^Application internal error^HL70357",
                    "SLOT_UNAVAILABLE^Slot not available",
                )
            slot.status = "busy"
            done = ReceivedBooking(
                placer, slot_id, patient, f"APT-{len(self.bookings) + 1}", str(message)
            )
            self.bookings.append(done)
        return (
            "\r".join(
                [
                    self._msh("SRR^S01^SRR_S01", control),
                    f"MSA|AA|{control}",
                    f"SCH|{done.placer_id}^FOLLOWUP|{done.appointment_id}^HOSPITAL"
                    + "|" * 23
                    + self.booked_status,
                ]
            )
            + "\r"
        )
