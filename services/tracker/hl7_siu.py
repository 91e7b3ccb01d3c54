"""HL7 v2.3-2.8 SIU and ADT -> canonical events, and the ACK. Pure: bytes and a clock in.

Every field read, with its precedence, is listed in docs/integration/hl7.md; in short:
- MSH is read as ASCII first (MSH-10 control id, MSH-11 processing id, MSH-12 version,
  MSH-18 character set), so every answer echoes MSA-2 and MSH-11 whenever MSH could be read;
  the rest is decoded by MSH-18 (empty: UTF-8, which includes ASCII).
- SIU MSH-9.2 trigger: S12 booked, S13 rescheduled, S14 and S18-S23 modified, S15 and S16
  (discontinued) cancelled, S17 deleted, S26 noshow. SCH-25 filler status refines them.
- Identity: SCH-2.1 filler id, else SCH-1.1 placer id; when both are given the other one
  travels in ``other_ids``, so a later message naming either finds the same visit.
- Start: TQ1-7 > SCH-11.4 > AIS-4 > AIG-8/AIL-6/AIP-6 (from v2.5 TQ1 holds the timing and
  SCH-11 is kept for backward compatibility only). End: TQ1-8 > SCH-11.5 > start + SCH-9.
  S15/S16/S17/S26 (and S14 with an ended SCH-25) may name the visit by id alone.
- HL7 null semantics: a field left out is "not sent" (the stored value is kept), ``""`` is
  "delete" (the stored value is cleared). ContactEvent.fields_sent carries that.
Times without an offset are the clinic's local time; one that does not exist there (the
spring-forward gap) is refused naming the field and zone; a doubled one (the autumn
overlap) takes its first occurrence (fold=0) and is counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Literal, get_args
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from common.hl7_text import escape
from common.sites import SiteProfile, Sites, UnknownSite
from schemas.base import EARLIEST_YEAR, LATEST_YEAR, Envelope
from schemas.events import (
    AppointmentEvent,
    ContactEvent,
    ContactField,
    PatientStatusEvent,
    ProxyContact,
)
from services.tracker.proxies import Candidate, choose_proxy, is_minor

SOURCE = "tracker.hl7"
PatientStatus = Literal["active", "deceased", "transferred_out"]
AckCode = Literal["AA", "AE", "AR"]

# change, status
TRIGGERS: dict[str, tuple[str, str]] = {
    "S12": ("booked", "booked"),
    "S13": ("rescheduled", "booked"),
    "S14": ("modified", "booked"),
    "S15": ("cancelled", "cancelled"),
    "S16": ("cancelled", "cancelled"),  # discontinue: no further occurrence takes place
    "S17": ("deleted", "entered-in-error"),
    "S18": ("modified", "booked"),  # S18-S23: a service or resource added/changed/removed
    "S19": ("modified", "booked"),
    "S20": ("modified", "booked"),
    "S21": ("modified", "booked"),
    "S22": ("modified", "booked"),
    "S23": ("modified", "booked"),
    "S26": ("noshow", "noshow"),
}
# Triggers that end or replace a visit: the id alone names it.
BY_ID_ALONE = frozenset({"S15", "S16", "S17", "S26"})
ADT_ARRIVALS = frozenset({"A01", "A04"})
# HL7 table 0278 (filler status codes, plus spellings vendors send) -> FHIR status
FILLER_STATUS: dict[str, str] = {
    "booked": "booked",
    "scheduled": "booked",
    "overbook": "booked",
    "pending": "pending",
    "waitlist": "waitlist",
    "started": "arrived",
    "arrived": "arrived",
    "checkedin": "checked-in",
    "checked in": "checked-in",
    "complete": "fulfilled",
    "completed": "fulfilled",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "dc": "cancelled",
    "deleted": "entered-in-error",
    "noshow": "noshow",
    "no show": "noshow",
}
ENDED = frozenset({"arrived", "checked-in", "fulfilled", "cancelled", "noshow", "entered-in-error"})
PATIENT_REASONS = frozenset({"pat", "patient"})
VERSIONS = frozenset(
    {"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2"}
)
# MSH-18 (HL7 table 0211, and the names Windows-based systems send) -> Python codec.
# UTF-16/32 cannot be framed by MLLP's single-byte markers, so they are not here.
CHARSETS: dict[str, str] = {
    "": "utf-8",
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    **{f"8859/{n}": f"iso8859_{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16)},
    "ISO IR100": "iso8859_1",
    "ISO IR101": "iso8859_2",
    "ISO IR109": "iso8859_3",
    "ISO IR110": "iso8859_4",
    "ISO IR144": "iso8859_5",
    "ISO IR127": "iso8859_6",
    "ISO IR126": "iso8859_7",
    "ISO IR138": "iso8859_8",
    "ISO IR148": "iso8859_9",
    "WINDOWS-1250": "cp1250",
    "WINDOWS-1251": "cp1251",
    "WINDOWS-1252": "cp1252",
    "WINDOWS-1257": "cp1257",
    "CP1251": "cp1251",
    "CP1257": "cp1257",
    "KOI8-R": "koi8_r",
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
    "KS X 1001": "euc_kr",
}
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
# ISO 639-2/B, 639-2/T, 639-3 codes and English names -> ISO 639-1, the templates' codes.
_LANGUAGES = {
    "en": "eng english",
    "ru": "rus russian",
    "bg": "bul bulgarian",
    "lt": "lit lithuanian",
    "lv": "lav latvian",
    "et": "est ekk estonian",
    "pl": "pol polish",
    "uk": "ukr ukrainian",
    "be": "bel belarusian",
    "de": "deu ger german",
    "fr": "fra fre french",
    "es": "spa spanish",
    "it": "ita italian",
    "pt": "por portuguese",
    "nl": "nld dut dutch",
    "cs": "ces cze czech",
    "sk": "slk slo slovak",
    "sl": "slv slovenian",
    "hr": "hrv croatian",
    "sr": "srp serbian",
    "ro": "ron rum romanian",
    "hu": "hun hungarian",
    "fi": "fin finnish",
    "sv": "swe swedish",
    "no": "nor norwegian",
    "nb": "nob",
    "da": "dan danish",
    "el": "ell gre greek",
    "tr": "tur turkish",
    "ar": "ara arabic",
    "he": "heb hebrew",
    "zh": "zho chi chinese",
    "ja": "jpn japanese",
    "ko": "kor korean",
    "hi": "hin hindi",
    "vi": "vie vietnamese",
    "kk": "kaz kazakh",
    "hy": "hye arm armenian",
    "ka": "kat geo georgian",
    "az": "aze azerbaijani",
    "mk": "mkd mac macedonian",
    "sq": "sqi alb albanian",
}
LANGUAGE_CODES = {alias: code for code, names in _LANGUAGES.items() for alias in names.split()}
UNDETERMINED = "und"  # ISO 639-2: no template matches, so the notifier uses the clinic's default
_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,4})?([+-]\d{4})?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_EMAIL_EQUIPMENT = frozenset({"internet", "x.400"})
NULL = '""'
MAX_ID = 128


class Rejected(Exception):
    """A message we cannot accept: ``ack_code`` AE (fix the message) or AR (resend later, or
    not for us), an HL7 table 0357 ``error_code``, and the HL7 ``location`` (``TQ1-7``)."""

    def __init__(
        self, ack_code: AckCode, error_code: str, reason: str, location: str | None = None
    ) -> None:
        super().__init__(reason)
        self.ack_code: AckCode = ack_code
        self.error_code = error_code
        self.reason = reason
        self.location = location


# --- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """What MSH says, read as ASCII before the rest is decoded (MSH itself is ASCII)."""

    fields: tuple[str, ...]  # fields[n] is MSH-n; fields[1] the field separator

    def get(self, number: int, component: int = 1) -> str:
        if number >= len(self.fields):
            return ""
        encoding = self.fields[2] if len(self.fields) > 2 else "^~\\&"
        value = self.fields[number].split(encoding[1:2] or "~")[0]
        parts = value.split(encoding[0:1] or "^")
        return parts[component - 1].strip() if component <= len(parts) else ""

    @property
    def control_id(self) -> str:
        return self.get(10)


def read_header(raw: bytes) -> Header | None:
    """MSH as text, or None when the block does not start with one."""
    start = raw.lstrip(b"\r\n\t ")
    if not start.startswith(b"MSH") or len(start) < 8:
        return None
    line = re.split(rb"[\r\n]", start, maxsplit=1)[0].decode("ascii", "replace")
    if len(line) < 8:
        return None
    separator = line[3]
    parts = line.split(separator)
    # MSH-1 is the separator itself, so MSH-n is parts[n - 1].
    return Header(fields=("MSH", separator, *parts[1:]))


def decode(raw: bytes, header: Header) -> str:
    """The message as text, decoded by MSH-18."""
    declared = header.get(18).upper()
    codec = CHARSETS.get(declared)
    if codec is None:
        raise Rejected("AR", "203", "MSH-18 character set is not supported", "MSH-18")
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        if declared:
            raise Rejected("AE", "102", f"text is not valid {declared}", "MSH-18") from None
        raise Rejected(
            "AE", "102", "text is not UTF-8 and MSH-18 names no character set", "MSH-18"
        ) from None


class Message:
    """One parsed message: segments split by the MSH-2 encoding characters, unescaped."""

    def __init__(self, text: str) -> None:
        lines = [s for s in re.split(r"\r\n|\r|\n", text.strip("\r\n\x00 ")) if s.strip()]
        if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
            raise Rejected("AE", "100", "message does not start with an MSH segment", "MSH")
        self.field_separator = lines[0][3]
        encoding = lines[0][4:8].split(self.field_separator)[0]
        encoding = (encoding + "^~\\&")[:4] if len(encoding) < 4 else encoding[:4]
        self.component, self.repetition = encoding[0], encoding[1]
        self.escape, self.subcomponent = encoding[2], encoding[3]
        self.segments: list[list[str]] = []
        # The first segment of each name: the mapping asks for fields by segment name dozens
        # of times a message, and a scan per lookup was a tenth of the MLLP listener's time.
        self._first: dict[str, list[str]] = {}
        for line in lines:
            parts = line.split(self.field_separator)
            if parts[0] == "MSH":
                parts = ["MSH", self.field_separator, *parts[1:]]
            self.segments.append(parts)
            self._first.setdefault(parts[0], parts)

    def segment(self, name: str) -> list[str] | None:
        return self._first.get(name)

    def raw(self, name: str, number: int) -> str | None:
        """The field as sent (None: absent), all repetitions."""
        seg = self.segment(name)
        if seg is None or number >= len(seg) or seg[number] == "":
            return None
        return seg[number]

    def is_null(self, name: str, number: int) -> bool:
        return self.raw(name, number) == NULL

    def repetitions(self, name: str, number: int) -> list[str]:
        value = self.raw(name, number)
        if value is None or value == NULL:
            return []
        if name == "MSH" and number == 2:
            return [value]
        return value.split(self.repetition)

    def get(self, name: str, number: int, component: int = 1, rep: int = 1) -> str:
        """One component's text (first subcomponent, unescaped), '' when absent or null."""
        reps = self.repetitions(name, number)
        if rep > len(reps):
            return ""
        return self.component_of(reps[rep - 1], component)

    def component_of(self, value: str, component: int) -> str:
        parts = value.split(self.component)
        if component > len(parts):
            return ""
        text = parts[component - 1].split(self.subcomponent)[0]
        return "" if text == NULL else self.unescape(text).strip()

    def unescape(self, text: str) -> str:
        if self.escape not in text:
            return text
        e = re.escape(self.escape)
        table = {
            "F": self.field_separator,
            "S": self.component,
            "T": self.subcomponent,
            "R": self.repetition,
            "E": self.escape,
        }

        def one(match: re.Match[str]) -> str:
            code = match.group(1)
            if code in table:
                return table[code]
            if code.startswith("X") and re.fullmatch(r"X([0-9A-Fa-f]{2})+", code):
                return bytes.fromhex(code[1:]).decode("latin-1")
            return " " if code == ".br" else ""

        return re.sub(f"{e}([^{e}]*){e}", one, text)


