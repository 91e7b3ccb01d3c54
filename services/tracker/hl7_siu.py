"""HL7 v2 SIU (and the PID of any message) -> canonical events. Pure: text and a clock in.

Mapping (HL7 v2.5 field numbers):
- MSH-9.2 trigger: S12 booked, S13 rescheduled, S14 modified, S15 cancelled, S17 deleted,
  S26 noshow. MSH-10 control id makes the event id; MSH-7 is when it happened.
- SCH-2.1 (filler) or SCH-1.1 (placer) appointment id; SCH-11.4/11.5 start/end (else
  AIS-4 start); SCH-25 filler status (Booked, Started, Complete, Cancelled, Noshow, ...)
  refines S14; SCH-6.1 event reason "PAT"/"PATIENT" marks a cancellation by the patient.
- PID-3.1 patient id; PID-5 name, PID-13 phone/email, PID-15 language -> ContactEvent;
  PID-30 "Y" (death indicator, PID-29 death time) -> PatientStatusEvent deceased.
- ADT^A03 (discharge) with PV1-36 discharge disposition in TRANSFER_DISPOSITIONS (a
  transfer to another facility; PV1-45 discharge time) -> PatientStatusEvent transferred_out.
- AIL-3.1 or PV1-3.1 department; AIP-3.1 or PV1-7.1 practitioner.
- Optional plan link: SCH-26.1 placer order number "<plan_id>" and SCH-7.1 appointment
  reason "<stage_id>" when SCH-26 is given.
Times without an offset are the clinic's local time (configured zone).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo

import hl7
from pydantic import ValidationError

from common.codec import describe
from schemas.base import Envelope
from schemas.events import AppointmentEvent, ContactEvent, PatientStatusEvent

SOURCE = "tracker.hl7"
PatientStatus = Literal["active", "deceased", "transferred_out"]

TRIGGERS: dict[str, tuple[str, str]] = {
    "S12": ("booked", "booked"),
    "S13": ("rescheduled", "booked"),
    "S14": ("modified", "booked"),
    "S15": ("cancelled", "cancelled"),
    "S17": ("deleted", "entered-in-error"),
    "S26": ("noshow", "noshow"),
}
# HL7 table 0278 (filler status codes) -> FHIR Appointment.status
FILLER_STATUS: dict[str, str] = {
    "booked": "booked",
    "overbook": "booked",
    "pending": "pending",
    "waitlist": "waitlist",
    "started": "arrived",
    "complete": "fulfilled",
    "cancelled": "cancelled",
    "dc": "cancelled",
    "deleted": "entered-in-error",
    "noshow": "noshow",
}
PATIENT_REASONS = frozenset({"pat", "patient"})
# PV1-36 discharge disposition (HL7 table 0112, user-defined; the values most systems send
# are the NUBC UB-04 patient status codes) that mean another facility now cares for the
# patient. HL7 v2.5 suggested values: 02 another short-term general hospital, 03 skilled
# nursing facility, 04 intermediate care facility, 05 another type of institution. UB-04
# additions: 43 federal hospital, 61 swing bed, 62 inpatient rehabilitation facility,
# 63 long-term care hospital, 64 nursing facility (Medicaid), 65 psychiatric hospital,
# 66 critical access hospital, 70 another type of health care institution.
# Not transfers: 01 home, 06/08 home with home health or IV care, 07 left against advice,
# 09 admitted here, 20-42 expired (death comes from PID-30), 50/51 hospice.
TRANSFER_DISPOSITIONS = frozenset(
    {"02", "03", "04", "05", "43", "61", "62", "63", "64", "65", "66", "70"}
)
_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,4})?([+-]\d{4})?$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._:@/+-]")


class Rejected(Exception):
    """A message we cannot accept. ``ack_code`` AR (structure) or AE (content)."""

    def __init__(self, ack_code: str, error_code: str, reason: str) -> None:
        super().__init__(reason)
        self.ack_code = ack_code
        self.error_code = error_code  # HL7 table 0357
        self.reason = reason


@dataclass(frozen=True)
class SiuResult:
    message_type: str
    control_id: str
    appointment: AppointmentEvent | None
    contact: ContactEvent | None
    patient_status: PatientStatusEvent | None

    def events(self) -> list[Envelope]:
        found: list[Envelope | None] = [self.appointment, self.contact, self.patient_status]
        return [e for e in found if e is not None]


def field(message: hl7.Message, segment: str, number: int, component: int = 1, rep: int = 1) -> str:
    """One component's text, '' when the segment or field is absent."""
    try:
        value = message.extract_field(segment, 1, number, rep, component)
    except (KeyError, IndexError):
        return ""
    return str(value).strip()


