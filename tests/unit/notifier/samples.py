"""Sample contacts and commands for the notifier's unit tests (ids and made-up data)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from schemas.events import CallTaskEvent, ChannelConsent, ContactEvent, NotificationCommand
from services.notifier.contacts import Contact

VILNIUS = ZoneInfo("Europe/Vilnius")


def contact(**changes: object) -> Contact:
    event = ContactEvent(
        event_id="c1",
        occurred_at=datetime(2026, 3, 1, tzinfo=UTC),
        source="test",
        patient_id="pat-1",
        given_name="Ona",
        phone="8 600 00001",
        email="ona@example.org",
        language="lt",
        timezone="Europe/Vilnius",
        consent=ChannelConsent(sms=True, email=True, call=True),
    )
    base = Contact.from_event(event, "LT")
    return Contact(**{**base.__dict__, **changes})


def command(channel: str = "sms", **changes: object) -> NotificationCommand:
    start = datetime(2026, 3, 2, 10, 0, tzinfo=VILNIUS)
    values: dict[str, object] = {
        "event_id": "case-1:1",
        "occurred_at": start,
        "source": "scheduler",
        "idempotency_key": "case-1:1",
        "case_id": "case-1",
        "attempt_number": 1,
        "patient_id": "pat-1",
        "channel": channel,
        "template": "no_show",
        "reason": "no_show",
        "department": "dental",
        "timezone": "Europe/Vilnius",
        "window_start": start,
        "window_end": start + timedelta(hours=8),
    }
    values.update(changes)
    return NotificationCommand.model_validate(values)


def call_task(action: str = "create", **changes: object) -> CallTaskEvent:
    """A call task as the sinks receive it (made-up patient, notes and script)."""
    start = datetime(2026, 3, 2, 10, 0, tzinfo=VILNIUS)
    values: dict[str, object] = {
        "event_id": f"calltask:case-9:3:{action}",
        "occurred_at": start,
        "source": "notifier",
        "action": action,
        "task_id": "case-9:3",
        "case_id": "case-9",
        "attempt_number": 3,
        "patient_id": "pat-9",
        "patient_name": "Ona Petraitiene",
        "phone": "+37060000009",
        "language": "lt",
        "reason": "no_show",
        "department": "dental",
        "practitioner_id": "dr-7",
        "stage_name": "healing check",
        "stage_deadline": start + timedelta(days=3),
        "doctor_notes": "Suspected infection at the extraction site.",
        "window_start": start,
        "window_end": start + timedelta(hours=8),
        "script": "Labas, čia Sample Clinic ...",
        "report_url": "http://127.0.0.1:8083/calltasks/case-9:3/result",
    }
    values.update(changes)
    return CallTaskEvent.model_validate(values)