# --- values ----------------------------------------------------------------------------


@dataclass
class Reading:
    """What one message needs to be read: the clinic's zone, the defaults, and what the
    reading noticed (doubled local times, for the metric)."""

    zone: ZoneInfo
    now: datetime
    department: str
    # PID-3.5 identifier type whose repetition is the patient id (e.g. MR); empty: the first.
    patient_id_type: str = ""
    doubled: list[str] = field(default_factory=list)


def parse_dtm(value: str, zone: ZoneInfo) -> datetime:
    """An HL7 DTM/TS; without an offset it is local time in ``zone`` (first occurrence when
    doubled). Raises ValueError when it is not a date/time, NonexistentLocalTime in a gap."""
    match = _DTM.match(value.split("&")[0].split("^")[0].strip())
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
    if offset is not None:
        minutes = int(offset[1:3]) * 60 + int(offset[3:5])
        sign = 1 if offset[0] == "+" else -1
        return moment.replace(tzinfo=timezone(timedelta(minutes=sign * minutes)))
    local = moment.replace(tzinfo=zone)
    if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != moment:
        raise NonexistentLocalTime(zone.key)
    return local  # fold=0: the first of a doubled hour


def is_doubled(moment: datetime) -> bool:
    """A local time the autumn change shows twice (only for zone-aware, offset-less times)."""
    if not isinstance(moment.tzinfo, ZoneInfo):
        return False
    return moment.replace(fold=0).utcoffset() != moment.replace(fold=1).utcoffset()


