"""The outcome event about one notification command: every report of the notifier's own."""

from __future__ import annotations

from datetime import datetime

from schemas.events import NotificationCommand, OutcomeEvent, OutcomeKind


def command_outcome(
    command: NotificationCommand,
    outcome: OutcomeKind,
    at: datetime,
    *,
    event_id: str | None = None,
    detail: str | None = None,
    respond_by: datetime | None = None,
    reported_by: str | None = None,
    note: str | None = None,
    rating: int | None = None,
) -> OutcomeEvent:
    """Ids from the command; the event id is ``<key>:<outcome>`` (one per outcome and key,
    so a repeat is dropped downstream) unless the report brings its own."""
    return OutcomeEvent(
        event_id=event_id or f"{command.idempotency_key}:{outcome}",
        occurred_at=at,
        source="notifier",
        outcome=outcome,
        patient_id=command.patient_id,
        channel=command.channel,
        case_id=command.case_id,
        attempt_number=command.attempt_number,
        idempotency_key=command.idempotency_key,
        respond_by=respond_by,
        detail=detail,
        reported_by=reported_by,
        note=note,
        rating=rating,
    )
