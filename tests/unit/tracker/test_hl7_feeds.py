"""HL7 v2 as hospitals send it: TQ1, hospital ids, S16, ids alone, partial PIDs, character
sets, XTN forms, languages, clock changes, ACK meaning; and the detector acting on them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import hl7
import pytest

from services.tracker.detection import DetectionRules, Detector
from services.tracker.hl7_siu import Rejected, SiuResult, ack, language_code, read, read_header
from services.tracker.mllp import HEAD_KEPT, Framer

ZONE = ZoneInfo("Europe/Vilnius")
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))


def msh(trigger: str, control: str, *, version: str = "2.5.1", charset: str = "") -> str:
    return (
        f"MSH|^~\\&|HIS|CLINIC|FOLLOWUP|TRACKER|20260301120000+0200||SIU^{trigger}^SIU_S12|"
        f"{control}|T|{version}||||||{charset}"
    )


def message(*segments: str) -> bytes:
    return ("\r".join(segments) + "\r").encode()


def mapped(raw: bytes | str) -> SiuResult:
    data = raw.encode() if isinstance(raw, str) else raw
    return read(data, zone=ZONE, now=NOW, department="general")


def refused(raw: bytes | str) -> Rejected:
    with pytest.raises(Rejected) as caught:
        mapped(raw)
    return caught.value


PID = "PID|1||PAT-1^^^HIS^MR"


def test_tq1_holds_the_timing_and_wins_over_sch_11() -> None:
    # The repro: SCH-11 a year early (kept for backward compatibility), TQ1 right.
    both = mapped(
        message(
            msh("S12", "T1"),
            "SCH|A2^HIS|A2^HIS|||||||||^^^20201001112600+0200",
            "TQ1|||||||20260302093000+0200|20260302100000+0200",
            PID,
        )
    ).appointment
    assert both is not None and both.start == datetime(2026, 3, 2, 9, 30, tzinfo=PLUS2)
    assert both.end == datetime(2026, 3, 2, 10, 0, tzinfo=PLUS2)
    alone = mapped(message(msh("S12", "T2"), "SCH|A3|A3", "TQ1|||||||202603020930", PID))
    assert alone.appointment is not None
    assert alone.appointment.start == datetime(2026, 3, 2, 9, 30, tzinfo=ZONE)


def test_start_falls_back_to_sch_11_then_ais_then_the_resources() -> None:
    sch = mapped(message(msh("S12", "F1"), "SCH|A|A|||||||||^^^202603020930", PID))
    ais = mapped(message(msh("S12", "F2"), "SCH|A|A", PID, "AIS|1||X|202603021000"))
    ail = mapped(message(msh("S12", "F3"), "SCH|A|A", PID, "AIL|1||R1|||202603021100"))
    starts = [
        r.appointment.start.hour for r in (sch, ais, ail) if r.appointment and r.appointment.start
    ]
    assert starts == [9, 10, 11]


def test_missing_start_names_tq1_7() -> None:
    rejected = refused(message(msh("S12", "N1"), "SCH|A|A", PID))
    assert (rejected.ack_code, rejected.location) == ("AE", "TQ1-7")


def test_hospital_ids_with_spaces_are_kept() -> None:
    event = mapped(
        message(
            msh("S12", "ID1"),
            "SCH|ID 77^HIS|ID 77^HIS|||||||||^^^202603020930",
            "PID|1||PAT 9^^^HIS^MR",
            "AIL|1||OR 4^OR 4",
            "AIP|1||DR SMITH^Smith^Ann",
        )
    ).appointment
    assert event is not None
    assert (event.appointment_id, event.patient_id) == ("ID 77", "PAT 9")
    assert (event.department, event.practitioner_id) == ("OR 4", "DR SMITH")


def test_an_id_with_a_control_character_names_the_field() -> None:
    rejected = refused(
        message(msh("S12", "ID2"), "SCH|A|A|||||||||^^^202603020930", PID, "AIL|1||OR\x074")
    )
    assert (rejected.ack_code, rejected.location) == ("AE", "AIL-3.1")
    assert "\x07" not in rejected.reason


@pytest.mark.parametrize("trigger", ["S15", "S16", "S17", "S26"])
def test_a_visit_named_by_its_id_alone(trigger: str) -> None:
    # As a national PHR's published spec sends them: SCH-1 only, no timing.
    event = mapped(message(msh(trigger, f"ID-{trigger}"), "SCH|ID123", PID)).appointment
    assert event is not None and event.start is None
    assert event.appointment_id == "ID123"
    assert event.status == {"S15": "cancelled", "S16": "cancelled", "S17": "entered-in-error"}.get(
        trigger, "noshow"
    )


def test_placer_and_filler_travel_together() -> None:
    event = mapped(
        message(msh("S12", "PF"), "SCH|P-1^EHR|F-1^HIS|||||||||^^^202603020930", PID)
    ).appointment
    assert event is not None and (event.appointment_id, event.other_ids) == ("F-1", ["P-1"])


def test_a_pid_with_the_id_alone_sends_no_contact_field() -> None:
    contact = mapped(message(msh("S14", "P1"), "SCH|A|A|||||||||^^^202603020930", PID)).contact
    assert contact is not None and contact.fields_sent == []
    assert contact.language == "und"  # the notifier's clinic default, not a forced "en"


def test_hl7_null_clears_and_a_present_field_is_sent() -> None:
    pid = 'PID|1||PAT-1^^^HIS^MR||Jonaitis^Petras||||||||""||rus'
    contact = mapped(message(msh("S14", "P2"), "SCH|A|A|||||||||^^^202603020930", pid)).contact
    assert contact is not None
    assert set(contact.fields_sent or []) == {
        "family_name",
        "given_name",
        "phone",
        "email",
        "language",
    }
    assert (contact.phone, contact.email, contact.language) == (None, None, "ru")
    assert "timezone" not in (contact.fields_sent or [])  # PID has no zone: FHIR's stays


@pytest.mark.parametrize(
    ("charset", "codec", "name"),
    [
        ("8859/13", "iso8859_13", "Žemaitė^Ūla"),
        ("8859/5", "iso8859_5", "Иванов^Пётр"),
        ("WINDOWS-1251", "cp1251", "Иванова^Мария"),
        ("8859/1", "iso8859_1", "Müller^Jörg"),
        ("UNICODE UTF-8", "utf-8", "Петров^Иван"),
        ("", "utf-8", "Георгиев^Стоян"),
    ],
)
def test_msh_18_decides_how_the_text_is_decoded(charset: str, codec: str, name: str) -> None:
    text = "\r".join(
        [msh("S12", "CS", charset=charset), "SCH|A|A|||||||||^^^202603020930", f"{PID}||{name}"]
    )
    contact = mapped(text.encode(codec)).contact
    assert contact is not None
    assert (contact.family_name, contact.given_name) == tuple(name.split("^"))


def test_undecodable_text_is_an_ae_that_still_echoes_the_control_id() -> None:
    raw = f"{msh('S12', 'LATIN')}\rSCH|A|A\r{PID}||Žemaitė\r".encode("iso8859_13")
    rejected = refused(raw)
    assert (rejected.ack_code, rejected.location) == ("AE", "MSH-18")
    answer = hl7.parse(ack(read_header(raw), code=rejected.ack_code, now=NOW, rejected=rejected))
    assert str(answer.segment("MSA")(2)) == "LATIN"
    assert str(answer.segment("MSH")(11)) == "T"  # MSH-11 echoed
    assert str(answer.segment("ERR")(2)) == "MSH^1^18"


def test_an_unknown_character_set_is_ar() -> None:
    rejected = refused(message(msh("S12", "X", charset="EBCDIC"), "SCH|A|A", PID))
    assert (rejected.ack_code, rejected.location) == ("AR", "MSH-18")


@pytest.mark.parametrize(
    ("xtn", "phone", "email"),
    [
        ("^PRN^PH^^^^^^^^^+37061234567", "+37061234567", None),
        ("^PRN^PH^^370^612^34567", "+37061234567", None),
        ("^PRN^PH^^^8^61234567", "861234567", None),
        ("(370)612-34567^PRN^PH", "(370)612-34567", None),
        ("^PRN^PH^^^^^^^^^+3705111~^PRN^CP^^^^^^^^^+37069999999", "+37069999999", None),
        (
            "^NET^Internet^ann@example.org~^PRN^PH^^^^^^^^^+37061234567",
            "+37061234567",
            "ann@example.org",
        ),
        ("ann@example.org", None, "ann@example.org"),
    ],
)
def test_every_xtn_form_and_repetition(xtn: str, phone: str | None, email: str | None) -> None:
    pid = f"PID|1||PAT-1^^^HIS^MR||A^B||||||||{xtn}"
    contact = mapped(message(msh("S12", "X1"), "SCH|A|A|||||||||^^^202603020930", pid)).contact
    assert contact is not None and (contact.phone, contact.email) == (phone, email)


def test_business_phone_when_the_home_phone_is_absent() -> None:
    pid = "PID|1||PAT-1^^^HIS^MR||A^B|||||||||^WPN^PH^^^^^^^^^+37052000000"
    contact = mapped(message(msh("S12", "X2"), "SCH|A|A|||||||||^^^202603020930", pid)).contact
    assert contact is not None and contact.phone == "+37052000000"


@pytest.mark.parametrize(
    ("code", "language"),
    [
        ("RUS", "ru"),
        ("lit", "lt"),
        ("bg-BG", "bg"),
        ("bul", "bg"),
        ("en_US", "en"),
        ("ENG", "en"),
        ("Lithuanian", "lt"),
        ("de", "de"),
        ("???", None),
    ],
)
def test_language_codes(code: str, language: str | None) -> None:
    assert language_code(code) == language


def test_pid_15_coded_with_its_system() -> None:
    pid = "PID|1||PAT-1^^^HIS^MR||||||||||||RUS^Russian^ISO6392"
    contact = mapped(message(msh("S12", "L1"), "SCH|A|A|||||||||^^^202603020930", pid)).contact
    assert contact is not None and contact.language == "ru"


def test_a_local_time_that_does_not_exist_is_refused_naming_field_and_zone() -> None:
    rejected = refused(message(msh("S12", "DST"), "SCH|A|A", "TQ1|||||||20270328033000", PID))
    assert (rejected.ack_code, rejected.error_code, rejected.location) == ("AE", "102", "TQ1-7")
    assert "Europe/Vilnius" in rejected.reason


def test_a_doubled_local_time_takes_the_first_and_is_noted() -> None:
    result = mapped(message(msh("S12", "FOLD"), "SCH|A|A", "TQ1|||||||20261025033000", PID))
    assert result.appointment is not None and result.appointment.start is not None
    assert result.appointment.start.utcoffset() == timedelta(hours=3)  # still summer time
    assert result.doubled == ("TQ1-7",)


@pytest.mark.parametrize(
    ("raw", "code", "location"),
    [
        (message(msh("S12", "V", version="2.2"), "SCH|A|A", PID), "AR", "MSH-12"),
        (message(msh("S24", "V"), "SCH|A|A", PID), "AR", "MSH-9.2"),
        (message(msh("S12", "V").replace("SIU^S12", "ORM^O01"), PID), "AR", "MSH-9.1"),
        (message(msh("S12", "V"), "SCH|A|A|||||||||^^^202603020930", "PID|1"), "AE", "PID-3.1"),
        (message(msh("S12", "V"), "SCH|A|A", "TQ1|||||||soon", PID), "AE", "TQ1-7"),
    ],
)
def test_refusals_name_the_hl7_field(raw: bytes, code: str, location: str) -> None:
    rejected = refused(raw)
    assert (rejected.ack_code, rejected.location) == (code, location)
    assert location.split(".")[0] in rejected.reason
    assert "pattern" not in rejected.reason and "regex" not in rejected.reason


def test_legacy_versions_get_err_1_too() -> None:
    raw = message(msh("S12", "OLD", version="2.3"), "SCH|A|A", PID)
    answer = hl7.parse(ack(read_header(raw), code="AE", now=NOW, rejected=refused(raw)))
    assert str(answer.segment("ERR")(1)).startswith("TQ1^1^7")
    assert str(answer.segment("MSH")(12)) == "2.3"


# --- the framer -------------------------------------------------------------------------


def test_the_framer_skips_what_lies_between_frames() -> None:
    framer = Framer(1024)
    found = framer.feed(b"\n\x0bMSH|A\x1c\r\r\n\x00\x0bMSH|B\x1c\x0bMSH|C\x1c")
    assert [body for body, _ in found] == [b"MSH|A", b"MSH|B", b"MSH|C"]
    assert framer.stray == 4


def test_the_framer_reassembles_split_frames_and_drops_an_abandoned_one() -> None:
    framer = Framer(1024)
    assert framer.feed(b"\x0bMSH|X half") == []
    assert framer.inside
    assert framer.feed(b"\x0bMSH|Y") == []  # the sender started again
    assert framer.feed(b" rest\x1c\r") == [(b"MSH|Y rest", False)]


def test_the_framer_keeps_the_head_of_an_oversized_message() -> None:
    framer = Framer(1024)
    found = framer.feed(b"\x0bMSH|BIG" + b"x" * 10_000 + b"\x1c\r\x0bMSH|NEXT\x1c\r")
    assert [(len(b), big) for b, big in found] == [(HEAD_KEPT, True), (8, False)]


# --- the detector acting on what HL7 says -----------------------------------------------

RULES = DetectionRules(no_show_grace=timedelta(minutes=15))


def test_a_cancellation_by_placer_id_alone_stops_the_no_show() -> None:
    detector = Detector(RULES)
    booked = mapped(message(msh("S12", "B1"), "SCH|P-1|F-1|||||||||^^^202603020930", PID))
    cancelled = mapped(message(msh("S15", "B2"), "SCH|P-1", PID))
    assert booked.appointment is not None and cancelled.appointment is not None
    detector.on_appointment(booked.appointment, NOW)
    detector.on_appointment(cancelled.appointment, NOW)
    assert detector.due(datetime(2026, 3, 3, tzinfo=UTC)) == []
    assert detector.patients["PAT-1"].appointments["F-1"].status == "cancelled"


def test_without_the_cancellation_the_no_show_fires() -> None:
    detector = Detector(RULES)
    booked = mapped(message(msh("S12", "B1"), "SCH|P-1|F-1|||||||||^^^202603020930", PID))
    assert booked.appointment is not None
    detector.on_appointment(booked.appointment, NOW)
    found = detector.due(datetime(2026, 3, 3, tzinfo=UTC))
    assert [d.trigger.event_id for d in found] == ["no_show:F-1"]


def test_a_backfilled_past_visit_is_recorded_not_chased() -> None:
    detector = Detector(RULES)
    old = mapped(message(msh("S12", "OLD1"), "SCH|OLD|OLD|||||||||^^^20260227093000", PID))
    assert old.appointment is not None
    assert detector.on_appointment(old.appointment, NOW) == []
    assert detector.due(NOW + timedelta(days=1)) == []
    assert "OLD" in detector.patients["PAT-1"].appointments
    # ...unless the message itself says no-show.
    noshow = mapped(message(msh("S26", "OLD2"), "SCH|OLD", PID))
    assert noshow.appointment is not None
    found = detector.on_appointment(noshow.appointment, NOW)
    assert [d.trigger.event_id for d in found] == ["no_show:OLD"]


def test_a_source_without_arrivals_gets_explicit_no_shows_only() -> None:
    detector = Detector(
        DetectionRules(
            no_show_grace=timedelta(minutes=15), explicit_no_shows_only=frozenset({"tracker.hl7"})
        )
    )
    booked = mapped(message(msh("S12", "E1"), "SCH|A|A|||||||||^^^202603020930", PID))
    assert booked.appointment is not None
    detector.on_appointment(booked.appointment, NOW)
    assert detector.due(datetime(2026, 3, 3, tzinfo=UTC)) == []


def test_adt_a04_with_the_visit_number_is_an_arrival() -> None:
    detector = Detector(RULES)
    booked = mapped(message(msh("S12", "A1"), "SCH|P-1|F-1|||||||||^^^202603020930", PID))
    adt = "MSH|^~\\&|HIS|CLINIC|FOLLOWUP|TRACKER|20260302092000+0200||ADT^A04^ADT_A01|A2|P|2.5"
    arrived = mapped(
        message(adt, "EVN|A04|20260302092000+0200", PID, "PV1|1|O|DENT||||||||||||||||F-1")
    )
    assert booked.appointment is not None and arrived.appointment is not None
    assert (arrived.appointment.status, arrived.appointment.start) == ("arrived", None)
    detector.on_appointment(booked.appointment, NOW)
    detector.on_appointment(arrived.appointment, NOW)
    assert detector.due(datetime(2026, 3, 3, tzinfo=UTC)) == []


def test_hl7_escapes_are_decoded() -> None:
    pid = "PID|1||PAT\\F\\1^^^HIS^MR||O\\T\\Brien^Ann\\X41\\"
    result = mapped(message(msh("S12", "ESC"), "SCH|A|A|||||||||^^^202603020930", pid))
    assert result.contact is not None and result.appointment is not None
    assert result.appointment.patient_id == "PAT|1"
    assert (result.contact.family_name, result.contact.given_name) == ("O&Brien", "AnnA")


def test_other_encoding_characters_from_msh_2() -> None:
    text = "\r".join(
        [
            "MSH#!@$%#HIS#CLINIC#FOLLOWUP#TRACKER#20260301120000+0200##SIU!S12#OTHER#P#2.5",
            "SCH#A-9#A-9#########!!!202603020930",
            "PID#1##PAT-9!!!HIS!MR##Doe!Jane",
        ]
    )
    result = mapped(text + "\r")
    assert result.appointment is not None and result.appointment.appointment_id == "A-9"
    assert result.contact is not None and result.contact.given_name == "Jane"
    assert result.control_id == "OTHER"


def test_the_patient_id_by_its_identifier_type() -> None:
    pid = "PID|1||123456789^^^USSSA^SS~PATID1234^5^M11^ADT1^MR"
    raw = message(msh("S12", "MR"), "SCH|A|A|||||||||^^^202603020930", pid)
    first = read(raw, zone=ZONE, now=NOW, department="general")
    chosen = read(raw, zone=ZONE, now=NOW, department="general", patient_id_type="MR")
    assert first.appointment is not None and chosen.appointment is not None
    assert (first.appointment.patient_id, chosen.appointment.patient_id) == (
        "123456789",
        "PATID1234",
    )


def test_a_backfilled_late_cancellation_is_history_not_a_trigger() -> None:
    detector = Detector(RULES)
    old = mapped(
        message(msh("S15", "OLD3"), "SCH|OLD|OLD||||PAT|||||^^^20250601093000", PID)
    ).appointment
    assert old is not None and old.cancelled_by == "patient" and old.status == "cancelled"
    assert detector.on_appointment(old, NOW) == []


def test_explicit_only_sources_still_report_late_cancellations() -> None:
    detector = Detector(
        DetectionRules(
            no_show_grace=timedelta(minutes=15), explicit_no_shows_only=frozenset({"tracker.hl7"})
        )
    )
    booked = mapped(message(msh("S12", "E2"), "SCH|A|A|||||||||^^^202603011400", PID))
    cancel = mapped(message(msh("S15", "E3"), "SCH|A|A||||PAT^Patient", PID))
    assert booked.appointment is not None and cancel.appointment is not None
    detector.on_appointment(booked.appointment, NOW)
    found = detector.on_appointment(cancel.appointment, NOW)
    assert [d.trigger.kind for d in found] == ["late_cancellation"]