class NonexistentLocalTime(ValueError):
    pass


def _time(
    message: Message, reading: Reading, name: str, number: int, comp: int = 1
) -> datetime | None:
    value = message.get(name, number, comp)
    if not value:
        return None
    where = f"{name}-{number}" + (f".{comp}" if comp > 1 else "")
    try:
        moment = parse_dtm(value, reading.zone)
    except NonexistentLocalTime:
        raise Rejected(
            "AE", "102", f"{where} local time does not exist in {reading.zone.key}", where
        ) from None
    except ValueError:
        raise Rejected("AE", "102", f"{where} is not an HL7 date/time", where) from None
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        # The contracts refuse these too; said here, the sender hears the HL7 field.
        raise Rejected(
            "AE", "102", f"{where} year outside {EARLIEST_YEAR}..{LATEST_YEAR}", where
        ) from None
    if isinstance(moment.tzinfo, ZoneInfo):
        if is_doubled(moment):
            reading.doubled.append(where)
        # As a fixed offset: Python compares an ambiguous zone time unequal to every other
        # zone's (PEP 495), and the offset is what was decided.
        offset = moment.utcoffset()
        assert offset is not None
        moment = moment.astimezone(timezone(offset))
    return moment


def hospital_id(value: str, where: str) -> str:
    """An id as the hospital spells it: spaces allowed, control characters and excess
    length refused (naming the field)."""
    if _CONTROL.search(value):
        raise Rejected("AE", "102", f"{where} contains a control character", where)
    if len(value) > MAX_ID:
        raise Rejected("AE", "102", f"{where} is longer than {MAX_ID} characters", where)
    return value


