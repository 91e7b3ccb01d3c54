"""HL7 v2.5.1 SIU messages the clinic's scheduling system sends, and an MLLP sender.

Messages are built as text (segments joined by CR, fields escaped) and checked by parsing
them back with the ``hl7`` library in the unit tests; the sender frames each message the
MLLP way (VT ... FS CR) and waits for the receiver's ACK, refusing AE/AR.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import hl7
from hl7.mllp import open_hl7_connection

from demo.scenario import Appointment, Patient
from demo.sites import feed_names

SiuEvent = Literal["S12", "S13", "S14", "S15", "S26"]
# HL7 table 0278 (filler status) as the tracker maps it to FHIR Appointment.status.
FillerStatus = Literal["Booked", "Started", "Complete", "Cancelled", "Noshow"]

SENDING_APP = "CLINIC_SIM"
SENDING_FACILITY = "CLINIC"


def escape(value: str) -> str:
    """HL7 escape sequences for the delimiters a value may carry."""
    out = value.replace("\\", "\\E\\")
    for char, code in (("|", "\\F\\"), ("^", "\\S\\"), ("~", "\\R\\"), ("&", "\\T\\")):
        out = out.replace(char, code)
    return out.replace("\r", " ").replace("\n", " ")


def ts(moment: datetime) -> str:
    """HL7 DTM with the UTC offset, so the receiver never guesses the zone."""
    if moment.tzinfo is None:
        raise ValueError("HL7 timestamps need an aware datetime")
    return moment.strftime("%Y%m%d%H%M%S%z")


@dataclass(frozen=True)
class SiuMessage:
    control_id: str
    text: str


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from its fields by HL7 number (MSH counts the field separator as MSH-1)."""
    first = 2 if name == "MSH" else 1
    return "|".join([name, *(fields.get(n, "") for n in range(first, max(fields) + 1))])


def facilities(patient: Patient) -> tuple[str, str]:
    """(MSH-4 sending facility, PV1-3.4 point-of-care facility) as the patient's clinic
    sends them: the deployment's one clinic, or the site's own system (``demo.sites``)."""
    if patient.site is None:
        return SENDING_FACILITY, SENDING_FACILITY
    names = feed_names(patient.site)
    return names.hl7_sending_facility, names.hl7_point_of_care


def _msh(message_type: str, sent_at: datetime, control_id: str, facility: str) -> str:
    return segment(
        "MSH",
        {
            2: "^~\\&",
            3: SENDING_APP,
            4: escape(facility),
            5: "FOLLOWUP",
            6: "FOLLOWUP",
            7: ts(sent_at),
            9: message_type,
            10: control_id,
            11: "P",
            12: "2.5.1",
            15: "AL",
            16: "NE",
            18: "UNICODE UTF-8",
        },
    )


def _pid(patient: Patient, died_at: datetime | None = None) -> str:
    e = escape
    fields = {
        1: "1",
        3: f"{e(patient.patient_id)}^^^{SENDING_FACILITY}^MR",
        5: f"{e(patient.family_name)}^{e(patient.given_name)}",
        13: f"{e(patient.phone)}^PRN^CP~^NET^Internet^{e(patient.email)}",
        15: e(patient.language),
    }
    if patient.birth_date is not None:
        fields[7] = patient.birth_date.strftime("%Y%m%d")  # a child's (adults: none sent)
    if died_at is not None:
        fields |= {29: ts(died_at), 30: "Y"}  # death date and time, death indicator
    return segment("PID", fields)


