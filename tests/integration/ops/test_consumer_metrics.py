"""The consumer's own Kafka metrics (lag, rebalances, commit latency), through the real broker."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from common.clock import SystemClock
from common.kafka import EventConsumer, KafkaPublisher
from schemas import AppointmentEvent
from schemas.topics import APPOINTMENTS, TopicNames
from tests.support.samples import sample_events

pytestmark = pytest.mark.integration


def sample(name: str, service: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"service": service, **labels})


async def test_lag_reaches_zero_after_catching_up_and_commits_and_assignments_are_counted(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher, unique: str
) -> None:
    service = f"ops-{unique}"  # a label of this test's own
    first = sample_events()[APPOINTMENTS]
    events = [first.model_copy(update={"event_id": f"appt-1:booked:{i}"}) for i in range(5)]
    await publisher.publish_many(topics.appointments, events)
    received: list[str] = []

    async def handle(event: AppointmentEvent) -> None:
        received.append(event.event_id)

    consumer = EventConsumer(
        bootstrap=kafka_bootstrap,
        topic=topics.appointments,
        base_topic=APPOINTMENTS.name,
        model=AppointmentEvent,
        group_id=f"{topics.appointments}.metrics",
        handler=handle,
        publisher=publisher,
        deadletter_topic=topics.deadletter,
        service=service,
        clock=SystemClock(),
    )
    lag = {"topic": APPOINTMENTS.name}
    assert sample("followup_kafka_consumer_lag", service, **lag) is None
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while (
                len(received) < len(events)
                or sample("followup_kafka_consumer_lag", service, **lag) != 0
            ):
                await asyncio.sleep(0.1)
    finally:
        await consumer.stop()

    assert sorted(received) == sorted(e.event_id for e in events)
    commits = sample("followup_kafka_commit_duration_seconds_count", service)
    assert commits is not None and commits >= 1
    rebalances = sample("followup_kafka_rebalances_total", service)
    assert rebalances is not None and rebalances >= 1