def _optional_id(message: Message, name: str, number: int, comp: int = 1) -> str | None:
    value = message.get(name, number, comp)
    where = f"{name}-{number}.{comp}"
    return hospital_id(value, where) if value else None


def language_code(value: str) -> str | None:
    """ISO 639-1/2/3, a BCP-47 tag or an English name -> ISO 639-1 where one exists."""
    text = value.strip().lower().replace("_", "-")
    if not text:
        return None
    primary = text.split("-")[0]
    if primary in LANGUAGE_CODES:
        return LANGUAGE_CODES[primary]
    if len(primary) == 2 and primary.isascii() and primary.isalpha():
        return primary
    if text in LANGUAGE_CODES:
        return LANGUAGE_CODES[text]
    if len(primary) == 3 and primary.isascii() and primary.isalpha():
        return primary
    return None


# --- mapping ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SiuResult:
    message_type: str
    control_id: str
    appointment: AppointmentEvent | None
    contact: ContactEvent | None
    patient_status: PatientStatusEvent | None
    doubled: tuple[str, ...] = ()

    def events(self) -> list[Envelope]:
        found: list[Envelope | None] = [self.appointment, self.contact, self.patient_status]
        return [e for e in found if e is not None]


def read(
    raw: bytes,
    *,
    zone: ZoneInfo,
    now: datetime,
    department: str,
    patient_id_type: str = "",
    sites: Sites | None = None,
) -> SiuResult:
    """Bytes of one message -> its canonical events. Raises Rejected.

    With a sites file the message is read in its site's zone and default department, and
    its appointment names the site (MSH-4 sending facility, else PV1-3.4 facility)."""
    header = read_header(raw)
    if header is None:
        raise Rejected("AE", "100", "message does not start with an MSH segment", "MSH")
    message = Message(decode(raw, header))
    site = site_of(message, sites) if sites is not None else None
    if site is not None:
        zone, department = site.zone, site.default_department or department
    reading = Reading(zone=zone, now=now, department=department, patient_id_type=patient_id_type)
    result = map_message(message, reading)
    if site is not None and result.appointment is not None:
        appointment = result.appointment.model_copy(update={"site": site.id})
        result = replace(result, appointment=appointment)
    return result


