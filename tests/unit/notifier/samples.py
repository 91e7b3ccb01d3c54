"""Sample contacts and commands for the notifier's unit tests (ids and made-up data)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from schemas.events import ChannelConsent, ContactEvent, NotificationCommand
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
