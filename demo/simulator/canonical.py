"""Canonical JSON events (the contracts in ``schemas``) for integrators who produce directly."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from demo.scenario import Appointment, Patient
from demo.sites import clinic_zone
from schemas.events import (
    AppointmentEvent,
    AppointmentStatus,
    ChannelConsent,
    ContactEvent,
    MessengerIds,
    OutcomeEvent,
    PatientStatusEvent,
    StageEducation,
    TreatmentPlanEvent,
    TreatmentStage,
)

SOURCE = "clinic-sim"
Change = Literal["booked", "rescheduled", "modified", "cancelled", "noshow", "status_changed"]


def contact(patient: Patient, now: datetime, *, deceased: bool = False) -> ContactEvent:
    return ContactEvent(
        event_id=f"contact:{patient.patient_id}:{'deceased' if deceased else 1}",
        occurred_at=now,
        source=SOURCE,
        patient_id=patient.patient_id,
        given_name=patient.given_name,
        family_name=patient.family_name,
        phone=patient.phone,
        email=patient.email,
        language=patient.language,
        timezone=patient.timezone,
        consent=consent(patient),
        status="deceased" if deceased else "active",
        birth_date=patient.birth_date,
        messengers=messenger_ids(patient),
    )


def consent(patient: Patient) -> ChannelConsent:
    """SMS, email and calls as by default; the messenger the patient agreed to (issue 21)."""
    return ChannelConsent.model_validate({patient.chat: True} if patient.chat else {})


def messenger_ids(patient: Patient) -> MessengerIds | None:
    """The patient's id on Telegram or Viber (learnt when they opened the clinic's bot)."""
    if patient.chat == "telegram":
        return MessengerIds(telegram_chat_id=patient.chat_id)
    if patient.chat == "viber":
        return MessengerIds(viber_user_id=patient.chat_id)
    return None


def preferences(patient: Patient, now: datetime) -> PatientStatusEvent | None:
    """The messenger a patient prefers, for the scheduler (followup.patients: ids and
    planning facts only); None for a patient who named none."""
    if patient.chat is None:
        return None
    return PatientStatusEvent(
        event_id=f"patient-status:{patient.patient_id}:preferences",
        occurred_at=now,
        source=SOURCE,
        patient_id=patient.patient_id,
        status="active",
        effective_at=now,
        timezone=patient.timezone,
        preferred_channel=patient.chat,
    )


def death(patient: Patient, died_at: datetime, now: datetime) -> PatientStatusEvent:
    return PatientStatusEvent(
        event_id=f"patient-status:{patient.patient_id}:deceased",
        occurred_at=now,
        source=SOURCE,
        patient_id=patient.patient_id,
        status="deceased",
        effective_at=died_at,
    )


def plan(patient: Patient, now: datetime) -> TreatmentPlanEvent:
    return TreatmentPlanEvent(
        event_id=f"{patient.plan_id}:v1",
        occurred_at=now,
        source=SOURCE,
        plan_id=patient.plan_id,
        patient_id=patient.patient_id,
        department=patient.department,
        timezone=clinic_zone(patient.site),
        site=patient.site,
        responsible_practitioner_id=patient.practitioner_id,
        supervisor_id=patient.supervisor_id,
        stages=[
            TreatmentStage(
                stage_id=s.stage_id,
                sequence=s.sequence,
                name=s.name,
                max_interval_days=s.max_interval_days,
                notes=s.notes,
                completed_at=s.completed_at,
                education=[
                    StageEducation(language=e.language, text=e.text, url=e.url) for e in s.education
                ],
            )
            for s in patient.stages
        ],
    )


def appointment(
    patient: Patient,
    appt: Appointment,
    *,
    change: Change,
    status: AppointmentStatus,
    now: datetime,
    by_patient: bool = False,
) -> AppointmentEvent:
    planless = patient.behaviour == "attends_no_booking"
    return AppointmentEvent(
        event_id=f"{appt.appointment_id}:{status}",
        occurred_at=now,
        source=SOURCE,
        change=change,
        appointment_id=appt.appointment_id,
        patient_id=patient.patient_id,
        start=appt.start,
        end=appt.end,
        timezone=clinic_zone(patient.site),
        site=patient.site,
        department=appt.department,
        practitioner_id=appt.practitioner_id,
        status=status,
        status_at=now if status not in ("booked",) else None,
        cancelled_by=("patient" if by_patient else "clinic") if status == "cancelled" else None,
        # A visit outside any treatment plan (the next-visit rule is for those).
        plan_id=None if planless else patient.plan_id,
        stage_id=None if planless else appt.stage_id,
    )


def child_status(patient: Patient, now: datetime) -> PatientStatusEvent | None:
    """A child's birth date for the scheduler (followup.patients), as the tracker sends it
    from HL7 PID-7 or FHIR birthDate; None for an adult (no birth date leaves the contact)."""
    if patient.birth_date is None:
        return None
    return PatientStatusEvent(
        event_id=f"patient-status:{patient.patient_id}:child",
        occurred_at=now,
        source=SOURCE,
        patient_id=patient.patient_id,
        status="active",
        effective_at=now,
        birth_date=patient.birth_date,
        fields_sent=["birth_date"],  # no news of the status
    )


def invitation_call(patient: Patient, now: datetime, outcome: Literal["no_answer"]) -> OutcomeEvent:
    """The clinic's own invitation call, made outside followup (no case id)."""
    return OutcomeEvent(
        event_id=f"invite:{patient.patient_id}:1",
        occurred_at=now,
        source=SOURCE,
        outcome=outcome,
        patient_id=patient.patient_id,
        channel="call_task",
        reported_by="front-desk",
    )