def site_of(message: Message, sites: Sites) -> SiteProfile | None:
    """The site the message is about: MSH-4.1 sending facility, else PV1-3.4 (the point of
    care's facility); a name no site claims is an AE naming the field."""
    try:
        return sites.attribute(
            [("MSH-4", message.get("MSH", 4, 1)), ("PV1-3.4", message.get("PV1", 3, 4))]
        )
    except UnknownSite as exc:
        raise Rejected("AE", "204", f"{exc.field} names no configured site", exc.field) from None


def patient_identifier(message: Message, wanted_type: str) -> str:
    """PID-3.1 of the repetition whose PID-3.5 identifier type is ``wanted_type``, else of
    the first repetition (a feed that sends MR~SS keeps its record number as the key)."""
    if wanted_type:
        for value in message.repetitions("PID", 3):
            if message.component_of(value, 5).upper() == wanted_type.upper():
                found = message.component_of(value, 1)
                if found:
                    return found
    return message.get("PID", 3, 1)


def map_message(message: Message, reading: Reading) -> SiuResult:
    message_code = message.get("MSH", 9, 1).upper()
    trigger = message.get("MSH", 9, 2).upper()
    control_id = message.get("MSH", 10)
    if not control_id:
        raise Rejected("AE", "101", "MSH-10 message control id is missing", "MSH-10")
    version = message.get("MSH", 12, 1)
    if version and version not in VERSIONS:
        raise Rejected("AR", "203", "MSH-12 version is not supported (2.3-2.8)", "MSH-12")
    if message_code not in ("SIU", "ADT"):
        raise Rejected("AR", "200", "MSH-9.1 message type is not supported", "MSH-9.1")
    if message_code == "SIU" and trigger not in TRIGGERS:
        raise Rejected("AR", "201", "MSH-9.2 SIU trigger event is not supported", "MSH-9.2")
    if message_code == "ADT" and not trigger:
        raise Rejected("AE", "101", "MSH-9.2 trigger event is missing", "MSH-9.2")
    patient_id = patient_identifier(message, reading.patient_id_type)
    if not patient_id:
        raise Rejected("AE", "101", "PID-3.1 patient identifier is missing", "PID-3.1")
    hospital_id(patient_id, "PID-3.1")
    occurred_at = _time(message, reading, "MSH", 7) or reading.now
    facility = message.get("MSH", 4) or "unknown"
    event_key = f"hl7:{facility}:{control_id}"
    hospital_id(event_key, "MSH-10")
    try:
        appointment = None
        if message_code == "SIU":
            appointment = _appointment(
                message, reading, trigger, patient_id, event_key, occurred_at
            )
        elif trigger in ADT_ARRIVALS:
            appointment = _adt_arrival(message, reading, patient_id, event_key, occurred_at)
        status = _patient_status(message, reading, message_code, trigger, patient_id, occurred_at)
        born = birth_date(message)
        if status is None and born is not None and is_minor(born, occurred_at.date()):
            # For the scheduler's rule on children who were not brought; an adult's birth
            # date never leaves followup.contacts (minimum data).
            status = PatientStatusEvent(
                event_id=f"patient-status:{event_key}",
                occurred_at=occurred_at,
                source=SOURCE,
                patient_id=patient_id,
                status="active",
                effective_at=occurred_at,
                birth_date=born,
                # HL7 leaves out what it does not send: no news of the status (a deceased
                # patient's later SIU must not make them contactable again).
                fields_sent=["birth_date"],
            )
        contact = _contact(
            message,
            reading,
            patient_id,
            event_key,
            occurred_at,
            # HL7 never says erased (only the erasure API does); a contact cannot be.
            status.status if status and status.status != "erased" else None,
        )
    except ValidationError as exc:
        # A contract rule the mapping did not foresee: name the model's field, never a value.
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        raise Rejected("AE", "102", f"{where} is not valid", where) from None
    return SiuResult(
        f"{message_code}^{trigger}",
        control_id,
        appointment,
        contact,
        status,
        tuple(reading.doubled),
    )


