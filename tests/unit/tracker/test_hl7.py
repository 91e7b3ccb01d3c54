"""HL7 SIU -> canonical events and ACKs, without a socket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import hl7
import pytest

from services.tracker.hl7_siu import Rejected, ack, map_siu, parse_dtm, parse_message
from tests.unit.tracker.hl7_samples import siu

ZONE = ZoneInfo("Europe/Vilnius")
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def mapped(text: str):  # type: ignore[no-untyped-def]
    return map_siu(parse_message(text), zone=ZONE, now=NOW, department="general")


@pytest.mark.parametrize(
    ("trigger", "change", "status"),
    [
        ("S12", "booked", "booked"),
        ("S13", "rescheduled", "booked"),
        ("S14", "modified", "booked"),
        ("S15", "cancelled", "cancelled"),
        ("S17", "deleted", "entered-in-error"),
        ("S26", "noshow", "noshow"),
    ],
)
def test_each_siu_trigger_maps_to_a_canonical_appointment(
    trigger: str, change: str, status: str
) -> None:
    result = mapped(siu(trigger, f"M-{trigger}"))
    event = result.appointment
    assert event is not None
    assert (event.change, event.status) == (change, status)
    assert event.appointment_id == "APT-100" and event.patient_id == "PAT-1"
    assert event.start == datetime(2026, 3, 2, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    assert event.department == "DENTAL" and event.practitioner_id == "DR-7"
    assert event.event_id == f"hl7:CLINIC:M-{trigger}"
    assert event.timezone == "Europe/Vilnius"


def test_s14_with_filler_status_complete_is_fulfilled() -> None:
    event = mapped(
        siu("S14", "M1", filler_status="Complete", plan="PLAN-1", stage="S2")
    ).appointment
    assert event is not None
    assert (event.status, event.change, event.plan_id, event.stage_id) == (
        "fulfilled",
        "status_changed",
        "PLAN-1",
        "S2",
    )


def test_cancellation_by_patient_reason() -> None:
    event = mapped(siu("S15", "M1", reason="PAT^Patient request")).appointment
    assert event is not None and event.cancelled_by == "patient"
    event = mapped(siu("S15", "M2", reason="DOC^Doctor ill")).appointment
    assert event is not None and event.cancelled_by == "clinic"


def test_pid_goes_to_contact_and_death_indicator_to_patient_status() -> None:
    result = mapped(siu("S12", "M1", death="Y"))
    assert result.contact is not None
    assert result.contact.phone == "+37060000001"
    assert result.contact.email == "ona@example.org"
    assert (result.contact.family_name, result.contact.given_name) == ("Kazlauskiene", "Ona")
    assert result.contact.language == "lt"
    assert result.patient_status is not None
    assert result.patient_status.status == "deceased"
    # Appointments carry ids, never the personal data.
    assert result.appointment is not None
    assert "Ona" not in result.appointment.model_dump_json()


def test_time_without_offset_is_the_clinic_zone() -> None:
    assert parse_dtm("20260329050000", ZONE).utcoffset() == timedelta(hours=3)
    assert parse_dtm("20260328120000", ZONE).utcoffset() == timedelta(hours=2)
    assert parse_dtm("202603021015-0500", ZONE).utcoffset() == timedelta(hours=-5)
    with pytest.raises(ValueError):
        parse_dtm("yesterday", ZONE)


@pytest.mark.parametrize(
    ("text", "ack_code", "error_code"),
    [
        ("PID|1||X\r", "AR", "100"),
        (siu("S99", "M1"), "AR", "201"),
        (siu("S12", "M1").replace("SIU^S12", "ORU^R01"), "AR", "200"),
        (siu("S12", "M1", patient_id=""), "AE", "101"),
        (siu("S12", "M1", start="tomorrow"), "AE", "102"),
        (siu("S12", "M1", appointment_id="bad id!"), "AE", "102"),
    ],
)
def test_refusals_say_why(text: str, ack_code: str, error_code: str) -> None:
    with pytest.raises(Rejected) as caught:
        mapped(text)
    assert (caught.value.ack_code, caught.value.error_code) == (ack_code, error_code)
    assert "Ona" not in caught.value.reason and "+370" not in caught.value.reason


def test_ack_echoes_the_control_id_and_carries_err_when_negative() -> None:
    request = parse_message(siu("S12", "CTRL-9"))
    positive = hl7.parse(ack(request, code="AA", now=NOW))
    assert str(positive.segment("MSA")(1)) == "AA"
    assert str(positive.segment("MSA")(2)) == "CTRL-9"
    negative = hl7.parse(
        ack(request, code="AE", now=NOW, error_code="101", reason="PID-3 | missing")
    )
    assert str(negative.segment("MSA")(1)) == "AE"
    assert str(negative.segment("ERR")(3)(1)(1)) == "101"
    assert "PID-3" in str(negative.segment("ERR")(8))


def test_adt_discharge_with_death_indicator_gives_status_and_no_appointment() -> None:
    text = siu("S12", "A03-1", death="Y").replace("SIU^S12^SIU_S12", "ADT^A03^ADT_A03")
    result = mapped(text)
    assert result.appointment is None
    assert result.patient_status is not None and result.patient_status.status == "deceased"
    assert result.patient_status.effective_at == datetime(
        2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))
    )
