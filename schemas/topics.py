"""The topic catalogue: the one place where topic names live."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.base import Envelope
from schemas.events import (
    AppointmentEvent,
    CallTaskEvent,
    ContactEvent,
    DeadLetter,
    NotificationCommand,
    OutcomeEvent,
    PatientStatusEvent,
    TreatmentPlanEvent,
    TriggerEvent,
)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    model: type[Envelope]
    description: str
    compacted: bool = False
    partitions: int = 4


APPOINTMENTS = TopicSpec(
    "followup.appointments",
    AppointmentEvent,
    "Canonical appointment snapshots, from HL7, FHIR or integrators' JSON. Keyed by patient.",
)
PLANS = TopicSpec(
    "followup.plans",
    TreatmentPlanEvent,
    "Treatment plans: ordered stages and the doctor's maximum interval between them.",
)
CONTACTS = TopicSpec(
    "followup.contacts",
    ContactEvent,
    "Patient contact details and consent. Compacted; read by the notifier alone.",
    compacted=True,
)
PATIENTS = TopicSpec(
    "followup.patients",
    PatientStatusEvent,
    "Patient status without personal data: deceased or transferred out means no contact.",
    compacted=True,
)
TRIGGERS = TopicSpec(
    "followup.triggers",
    TriggerEvent,
    "What the tracker detected: no-show, unanswered call, stage window at risk, late cancellation.",
)
NOTIFICATIONS = TopicSpec(
    "followup.notifications",
    NotificationCommand,
    "Attempts the scheduler asks the notifier to make (from its transactional outbox).",
)
OUTCOMES = TopicSpec(
    "followup.outcomes",
    OutcomeEvent,
    "What came back: call results, deliveries, replies, opt-outs.",
)
CALLTASKS = TopicSpec(
    "followup.calltasks",
    CallTaskEvent,
    "Call tasks for the clinic's own tools (CRM connectors). Carries whom to call.",
)
DEADLETTER = TopicSpec(
    "followup.deadletter",
    DeadLetter,
    "Messages that did not parse or validate, with their original bytes and the reason.",
    partitions=1,
)

CATALOGUE: tuple[TopicSpec, ...] = (
    APPOINTMENTS,
    PLANS,
    CONTACTS,
    PATIENTS,
    TRIGGERS,
    NOTIFICATIONS,
    OUTCOMES,
    CALLTASKS,
    DEADLETTER,
)


@dataclass(frozen=True)
class TopicNames:
    """Topic names as deployed. A prefix isolates tests (and tenants) on one broker."""

    prefix: str = ""

    def of(self, spec: TopicSpec) -> str:
        return f"{self.prefix}{spec.name}"

    @property
    def appointments(self) -> str:
        return self.of(APPOINTMENTS)

    @property
    def plans(self) -> str:
        return self.of(PLANS)

    @property
    def contacts(self) -> str:
        return self.of(CONTACTS)

    @property
    def patients(self) -> str:
        return self.of(PATIENTS)

    @property
    def triggers(self) -> str:
        return self.of(TRIGGERS)

    @property
    def notifications(self) -> str:
        return self.of(NOTIFICATIONS)

    @property
    def outcomes(self) -> str:
        return self.of(OUTCOMES)

    @property
    def calltasks(self) -> str:
        return self.of(CALLTASKS)

    @property
    def deadletter(self) -> str:
        return self.of(DEADLETTER)