def _appointment(
    message: Message,
    reading: Reading,
    trigger: str,
    patient_id: str,
    event_key: str,
    occurred_at: datetime,
) -> AppointmentEvent:
    filler = _optional_id(message, "SCH", 2)
    placer = _optional_id(message, "SCH", 1)
    appointment_id = filler or placer
    if appointment_id is None:
        raise Rejected("AE", "101", "SCH-2.1 filler and SCH-1.1 placer ids are missing", "SCH-2.1")
    change, status = TRIGGERS[trigger]
    filler_status = FILLER_STATUS.get(message.get("SCH", 25).lower())
    if filler_status is not None and trigger not in BY_ID_ALONE:
        if trigger in ("S12", "S13") and filler_status in ENDED:
            status = filler_status  # a load of past visits: S12 "Complete"
        elif trigger not in ("S12", "S13"):
            status = filler_status
            change = "status_changed" if status != "booked" else "modified"
    start = (
        _time(message, reading, "TQ1", 7)
        or _time(message, reading, "SCH", 11, 4)
        or _time(message, reading, "AIS", 4)
        or _time(message, reading, "AIG", 8)
        or _time(message, reading, "AIL", 6)
        or _time(message, reading, "AIP", 6)
    )
    if start is None and status not in ENDED:
        raise Rejected("AE", "101", "TQ1-7 (or SCH-11.4, AIS-4) start is missing", "TQ1-7")
    end = _time(message, reading, "TQ1", 8) or _time(message, reading, "SCH", 11, 5)
    if end is None and start is not None:
        end = _end_from_duration(message, start)
    if end is not None and start is not None and end < start:
        raise Rejected("AE", "102", "TQ1-8 (or SCH-11.5) end is before the start", "TQ1-8")
    cancelled_by = None
    if status == "cancelled":
        reason = message.get("SCH", 6, 1).lower()
        # No reason given: nobody is known to have cancelled (never a clinic cancellation,
        # which would open a rebooking case).
        if reason:
            cancelled_by = "patient" if reason in PATIENT_REASONS else "clinic"
    plan_id = _optional_id(message, "SCH", 26)
    department = (
        _optional_id(message, "AIL", 3)
        or _optional_id(message, "PV1", 3)
        or hospital_id(reading.department, "department")
    )
    return AppointmentEvent(
        event_id=event_key,
        occurred_at=occurred_at,
        source=SOURCE,
        change=change,  # type: ignore[arg-type]
        appointment_id=appointment_id,
        other_ids=[placer] if filler and placer and placer != filler else [],
        patient_id=patient_id,
        start=start,
        end=end,
        timezone=reading.zone.key,
        department=department,
        practitioner_id=_optional_id(message, "AIP", 3) or _optional_id(message, "PV1", 7),
        status=status,  # type: ignore[arg-type]
        status_at=occurred_at,
        cancelled_by=cancelled_by,  # type: ignore[arg-type]
        plan_id=plan_id,
        stage_id=_optional_id(message, "SCH", 7) if plan_id else None,
    )


def _end_from_duration(message: Message, start: datetime) -> datetime | None:
    """SCH-9 duration in SCH-10 units (default minutes)."""
    amount = message.get("SCH", 9)
    if not amount.isdigit():
        return None
    unit = (message.get("SCH", 10) or "MIN").upper()
    per = {"S": 1, "SEC": 1, "MIN": 60, "M": 60, "H": 3600, "HR": 3600, "HOUR": 3600}.get(unit)
    return start + timedelta(seconds=int(amount) * per) if per else None


def _adt_arrival(
    message: Message, reading: Reading, patient_id: str, event_key: str, occurred_at: datetime
) -> AppointmentEvent | None:
    """ADT A01/A04 naming the visit in PV1-19 (as systems whose visit number is the
    appointment's filler id send): an arrival by id alone. Without PV1-19, PID only."""
    visit = _optional_id(message, "PV1", 19)
    if visit is None:
        return None
    arrived_at = (
        _time(message, reading, "PV1", 44) or _time(message, reading, "EVN", 6) or occurred_at
    )
    return AppointmentEvent(
        event_id=event_key,
        occurred_at=occurred_at,
        source=SOURCE,
        change="status_changed",
        appointment_id=visit,
        patient_id=patient_id,
        start=None,
        timezone=reading.zone.key,
        department=_optional_id(message, "PV1", 3) or reading.department,
        status="arrived",
        status_at=arrived_at,
    )


