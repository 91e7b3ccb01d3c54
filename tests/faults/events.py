"""What the notifier's fault tests share: its settings, a patient's contact, a call task."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from schemas.events import ContactEvent, NotificationCommand
from services.notifier.settings import NotifierSettings
from tests.support import infra
from tests.support.polling import free_port


def contact(patient_id: str, phone: str, at: datetime) -> ContactEvent:
    return ContactEvent(
        event_id=f"contact:{patient_id}",
        occurred_at=at,
        source="test",
        patient_id=patient_id,
        phone=phone,
        timezone="Europe/Vilnius",
    )


def call_task(case_id: str, patient_id: str, at: datetime, hours: float) -> NotificationCommand:
    """The first attempt of ``case_id``: a call task whose window is ``hours`` long."""
    return NotificationCommand(
        event_id=f"{case_id}:1",
        occurred_at=at,
        source="scheduler",
        idempotency_key=f"{case_id}:1",
        case_id=case_id,
        attempt_number=1,
        patient_id=patient_id,
        channel="call_task",
        template="no_show",
        reason="no_show",
        department="dental",
        timezone="Europe/Vilnius",
        window_start=at,
        window_end=at + timedelta(hours=hours),
    )


def notifier_settings(**values: object) -> tuple[NotifierSettings, str, str]:
    """A notifier on the shared test servers with a topic prefix and schema of its own
    (returned too, for clean-up), on a free HTTP port named in its public URL."""
    unique = uuid.uuid4().hex[:10]
    prefix, schema = f"t{unique}.", f"t_{unique}"
    port = free_port()
    base: dict[str, object] = {
        "kafka_bootstrap": infra.KAFKA_BOOTSTRAP,
        "database_url": infra.DATABASE_URL,
        "topic_prefix": prefix,
        "db_schema": schema,
        "http_host": "127.0.0.1",
        "http_port": port,
        "public_base_url": f"http://127.0.0.1:{port}",
    }
    return NotifierSettings.model_validate(base | values), prefix, schema
