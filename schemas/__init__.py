"""Contracts between the services and with the hospital's integrators."""

from schemas.base import SCHEMA_VERSION, Channel, Contract, Envelope, TriggerKind
from schemas.events import (
    AppointmentEvent,
    AppointmentStatus,
    AttemptSummary,
    CallTaskEvent,
    ChannelConsent,
    ContactEvent,
    DeadLetter,
    NotificationCommand,
    OutcomeEvent,
    OutcomeKind,
    PatientStatusEvent,
    Purpose,
    TreatmentPlanEvent,
    TreatmentStage,
    TriggerEvent,
)
from schemas.topics import CATALOGUE, TopicNames, TopicSpec

__all__ = [
    "CATALOGUE",
    "SCHEMA_VERSION",
    "AppointmentEvent",
    "AppointmentStatus",
    "AttemptSummary",
    "CallTaskEvent",
    "Channel",
    "ChannelConsent",
    "ContactEvent",
    "Contract",
    "DeadLetter",
    "Envelope",
    "NotificationCommand",
    "OutcomeEvent",
    "OutcomeKind",
    "PatientStatusEvent",
    "Purpose",
    "TopicNames",
    "TopicSpec",
    "TreatmentPlanEvent",
    "TreatmentStage",
    "TriggerEvent",
    "TriggerKind",
]