def _patient_status(
    message: Message,
    reading: Reading,
    message_code: str,
    trigger: str,
    patient_id: str,
    occurred_at: datetime,
) -> PatientStatusEvent | None:
    """Deceased (PID-30, any message) before transferred out (ADT^A03 with PV1-36)."""
    if message.get("PID", 30).upper() == "Y":
        effective_at = _time(message, reading, "PID", 29) or occurred_at
        return deceased(
            patient_id, source=SOURCE, occurred_at=occurred_at, effective_at=effective_at
        )
    disposition = message.get("PV1", 36)
    if message_code == "ADT" and trigger == "A03" and disposition in TRANSFER_DISPOSITIONS:
        effective_at = _time(message, reading, "PV1", 45) or occurred_at
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


@dataclass(frozen=True)
class Telecom:
    phone: str | None
    email: str | None
    phone_sent: bool
    email_sent: bool


def telecom(message: Message, number: int) -> Telecom:
    """Phones and emails of PID-13 (or PID-14), every XTN form, every repetition.

    A phone: XTN-12 unformatted, else +XTN-5 XTN-6 XTN-7 (country, area, local), else
    XTN-1; a cell phone (XTN-3 CP) wins over the others. An email: XTN-4 (or an XTN-1 with
    an @) of a NET/Internet repetition. ``""`` clears both; a PID-13 with only phones leaves
    the stored email alone (and the other way round)."""
    if message.is_null("PID", number):
        return Telecom(None, None, True, True)
    phones: list[tuple[int, str]] = []
    email = None
    email_sent = False
    for value in message.repetitions("PID", number):
        use = message.component_of(value, 2).upper()
        equipment = message.component_of(value, 3).lower()
        first = message.component_of(value, 1)
        if equipment in _EMAIL_EQUIPMENT or use == "NET" or ("@" in first and not equipment):
            email_sent = True
            email = email or message.component_of(value, 4) or (first if "@" in first else None)
            continue
        country, area, local = (message.component_of(value, n) for n in (5, 6, 7))
        composed = ""
        if local:
            composed = (f"+{country.lstrip('+')}" if country else "") + area + local
            extension = message.component_of(value, 8)
            composed += f" ext. {extension}" if extension else ""
        phone = message.component_of(value, 12) or composed or first
        if phone:
            phones.append((0 if equipment == "cp" else 1, phone))
    phones.sort(key=lambda p: p[0])
    best = phones[0][1] if phones else None
    return Telecom(best, email, bool(phones), email_sent)


def _contact(
    message: Message,
    reading: Reading,
    patient_id: str,
    event_key: str,
    occurred_at: datetime,
    status: PatientStatus | None,
) -> ContactEvent:
    sent: list[ContactField] = []
    if message.raw("PID", 5) is not None:
        sent += ["family_name", "given_name"]
    home = telecom(message, 13)
    if message.raw("PID", 14) is not None:
        # The business number (PID-14) stands in for what the home one (PID-13) lacks;
        # some systems (a national PHR among them) send the email there.
        work = telecom(message, 14)
        if not home.phone_sent:
            home = Telecom(work.phone, home.email, work.phone_sent, home.email_sent)
        if not home.email_sent:
            home = Telecom(home.phone, work.email, home.phone_sent, work.email_sent)
    if home.phone_sent:
        sent.append("phone")
    if home.email_sent:
        sent.append("email")
    language = UNDETERMINED
    if message.raw("PID", 15) is not None:
        sent.append("language")
        language = next(
            (
                code
                for comp in (1, 4, 2)
                if (code := language_code(message.get("PID", 15, comp))) is not None
            ),
            UNDETERMINED,
        )
    if status is not None or message.get("PID", 30).upper() == "N":
        sent.append("status")
    proxy = None
    if message.raw("PID", 7) is not None:
        sent.append("birth_date")
    if any(segment[0] == "NK1" for segment in message.segments):
        sent.append("proxy")  # NK1 sent: its proxy (or none) is news
        proxy = _proxy(message, occurred_at)
    return ContactEvent(
        event_id=f"contact:{event_key}",
        occurred_at=occurred_at,
        source=SOURCE,
        patient_id=patient_id,
        family_name=_text(message.get("PID", 5, 1)),
        given_name=_text(message.get("PID", 5, 2)),
        phone=_text(home.phone or ""),
        email=_text(home.email or ""),
        language=language,
        timezone=reading.zone.key,
        status=status or "active",
        proxy=proxy,
        birth_date=birth_date(message),
        fields_sent=sent,
    )


