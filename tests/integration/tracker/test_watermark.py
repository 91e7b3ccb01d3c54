"""Timer no-shows wait for the input to catch up (the detection watermark).

Found on 0e56ca5: after a broker restart, the clinic's check-ins queued behind the outage
and the tracker's grace timers fired first, so patients who attended got a no-show case
and a call task. Here the tracker is away while a check-in (inside the grace) is queued
behind several thousand other records on the same partition, and the clock has passed the
grace when it comes back: the no-show of the patient who attended must not be emitted; the
one of the patient who did not attend must (the hold ends once the input is read)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.partitioner import DefaultPartitioner

from common.clock import ManualClock
from common.kafka import KafkaPublisher
from schemas.events import TriggerEvent
from schemas.topics import APPOINTMENTS, TopicNames
from services.tracker.worker import ensure_changelog
from tests.support.kafka import read_all, read_events
from tests.support.polling import eventually
from tests.support.tracker import detection_worker
from tests.unit.tracker.events import booking

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 2, 7, 30, tzinfo=UTC)
QUEUED = 5000  # more than two of the worker's batches, so its timer gets the lock between them


def same_partition_patients(patient_id: str, count: int) -> list[str]:
    """Patients whose records land on ``patient_id``'s partition (Kafka's key hashing)."""
    partitions = list(range(APPOINTMENTS.partitions))
    hashing = DefaultPartitioner()
    home = hashing(patient_id.encode(), partitions, partitions)
    found: list[str] = []
    n = 0
    while len(found) < count:
        candidate = f"queued-{n}"
        if hashing(candidate.encode(), partitions, partitions) == home:
            found.append(candidate)
        n += 1
    return found


async def test_a_check_in_queued_behind_an_outage_wins_over_the_grace_timer(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher
) -> None:
    await ensure_changelog(kafka_bootstrap, topics)
    clock = ManualClock(START - timedelta(hours=1))
    first = detection_worker(kafka_bootstrap, topics, clock)
    await first.start()
    try:
        await publisher.publish_many(
            topics.appointments,
            [booking("appt-1", "pat-1", START), booking("appt-9", "pat-9", START)],
        )
        await eventually(lambda: first.detector.tracked_appointments == 2)
    finally:
        await first.stop()

    # The outage: the tracker is away; other clinics' bookings and pat-1's check-in queue up.
    later = START + timedelta(days=30)
    queued = [booking(f"q-{p}", p, later) for p in same_partition_patients("pat-1", QUEUED)]
    checked_in = booking("appt-1", "pat-1", START).model_copy(
        update={
            "event_id": "appt-1:arrived",
            "change": "status_changed",
            "status": "arrived",
            "status_at": START + timedelta(minutes=5),
            "occurred_at": START + timedelta(minutes=5),
        }
    )
    await publisher.publish_many(topics.appointments, [*queued, checked_in])
    clock.set(START + timedelta(minutes=20))  # both graces are over

    second = detection_worker(kafka_bootstrap, topics, clock, tick_seconds=0.01)
    await second.start()
    try:
        triggers = await read_events(kafka_bootstrap, topics.triggers, TriggerEvent, 1)
        appt = second.detector.patients["pat-1"].appointments["appt-1"]
        assert appt.arrived_at == START + timedelta(minutes=5)
        assert second.watermark == clock.now()
    finally:
        await second.stop()
    assert [t.event_id for t in triggers] == ["no_show:appt-9"]
    records = await read_all(kafka_bootstrap, topics.triggers, quiet=1.0)
    assert [r.key for r in records] == [b"pat-9"]
