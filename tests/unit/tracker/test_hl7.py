"""HL7 SIU -> canonical events and ACKs, without a socket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import hl7
import pytest

from services.tracker.hl7_siu import (
    TRANSFER_DISPOSITIONS,
    Rejected,
    ack,
    parse_dtm,
    read,
    read_header,
)
from tests.unit.tracker.hl7_samples import adt_a03, siu

ZONE = ZoneInfo("Europe/Vilnius")
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def mapped(text: str):  # type: ignore[no-untyped-def]
    return read(text.encode(), zone=ZONE, now=NOW, department="general")


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
    # No reason: nobody known to have cancelled, so no clinic_cancellation case either.
    event = mapped(siu("S15", "M3")).appointment
    assert event is not None and event.status == "cancelled" and event.cancelled_by is None


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
        ("PID|1||X\r", "AE", "100"),
        (siu("S99", "M1"), "AR", "201"),
        (siu("S12", "M1").replace("SIU^S12", "ORU^R01"), "AR", "200"),
        (siu("S12", "M1", patient_id=""), "AE", "101"),
        (siu("S12", "M1", start="tomorrow"), "AE", "102"),
        (siu("S12", "M1", appointment_id="bad\x01id"), "AE", "102"),
    ],
)
def test_refusals_say_why(text: str, ack_code: str, error_code: str) -> None:
    with pytest.raises(Rejected) as caught:
        mapped(text)
    assert (caught.value.ack_code, caught.value.error_code) == (ack_code, error_code)
    assert "Ona" not in caught.value.reason and "+370" not in caught.value.reason


def test_ack_echoes_the_control_id_and_carries_err_when_negative() -> None:
    request = read_header(siu("S12", "CTRL-9").encode())
    positive = hl7.parse(ack(request, code="AA", now=NOW))
    assert str(positive.segment("MSA")(1)) == "AA"
    assert str(positive.segment("MSA")(2)) == "CTRL-9"
    refusal = Rejected("AE", "101", "PID-3 | missing", "PID-3")
    negative = hl7.parse(ack(request, code="AE", now=NOW, rejected=refusal))
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


@pytest.mark.parametrize("disposition", sorted(TRANSFER_DISPOSITIONS))
def test_discharge_to_another_facility_is_transferred_out(disposition: str) -> None:
    result = mapped(adt_a03("A03-T", disposition=disposition))
    assert result.message_type == "ADT^A03"
    assert result.appointment is None
    status = result.patient_status
    assert status is not None
    assert (status.status, status.patient_id) == ("transferred_out", "PAT-1")
    # PV1-45, the discharge moment, is when the clinic stopped caring for the patient.
    assert status.effective_at == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    assert status.event_id == "patient-status:PAT-1:transferred_out:20260301T093000Z"
    assert result.contact is not None and result.contact.status == "transferred_out"
    assert "Ona" not in status.model_dump_json()


@pytest.mark.parametrize("disposition", ["01", "06", "07", "09", "20", "30", "51", ""])
def test_other_discharges_change_no_status(disposition: str) -> None:
    result = mapped(adt_a03("A03-H", disposition=disposition))
    assert result.patient_status is None
    assert result.contact is not None and result.contact.status == "active"


def test_transfer_needs_a_discharge_message() -> None:
    # The same PV1-36 on an update (A08) is history, not a discharge happening now.
    text = adt_a03("A08-1").replace("ADT^A03^ADT_A03", "ADT^A08^ADT_A01")
    assert mapped(text).patient_status is None


def test_transfer_without_discharge_time_uses_the_message_time() -> None:
    status = mapped(adt_a03("A03-N", discharged_at="")).patient_status
    assert status is not None and status.status == "transferred_out"
    assert status.effective_at == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def test_death_wins_over_a_transfer_disposition() -> None:
    status = mapped(adt_a03("A03-D", disposition="02", death="Y")).patient_status
    assert status is not None and status.status == "deceased"


def test_bad_discharge_time_is_an_ae() -> None:
    with pytest.raises(Rejected) as caught:
        mapped(adt_a03("A03-B", discharged_at="yesterday"))
    assert (caught.value.ack_code, caught.value.error_code) == ("AE", "102")
    assert "PV1-45" in caught.value.reason