def _proxy(message: Message, occurred_at: datetime) -> ProxyContact | None:
    """NK1 segments: NK1-2 name, NK1-3 relationship (table 0063), NK1-5 phone (XTN), NK1-7
    contact role; a guardian or parent of a minor (PID-7), else a proxy an adult named."""
    candidates = []
    for segment in message.segments:
        if segment[0] != "NK1":
            continue

        def field(number: int, component: int = 1, seg: list[str] = segment) -> str:
            value = seg[number] if number < len(seg) else ""
            return message.component_of(value.split(message.repetition)[0], component)

        phone = field(5, 12) or field(5, 1)
        email = field(5, 4) if "@" in field(5, 4) else None
        candidates.append(
            Candidate(
                [field(3, 1), field(7, 1)],
                _text(field(2, 2)),
                _text(field(2, 1)),
                _text(phone) if phone and "@" not in phone else None,
                email,
            )
        )
    return choose_proxy(candidates, minor=is_minor(birth_date(message), occurred_at.date()))


def birth_date(message: Message) -> date | None:
    """PID-7 (DTM: YYYYMMDD, often with a time after it); None when absent or no date.
    A birth date that is not one is left out, not refused: the visit matters more."""
    birth = message.get("PID", 7)
    if len(birth) < 8 or not birth[:8].isdigit():
        return None
    try:
        born = date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
    except ValueError:
        return None
    return born if EARLIEST_YEAR <= born.year <= LATEST_YEAR else None


def _text(value: str) -> str | None:
    return _CONTROL.sub(" ", value).strip()[:200] or None


# --- answering -------------------------------------------------------------------------

ALL_CONTACT_FIELDS: tuple[str, ...] = get_args(ContactField)


def ack(
    header: Header | None,
    *,
    code: AckCode,
    now: datetime,
    rejected: Rejected | None = None,
) -> str:
    """An original-mode ACK: MSA-2 and MSH-11 echoed whenever MSH could be read; ERR names
    the HL7 field (ERR-2 in v2.5+, ERR-1 before) and the table 0357 code (ERR-3)."""
    get = header.get if header is not None else (lambda number, component=1: "")
    control_id = _escape(get(10))
    version = get(12) or "2.5"
    processing = get(11) or "P"
    stamp = now.strftime("%Y%m%d%H%M%S%z")
    segments = [
        f"MSH|^~\\&|{_escape(get(5)) or 'FOLLOWUP'}|{_escape(get(6)) or 'TRACKER'}|"
        f"{_escape(get(3))}|{_escape(get(4))}|{stamp}||ACK^{_escape(get(9, 2))}^ACK|"
        f"ACK{control_id}|{_escape(processing)}|{_escape(version)}",
    ]
    if rejected is None:
        segments.append(f"MSA|{code}|{control_id}")
    else:
        text = _escape(rejected.reason)
        segments.append(f"MSA|{code}|{control_id}|{text}")
        location = _location(rejected.location)
        error = f"{rejected.error_code}^{_ERROR_NAMES.get(rejected.error_code, '')}^HL70357"
        legacy = version in ("2.3", "2.3.1", "2.4")
        err1 = f"{location}^{rejected.error_code}&{text}&HL70357" if legacy else ""
        segments.append(f"ERR|{err1}|{location}|{error}|E||||{text}")
    return "\r".join(segments) + "\r"


_ERROR_NAMES = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "207": "Application internal error",
}


def _location(where: str | None) -> str:
    """``TQ1-7`` -> ERL ``TQ1^1^7``; ``AIL-3.1`` -> ``AIL^1^3^^1``."""
    match = re.fullmatch(r"([A-Z][A-Z0-9]{2})(?:-(\d+)(?:\.(\d+))?)?", where or "")
    if match is None:
        return ""
    segment, number, component = match.groups()
    if number is None:
        return f"{segment}^1"
    return f"{segment}^1^{number}" + (f"^^{component}" if component else "")


def _escape(text: str) -> str:
    # So a reason cannot break the ACK; bounded, as ERR and MSA texts are kept short.
    return escape(text)[:200]
