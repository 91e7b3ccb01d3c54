"""Free slots and booking requests through HL7 v2.5 scheduling messages over MLLP, for
hospitals without FHIR (``slots.SlotSource``).

One exchange per TCP connection (framing ``0x0b <message> 0x1c 0x0d``):

- Free slots: ``SQM^S25`` (schedule query): ``QRD`` (query id, ``QRD-7`` the number of
  slots wanted ``<n>^RD``), ``ARQ-11`` the window (``<after>^<before>``), ``AIS-3`` the
  service type, ``AIL-3`` the department (``^^^<department>``), ``AIP-3`` the practitioner,
  when the stage names them. Answer ``SQR^S25``: ``MSA`` ``AA`` and one ``SCH`` per free
  slot: ``SCH-2`` the filler's slot id, ``SCH-11`` (TQ) ``^^<minutes>^<start>^<end>``.
- Booking: ``SRM^S01`` (request new appointment): ``ARQ-1`` our placer id (the request id,
  so a repeat is the same request), ``ARQ-2`` the slot id, ``ARQ-11`` its start and end,
  ``PID-3`` the patient's id (no name: the hospital knows its patient), ``RGS``, ``AIL``,
  ``AIP``. Answer ``SRR^S01``: ``MSA`` ``AA`` and ``SCH-2`` the filler's appointment id,
  ``SCH-25`` its status (``Pending`` or ``Booked``); ``MSA`` ``AE`` with ``ERR-5``
  ``SLOT_UNAVAILABLE`` (the slot was taken) -> ``SlotTaken``; anything else ->
  ``SlotSourceError`` naming the code, never a patient.

Times are sent in UTC (``YYYYMMDDHHMMSS+0000``) and read with their offset.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import count

import hl7
from hl7.util import unescape

from common.clock import Clock
from common.hl7_text import escape
from services.notifier.slots import (
    BookingReceipt,
    BookingRequest,
    BookingState,
    FreeSlot,
    SlotFilter,
    SlotSourceError,
    SlotTaken,
)

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
SLOT_TAKEN = "SLOT_UNAVAILABLE"


def hl7_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def read_time(text: str) -> datetime | None:
    """An HL7 DTM with its offset (``YYYYMMDDHHMM[SS][+ZZZZ]``); None without one."""
    for shape in ("%Y%m%d%H%M%S%z", "%Y%m%d%H%M%z"):
        try:
            return datetime.strptime(text, shape)
        except ValueError:
            continue
    return None


def _header(kind: str, structure: str, control_id: str, now: datetime, facility: str) -> str:
    return (
        f"MSH|^~\\&|FOLLOWUP|{escape(facility)}|SCHEDULING|HOSPITAL|{hl7_time(now)}||"
        f"{kind}^{structure}|{control_id}|P|2.5"
    )


def slot_query(
    wanted: SlotFilter, limit: int, control_id: str, now: datetime, facility: str
) -> str:
    """The SQM^S25 for ``wanted`` (pure)."""
    segments = [
        _header("SQM", "S25^SQM_S25", control_id, now, facility),
        f"QRD|{hl7_time(now)}|R|I|{control_id}|||{limit}^RD|FOLLOWUP|APT|||T",
        f"ARQ|||||||||||{hl7_time(wanted.after)}^{hl7_time(wanted.before)}",
    ]
    if wanted.service_type:
        segments.append(f"AIS|1||{escape(wanted.service_type)}")
    segments.append(f"AIL|1||^^^{escape(wanted.department)}")
    if wanted.practitioner_id:
        segments.append(f"AIP|1||{escape(wanted.practitioner_id)}")
    return "\r".join(segments) + "\r"


def booking_request(request: BookingRequest, control_id: str, now: datetime, facility: str) -> str:
    """The SRM^S01 asking the hospital to book ``request.slot`` (pure)."""
    slot = request.slot
    minutes = int((slot.end - slot.start).total_seconds() // 60)
    segments = [
        _header("SRM", "S01^SRM_S01", control_id, now, facility),
        f"ARQ|{escape(request.request_id)}^FOLLOWUP|{escape(slot.slot_id)}^HOSPITAL|||||||"
        f"{minutes}|min|{hl7_time(slot.start)}^{hl7_time(slot.end)}",
        f"PID|1||{escape(request.patient_id)}^^^HOSPITAL^MR",
        "RGS|1|A",
        f"AIL|1|A|^^^{escape(request.department)}||||{hl7_time(slot.start)}",
    ]
    if request.practitioner_id:
        segments.append(f"AIP|1|A|{escape(request.practitioner_id)}||||{hl7_time(slot.start)}")
    return "\r".join(segments) + "\r"


def _field(segment: hl7.Segment, number: int, component: int = 1) -> str:
    try:
        value = segment.extract_field(field_num=number, component_num=component)
    except (IndexError, KeyError):
        return ""
    return str(unescape(segment, str(value or "")))  # python-hl7 is untyped


def _acknowledgement(message: hl7.Message) -> tuple[str, str]:
    """MSA-1 and, for an error, ERR-5's application code (else ERR-3's)."""
    code = _field(message.segment("MSA"), 1)
    detail = ""
    try:
        err = message.segment("ERR")
    except KeyError:
        err = None
    if err is not None:
        detail = _field(err, 5) or _field(err, 3)
    return code, detail


def slots_from_answer(answer: hl7.Message, wanted: SlotFilter, limit: int) -> list[FreeSlot]:
    """The free slots an SQR^S25 lists, inside ``wanted``'s window, earliest first (pure)."""
    code, detail = _acknowledgement(answer)
    if code != "AA":
        raise SlotSourceError(f"hl7: slot query answered {code or 'no MSA'} {detail}".strip())
    found: list[FreeSlot] = []
    for segment in answer.segments("SCH") if _has(answer, "SCH") else ():
        slot_id = _field(segment, 2)
        start, end = read_time(_field(segment, 11, 4)), read_time(_field(segment, 11, 5))
        if not slot_id or start is None or end is None:
            continue
        if wanted.after <= start < wanted.before:
            found.append(FreeSlot(slot_id=slot_id, start=start, end=end))
    found.sort(key=lambda s: s.start)
    return found[:limit]


