"""The tracker's FHIR mapping produces the patient's preferences on followup.patients; the
running scheduler reads them from the real topic and opens the cadence with them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from common.clock import ManualClock
from common.kafka import KafkaPublisher
from schemas.events import NotificationCommand
from schemas.topics import TopicNames
from services.scheduler.app import Scheduler
from services.scheduler.cases import case_id_for
from services.tracker.fhir_mapping import (
    CONTACT_WINDOW_EXTENSION,
    PREFERRED_CHANNEL_EXTENSION,
    TIMEZONE_EXTENSION,
    patient_events,
)
from tests.integration.scheduler.conftest import MISSED, no_show
from tests.integration.scheduler.test_service import scheduler as scheduler  # the fixture
from tests.support.kafka import read_events
from tests.support.polling import eventually

pytestmark = pytest.mark.integration
CASE = case_id_for("no_show:appt-1")


async def test_preferences_from_a_fhir_patient_reach_the_scheduler_over_the_topic(
    scheduler: Scheduler,
    publisher: KafkaPublisher,
    topics: TopicNames,
    kafka_bootstrap: str,
    clock: ManualClock,
) -> None:
    pool = scheduler.pool
    assert pool is not None
    body = {
        "resourceType": "Patient",
        "id": "pat-1",
        "telecom": [{"system": "email", "value": "ona@example.org"}],
        "extension": [
            {"url": PREFERRED_CHANNEL_EXTENSION, "valueCode": "email"},
            {"url": CONTACT_WINDOW_EXTENSION, "valueString": "08:00-20:00"},
            {"url": TIMEZONE_EXTENSION, "valueCode": "Europe/Riga"},
        ],
    }
    _contact, status = patient_events(body, path_id=None, zone="Europe/Vilnius", now=clock.now())
    assert status is not None
    await publisher.publish(topics.patients, status)

    async def stored() -> str | None:
        found: str | None = await pool.fetchval(
            "SELECT preferred_channel FROM patient_status WHERE patient_id = 'pat-1'"
        )
        return found

    await eventually(stored)
    await publisher.publish(topics.triggers, no_show())
    clock.set(MISSED + timedelta(hours=1))
    [command] = await read_events(kafka_bootstrap, topics.notifications, NotificationCommand, 1)
    assert (command.idempotency_key, command.channel) == (f"{CASE}:1", "email")
