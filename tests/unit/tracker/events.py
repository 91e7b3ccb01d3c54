"""A canonical booking as an integrator produces it straight to Kafka."""

from __future__ import annotations

from datetime import datetime, timedelta

from schemas.events import AppointmentEvent


def booking(appointment_id: str, patient_id: str, start: datetime) -> AppointmentEvent:
    return AppointmentEvent(
        event_id=f"{appointment_id}:booked",
        occurred_at=start - timedelta(days=3),
        source="integrator",
        change="booked",
        appointment_id=appointment_id,
        patient_id=patient_id,
        start=start,
        timezone="Europe/Vilnius",
        department="dental",
        status="booked",
    )