def siu(
    event: SiuEvent,
    patient: Patient,
    appointment: Appointment,
    *,
    status: FillerStatus,
    sent_at: datetime,
    control_id: str,
    plan_id: str | None = None,
    cancelled_by_patient: bool = False,
) -> SiuMessage:
    """One SIU message about one appointment, with the patient (PID) and the visit (PV1)."""
    e = escape
    start, end = ts(appointment.start), ts(appointment.end)
    sending, point_of_care = facilities(patient)
    department = f"{e(appointment.department)}^^^{e(point_of_care)}"
    doctor = e(appointment.practitioner_id)
    stage = f"{e(appointment.stage_id)}^Treatment stage"
    schedule = {
        1: f"{e(appointment.appointment_id)}^{SENDING_APP}",
        2: f"{e(appointment.appointment_id)}^{SENDING_APP}",
        6: "PAT^Patient request^HL70276" if cancelled_by_patient else "",  # who cancelled
        7: stage,  # the appointment's reason: the treatment stage it serves
        9: str(appointment.minutes),
        10: "min",
        11: f"^^^{start}^{end}",
        16: doctor,
        25: status,  # filler status code (HL7 table 0278)
        26: e(plan_id) if plan_id else "",  # placer order number: the treatment plan
    }
    segments = [
        _msh(f"SIU^{event}^SIU_S12", sent_at, control_id, sending),
        segment("SCH", schedule),
        _pid(patient),
        segment("PV1", {1: "1", 2: "O", 3: department, 7: doctor}),
        segment("RGS", {1: "1", 2: "A"}),
        segment("AIS", {1: "1", 2: "A", 3: stage, 4: start, 7: str(appointment.minutes), 8: "min"}),
        segment("AIL", {1: "1", 2: "A", 3: department}),
        segment("AIP", {1: "1", 2: "A", 3: doctor, 6: start}),
    ]
    return SiuMessage(control_id=control_id, text="\r".join(segments))


def adt_register(patient: Patient, *, sent_at: datetime, control_id: str) -> SiuMessage:
    """ADT^A28 (add person information): a patient known before any visit is booked."""
    return _adt("A28", "ADT_A05", patient, sent_at, control_id)


def adt_death(
    patient: Patient, *, died_at: datetime, sent_at: datetime, control_id: str
) -> SiuMessage:
    """ADT^A03 (discharge) with the death indicator: the patient must not be contacted."""
    return _adt("A03", "ADT_A03", patient, sent_at, control_id, died_at)


def _adt(
    event: str,
    structure: str,
    patient: Patient,
    sent_at: datetime,
    control_id: str,
    died_at: datetime | None = None,
) -> SiuMessage:
    sending, point_of_care = facilities(patient)
    segments = [
        _msh(f"ADT^{event}^{structure}", sent_at, control_id, sending),
        segment("EVN", {1: event, 2: ts(sent_at)}),
        _pid(patient, died_at),
        segment(
            "PV1", {1: "1", 2: "N", 3: f"{escape(patient.department)}^^^{escape(point_of_care)}"}
        ),
    ]
    return SiuMessage(control_id=control_id, text="\r".join(segments))


class HL7Rejected(Exception):
    """The receiver answered AE/AR (or no ACK for our control id)."""


@dataclass(frozen=True)
class Ack:
    code: str
    control_id: str
    text: str


def parse_ack(raw: str) -> Ack:
    message = hl7.parse(raw)
    msa = message.segment("MSA")
    text = str(msa(3)) if len(msa) > 3 else ""
    return Ack(code=str(msa(1)), control_id=str(msa(2)), text=text)


class MllpSender:
    """One MLLP connection; sends a message, waits for its ACK. Reconnects when dropped."""

    def __init__(self, host: str, port: int, *, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        # The hl7 library is untyped: its stream reader and writer are Any here.
        self._reader: Any = None
        self._writer: Any = None
        self._lock = asyncio.Lock()

    async def send(self, message: SiuMessage) -> Ack:
        async with self._lock:
            for attempt in (1, 2):
                try:
                    return await self._send_once(message)
                except (OSError, asyncio.IncompleteReadError):
                    await self.close()
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

    async def _send_once(self, message: SiuMessage) -> Ack:
        if self._writer is None:
            self._reader, self._writer = await asyncio.wait_for(
                open_hl7_connection(self.host, self.port, encoding="utf-8"), self.timeout
            )
        self._writer.writemessage(hl7.parse(message.text))
        await self._writer.drain()
        raw = await asyncio.wait_for(self._reader.readmessage(), self.timeout)
        ack = parse_ack(str(raw))
        if ack.code not in ("AA", "CA"):
            raise HL7Rejected(f"{ack.code} for {message.control_id}: {ack.text}")
        return ack

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