def parse_dtm(value: str, zone: ZoneInfo) -> datetime:
    match = _DTM.match(value)
    if match is None:
        raise ValueError("not an HL7 date/time")
    year, month, day, hour, minute, second, offset = match.groups()
    moment = datetime(
        int(year),
        int(month or 1),
        int(day or 1),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
    )
    if offset is None:
        return moment.replace(tzinfo=zone)
    minutes = int(offset[1:3]) * 60 + int(offset[3:5])
    sign = 1 if offset[0] == "+" else -1
    return moment.replace(tzinfo=timezone(timedelta(minutes=sign * minutes)))


def safe_id(value: str) -> str:
    return _UNSAFE.sub("_", value)[:60]


def parse_message(raw: str) -> hl7.Message:
    text = raw.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    if not text.startswith("MSH"):
        raise Rejected("AR", "100", "message does not start with an MSH segment")
    try:
        return hl7.parse(text)
    except Exception as exc:  # the library raises several types for broken structure
        raise Rejected("AR", "102", f"unparseable HL7: {type(exc).__name__}") from None


def map_siu(message: hl7.Message, *, zone: ZoneInfo, now: datetime, department: str) -> SiuResult:
    """Canonical events of one SIU (or any message with a PID, for contact and status)."""
    message_code = field(message, "MSH", 9, 1)
    trigger = field(message, "MSH", 9, 2)
    control_id = field(message, "MSH", 10)
    if not control_id:
        raise Rejected("AR", "101", "MSH-10 message control id is missing")
    if message_code not in ("SIU", "ADT"):
        raise Rejected("AR", "200", f"unsupported message type {safe_id(message_code)}")
    if message_code == "SIU" and trigger not in TRIGGERS:
        raise Rejected("AR", "201", f"unsupported SIU trigger event {safe_id(trigger)}")
    patient_id = field(message, "PID", 3, 1)
    if not patient_id:
        raise Rejected("AE", "101", "PID-3 patient identifier is missing")
    occurred_at = _time(message, "MSH", 7, zone) or now
    event_key = f"hl7:{safe_id(field(message, 'MSH', 4) or 'unknown')}:{safe_id(control_id)}"
    try:
        appointment = (
            _appointment(message, trigger, patient_id, event_key, occurred_at, zone, department)
            if message_code == "SIU"
            else None
        )
        status = _patient_status(message, message_code, trigger, patient_id, occurred_at, zone)
        contact = _contact(
            message, patient_id, event_key, occurred_at, zone, status.status if status else None
        )
    except ValidationError as exc:
        raise Rejected("AE", "102", describe(exc)[0]) from None
    return SiuResult(f"{message_code}^{trigger}", control_id, appointment, contact, status)


def _patient_status(
    message: hl7.Message,
    message_code: str,
    trigger: str,
    patient_id: str,
    occurred_at: datetime,
    zone: ZoneInfo,
) -> PatientStatusEvent | None:
    """Deceased (PID-30, any message) before transferred out (ADT^A03 with PV1-36)."""
    if field(message, "PID", 30).upper() == "Y":
        effective_at = _time(message, "PID", 29, zone) or occurred_at
        return deceased(
            patient_id, source=SOURCE, occurred_at=occurred_at, effective_at=effective_at
        )
    disposition = field(message, "PV1", 36)
    if message_code == "ADT" and trigger == "A03" and disposition in TRANSFER_DISPOSITIONS:
        effective_at = _time(message, "PV1", 45, zone) or occurred_at
        return transferred_out(
            patient_id, source=SOURCE, occurred_at=occurred_at, effective_at=effective_at
        )
    return None


def deceased(
    patient_id: str, *, source: str, occurred_at: datetime, effective_at: datetime
) -> PatientStatusEvent:
    """The status of a patient who died (HL7 and FHIR alike): one fact per patient."""
    return PatientStatusEvent(
        event_id=f"patient-status:{patient_id}:deceased",
        occurred_at=occurred_at,
        source=source,
        patient_id=patient_id,
        status="deceased",
        effective_at=effective_at,
    )


def transferred_out(
    patient_id: str, *, source: str, occurred_at: datetime, effective_at: datetime
) -> PatientStatusEvent:
    """The status of a patient another organisation now cares for (HL7 and FHIR alike)."""
    moment = effective_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return PatientStatusEvent(
        # Per discharge: a patient who comes back and leaves again is a new fact.
        event_id=f"patient-status:{patient_id}:transferred_out:{moment}",
        occurred_at=occurred_at,
        source=source,
        patient_id=patient_id,
        status="transferred_out",
        effective_at=effective_at,
    )


