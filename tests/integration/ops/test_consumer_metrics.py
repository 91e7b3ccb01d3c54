"""The consumer's own Kafka metrics (lag, rebalances, commit latency), through the real broker."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from common.kafka import KafkaPublisher
from schemas import AppointmentEvent
from schemas.topics import APPOINTMENTS, TopicNames
from tests.support.kafka import appointments_consumer
from tests.support.polling import eventually
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

    lag = {"topic": APPOINTMENTS.name}
    assert sample("followup_kafka_consumer_lag", service, **lag) is None
    async with appointments_consumer(
        kafka_bootstrap, topics, publisher, handle, group="metrics", service=service
    ):
        await eventually(
            lambda: (
                len(received) == len(events)
                and sample("followup_kafka_consumer_lag", service, **lag) == 0
            ),
            timeout=30,
        )

    assert sorted(received) == sorted(e.event_id for e in events)
    commits = sample("followup_kafka_commit_duration_seconds_count", service)
    assert commits is not None and commits >= 1
    rebalances = sample("followup_kafka_rebalances_total", service)
    assert rebalances is not None and rebalances >= 1