def receipt_from_answer(
    answer: hl7.Message, slot_id: str, assumed: BookingState = "proposed"
) -> BookingReceipt:
    """The hospital's answer to an SRM^S01: ``SCH-25`` says pending or booked (``assumed``
    when it says nothing)."""
    code, detail = _acknowledgement(answer)
    if code in ("AE", "AR", "CE", "CR") and detail == SLOT_TAKEN:
        raise SlotTaken(slot_id)
    if code not in ("AA", "CA"):
        raise SlotSourceError(f"hl7: booking answered {code or 'no MSA'} {detail}".strip())
    sch = answer.segment("SCH") if _has(answer, "SCH") else None
    reference = _field(sch, 2) if sch is not None else ""
    status = (_field(sch, 25) if sch is not None else "").lower()
    state: BookingState = assumed if not status else "booked" if status == "booked" else "proposed"
    if not reference:
        raise SlotSourceError("hl7: booking answered AA without SCH-2")
    return BookingReceipt(reference=reference, state=state)


def _has(message: hl7.Message, name: str) -> bool:
    return any(str(segment(0)) == name for segment in message)


def client_tls(ca: str, cert: str = "", key: str = "") -> ssl.SSLContext:
    """A client context for MLLP over TLS (TLS 1.2+, the hospital's certificate checked
    against ``ca`` and its host name); with ``cert`` and ``key``, our own for mutual TLS."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        context.load_cert_chain(cert, key or None)
    return context


class Hl7Slots:
    name = "hl7"

    def __init__(
        self,
        host: str,
        port: int,
        clock: Clock,
        *,
        facility: str = "FOLLOWUP",
        booking_state: BookingState = "proposed",
        timeout: float = 10.0,
        max_bytes: int = 1024 * 1024,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._tls = tls
        self._facility = facility
        self._booking_state = booking_state  # when SCH-25 does not say
        self._clock = clock
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._numbers = count(1)
        self._stamp = hashlib.sha256(f"{host}:{port}:{id(self)}".encode()).hexdigest()[:8]

    def _control_id(self) -> str:
        return f"FU{self._stamp}{next(self._numbers)}"

    async def _exchange(self, message: str) -> hl7.Message:
        try:
            async with asyncio.timeout(self._timeout):
                reader, writer = await asyncio.open_connection(
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls is not None else None,
                )
                try:
                    writer.write(VT + message.encode() + FS + CR)
                    await writer.drain()
                    block = await reader.readuntil(FS + CR)
                finally:
                    writer.close()
                    await writer.wait_closed()
        except ssl.SSLCertVerificationError:
            raise SlotSourceError("hl7: the hospital's certificate is not trusted") from None
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            raise SlotSourceError(f"hl7: {type(exc).__name__}") from None
        except asyncio.LimitOverrunError:
            raise SlotSourceError("hl7: answer too large") from None
        body = block.lstrip(b"\r\n").removeprefix(VT).removesuffix(FS + CR)
        try:
            return hl7.parse(body.decode("utf-8", errors="replace"))
        except Exception:  # python-hl7 raises plain exceptions for broken messages
            raise SlotSourceError("hl7: the answer is not an HL7 message") from None

    async def free_slots(self, wanted: SlotFilter, limit: int) -> Sequence[FreeSlot]:
        now = self._clock.now()
        message = slot_query(wanted, limit, self._control_id(), now, self._facility)
        return slots_from_answer(await self._exchange(message), wanted, limit)

    async def request_booking(self, request: BookingRequest) -> BookingReceipt:
        now = self._clock.now()
        message = booking_request(request, self._control_id(), now, self._facility)
        answer = await self._exchange(message)
        return receipt_from_answer(answer, request.slot.slot_id, self._booking_state)

    async def close(self) -> None:
        return None