def _time(
    message: hl7.Message, segment: str, number: int, zone: ZoneInfo, comp: int = 1
) -> datetime | None:
    value = field(message, segment, number, comp)
    if not value:
        return None
    try:
        return parse_dtm(value, zone)
    except ValueError:
        raise Rejected("AE", "102", f"{segment}-{number} is not an HL7 date/time") from None


def _appointment(
    message: hl7.Message,
    trigger: str,
    patient_id: str,
    event_key: str,
    occurred_at: datetime,
    zone: ZoneInfo,
    department: str,
) -> AppointmentEvent:
    appointment_id = field(message, "SCH", 2, 1) or field(message, "SCH", 1, 1)
    if not appointment_id:
        raise Rejected("AE", "101", "SCH-1/SCH-2 appointment identifier is missing")
    start = _time(message, "SCH", 11, zone, 4) or _time(message, "AIS", 4, zone)
    if start is None:
        raise Rejected("AE", "101", "SCH-11.4 or AIS-4 start date/time is missing")
    end = _time(message, "SCH", 11, zone, 5)
    change, status = TRIGGERS[trigger]
    filler = field(message, "SCH", 25).lower()
    if trigger == "S14" and filler in FILLER_STATUS:
        status = FILLER_STATUS[filler]
        change = "status_changed" if status != "booked" else "modified"
    cancelled_by = None
    if status == "cancelled":
        reason = field(message, "SCH", 6, 1).lower()
        cancelled_by = "patient" if reason in PATIENT_REASONS else "clinic"
    plan_id = field(message, "SCH", 26, 1) or None
    return AppointmentEvent(
        event_id=event_key,
        occurred_at=occurred_at,
        source=SOURCE,
        change=change,  # type: ignore[arg-type]
        appointment_id=appointment_id,
        patient_id=patient_id,
        start=start,
        end=end,
        timezone=zone.key,
        department=field(message, "AIL", 3, 1) or field(message, "PV1", 3, 1) or department,
        practitioner_id=field(message, "AIP", 3, 1) or field(message, "PV1", 7, 1) or None,
        status=status,  # type: ignore[arg-type]
        status_at=occurred_at,
        cancelled_by=cancelled_by,  # type: ignore[arg-type]
        plan_id=plan_id,
        stage_id=(field(message, "SCH", 7, 1) or None) if plan_id else None,
    )


def _contact(
    message: hl7.Message,
    patient_id: str,
    event_key: str,
    occurred_at: datetime,
    zone: ZoneInfo,
    status: PatientStatus | None,
) -> ContactEvent:
    phone = email = None
    for rep in range(1, 4):
        if field(message, "PID", 13, 3, rep).lower() == "internet":
            email = email or field(message, "PID", 13, 4, rep) or None
        else:
            phone = phone or field(message, "PID", 13, 1, rep) or None
    language = field(message, "PID", 15, 1).lower()
    return ContactEvent(
        event_id=f"contact:{event_key}",
        occurred_at=occurred_at,
        source=SOURCE,
        patient_id=patient_id,
        family_name=field(message, "PID", 5, 1) or None,
        given_name=field(message, "PID", 5, 2) or None,
        phone=phone,
        email=email,
        language=language if re.fullmatch(r"[a-z]{2,3}", language) else "en",
        timezone=zone.key,
        status=status or "active",
    )


def ack(
    request: hl7.Message | None,
    *,
    code: str,
    now: datetime,
    error_code: str | None = None,
    reason: str | None = None,
) -> str:
    """An original-mode ACK with MSA (and ERR when negative), stamped by the injected clock."""
    control_id = field(request, "MSH", 10) if request is not None else ""
    trigger = field(request, "MSH", 9, 2) if request is not None else ""
    sender = field(request, "MSH", 3) if request is not None else ""
    facility = field(request, "MSH", 4) if request is not None else ""
    version = (field(request, "MSH", 12) if request is not None else "") or "2.5"
    stamp = now.strftime("%Y%m%d%H%M%S%z")
    text = _escape(reason or "")
    segments = [
        f"MSH|^~\\&|FOLLOWUP|TRACKER|{sender}|{facility}|{stamp}||ACK^{trigger}^ACK|"
        f"ACK{control_id}|P|{version}",
        f"MSA|{code}|{control_id}|{text}",
    ]
    if code != "AA":
        segments.append(f"ERR|||{error_code or '207'}^{text}^HL70357|E||||{text}")
    return "\r".join(segments) + "\r"


def _escape(text: str) -> str:
    # HL7 escape sequences for the delimiters, so a reason cannot break the ACK.
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
        .replace("\r", " ")
    )[:200]
