"""FHIR resources -> canonical events, without HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from services.tracker.fhir_mapping import (
    Invalid,
    appointment_event,
    care_plan_event,
    patient_events,
)
from tests.unit.tracker.fhir_samples import (
    fhir_appointment,
    fhir_care_plan,
    fhir_patient,
    fhir_transferred_patient,
)

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
ZONE = "Europe/Vilnius"


def appointment(body: dict[str, object], path_id: str | None = "apt-1"):  # type: ignore[no-untyped-def]
    return appointment_event(body, path_id=path_id, zone=ZONE, department="general", now=NOW)


@pytest.mark.parametrize(
    ("status", "change"),
    [
        ("booked", "booked"),
        ("arrived", "status_changed"),
        ("checked-in", "status_changed"),
        ("fulfilled", "status_changed"),
        ("cancelled", "cancelled"),
        ("noshow", "noshow"),
        ("entered-in-error", "deleted"),
        ("proposed", "status_changed"),
    ],
)
def test_appointment_statuses_are_kept_as_fhir_defines_them(status: str, change: str) -> None:
    event = appointment(fhir_appointment(status))
    assert (event.status, event.change) == (status, change)
    assert (event.patient_id, event.practitioner_id, event.department) == (
        "pat-1",
        "dr-7",
        "dental",
    )
    assert (event.plan_id, event.stage_id) == ("plan-1", "s2")
    assert event.event_id == "fhir:Appointment/apt-1/3"
    assert event.occurred_at == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def test_cancellation_reason_pat_is_by_the_patient() -> None:
    body = fhir_appointment("cancelled", cancelationReason={"coding": [{"code": "pat-crs"}]})
    assert appointment(body).cancelled_by == "patient"
    body = fhir_appointment("cancelled", cancelationReason={"coding": [{"code": "prov"}]})
    assert appointment(body).cancelled_by == "clinic"
    assert appointment(fhir_appointment("cancelled")).cancelled_by is None  # no reason given


def test_resend_without_version_gets_the_same_event_id() -> None:
    body = fhir_appointment()
    del body["meta"]
    assert appointment(body).event_id == appointment(dict(body)).event_id
    assert appointment(body).occurred_at == NOW


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        (fhir_appointment("maybe"), "Appointment.status"),
        (fhir_appointment(start="2026-03-02T09:30:00"), "Appointment.start"),
        (fhir_appointment(participant=[]), "Appointment.participant"),
        (fhir_appointment(bogus=1), "Appointment.bogus"),
        ({"resourceType": "Patient"}, "resourceType"),
        (fhir_appointment(id="other"), "Appointment.id"),
    ],
)
def test_bad_appointments_say_where(body: dict[str, object], expression: str) -> None:
    with pytest.raises(Invalid) as caught:
        appointment(body)
    assert caught.value.expression == expression


def test_patient_to_contact_and_deceased_status() -> None:
    contact, status = patient_events(fhir_patient(), path_id=None, zone=ZONE, now=NOW)
    assert (contact.phone, contact.email, contact.language) == (
        "+37060000001",
        "ona@example.org",
        "lt",
    )
    assert status is None
    contact, status = patient_events(
        fhir_patient(deceasedDateTime="2026-02-27T10:00:00+02:00"), path_id=None, zone=ZONE, now=NOW
    )
    assert status is not None and status.status == "deceased"
    assert contact.status == "deceased"


def test_care_plan_to_treatment_plan() -> None:
    plan = care_plan_event(fhir_care_plan(), path_id=None, zone=ZONE, department="dental", now=NOW)
    assert [s.stage_id for s in plan.stages] == ["s1", "s2"]
    assert plan.stages[0].completed_at is not None
    assert plan.stages[1].max_interval_days == 90
    assert plan.stages[1].notes == "Check healing first."
    assert plan.responsible_practitioner_id == "dr-7"


def test_inactive_patient_with_the_transfer_extension_is_transferred_out() -> None:
    contact, status = patient_events(
        fhir_transferred_patient("extension"), path_id=None, zone=ZONE, now=NOW
    )
    assert status is not None
    assert (status.status, status.patient_id) == ("transferred_out", "pat-1")
    assert status.effective_at == datetime(2026, 2, 28, 16, 0, tzinfo=timezone(timedelta(hours=2)))
    assert status.event_id == "patient-status:pat-1:transferred_out:20260228T140000Z"
    assert contact.status == "transferred_out"


def test_replaced_by_a_record_of_another_organisation_is_transferred_out() -> None:
    contact, status = patient_events(
        fhir_transferred_patient("link"), path_id=None, zone=ZONE, now=NOW
    )
    assert status is not None and status.status == "transferred_out"
    assert status.effective_at == NOW  # no moment given: when we learnt it
    assert contact.status == "transferred_out"
    # Another organisation's identifier (assigner) counts as elsewhere too.
    body = fhir_patient(
        active=False,
        link=[
            {
                "type": "replaced-by",
                "other": {
                    "identifier": {
                        "system": "urn:oid:1.2.3",
                        "value": "K-77",
                        "assigner": {"display": "Klaipeda University Hospital"},
                    }
                },
            }
        ],
    )
    assert patient_events(body, path_id=None, zone=ZONE, now=NOW)[1] is not None


@pytest.mark.parametrize(
    "extra",
    [
        {"active": False},  # inactive alone: a duplicate or an error, not a transfer
        # A merge into another record of our own server.
        {"active": False, "link": [{"type": "replaced-by", "other": {"reference": "Patient/p2"}}]},
        {
            "active": False,
            "link": [{"type": "seealso", "other": {"reference": "https://x.example/Patient/1"}}],
        },
        # The marker on an active patient is contradictory: nothing is closed.
        {
            "active": True,
            "extension": [
                {
                    "url": "https://followup.example/fhir/StructureDefinition/transferred-out",
                    "valueBoolean": True,
                }
            ],
        },
    ],
)
def test_no_transfer_without_both_inactive_and_a_marker(extra: dict[str, Any]) -> None:
    contact, status = patient_events(fhir_patient(**extra), path_id=None, zone=ZONE, now=NOW)
    assert status is None
    assert contact.status == "active"


def test_transfer_extension_as_boolean_uses_the_update_time() -> None:
    body = fhir_transferred_patient("extension")
    body["extension"] = [
        {
            "url": "https://followup.example/fhir/StructureDefinition/transferred-out",
            "valueBoolean": True,
        }
    ]
    body["meta"] = {"lastUpdated": "2026-02-28T18:00:00+02:00"}
    _contact, status = patient_events(body, path_id=None, zone=ZONE, now=NOW)
    assert status is not None and status.status == "transferred_out"
    assert status.effective_at == datetime(2026, 2, 28, 16, 0, tzinfo=UTC)


def test_deceased_wins_over_a_transfer_marker() -> None:
    body = fhir_transferred_patient("extension") | {"deceasedBoolean": True}
    contact, status = patient_events(body, path_id=None, zone=ZONE, now=NOW)
    assert status is not None and status.status == "deceased"
    assert contact.status == "deceased"


def test_a_patient_abroad_keeps_their_own_time_zone_for_quiet_hours() -> None:
    url = "http://hl7.org/fhir/StructureDefinition/timezone"
    abroad = fhir_patient(extension=[{"url": url, "valueCode": "America/New_York"}])
    contact, _ = patient_events(abroad, path_id=None, zone=ZONE, now=NOW)
    assert contact.timezone == "America/New_York"
    assert patient_events(fhir_patient(), path_id=None, zone=ZONE, now=NOW)[0].timezone == ZONE
    nowhere = fhir_patient(extension=[{"url": url, "valueCode": "Mars/Olympus_Mons"}])
    with pytest.raises(Invalid) as refused:
        patient_events(nowhere, path_id=None, zone=ZONE, now=NOW)
    assert refused.value.expression == "Patient.extension(timezone)"
