"""Where every way in ends: canonical events onto their topics, keyed by patient."""

from __future__ import annotations

from collections.abc import Sequence

from common.kafka import KafkaPublisher
from schemas.base import Envelope
from schemas.events import AppointmentEvent, OutcomeEvent, TreatmentPlanEvent
from schemas.topics import TopicNames
from services.tracker.metrics import EVENTS


def event_type(event: Envelope) -> str:
    """The metric's type label: appointment|plan|contact|outcome (patient status is contact)."""
    if isinstance(event, AppointmentEvent):
        return "appointment"
    if isinstance(event, TreatmentPlanEvent):
        return "plan"
    if isinstance(event, OutcomeEvent):
        return "outcome"
    return "contact"


class CanonicalSink:
    def __init__(self, publisher: KafkaPublisher, names: TopicNames) -> None:
        self._publisher = publisher
        self._topics = {
            "appointment": names.appointments,
            "treatment_plan": names.plans,
            "contact": names.contacts,
            "patient_status": names.patients,
        }

    async def publish(self, way_in: str, events: Sequence[Envelope]) -> None:
        """Publish and wait for the broker: a positive answer means the events are stored.

        ``way_in`` is the metric's source label (hl7|fhir).
        """
        for event in events:
            topic = self._topics[getattr(event, "type")]  # noqa: B009 - every contract has it
            await self._publisher.publish(topic, event)
        for event in events:
            EVENTS.labels(way_in, event_type(event)).inc()
