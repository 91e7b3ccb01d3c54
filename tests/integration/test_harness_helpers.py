"""The harnesses' shared helpers against the real broker: reading a topic to its end, and
the service launcher's readiness wait."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from common.launcher import ServiceExited, ServiceProcess
from common.topic_reader import read_events_to_end, read_to_end
from schemas.events import TriggerEvent
from schemas.topics import TopicNames
from tests.support.polling import free_port
from tests.support.samples import sample_events

pytestmark = pytest.mark.integration


async def test_read_to_end_returns_everything_up_to_the_end_and_counts_what_does_not_decode(
    kafka_bootstrap: str, topics: TopicNames
) -> None:
    trigger = next(e for e in sample_events().values() if isinstance(e, TriggerEvent))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for n in range(5):
            await producer.send_and_wait(
                topics.triggers, trigger.model_dump_json().encode(), key=f"p{n}".encode()
            )
        await producer.send_and_wait(topics.triggers, b"not json", key=b"p9")
    finally:
        await producer.stop()
    records = await read_to_end(kafka_bootstrap, topics.triggers)
    assert sorted(r.key for r in records if r.key) == [b"p0", b"p1", b"p2", b"p3", b"p4", b"p9"]
    by_partition: dict[int, list[int]] = {}
    for r in records:
        by_partition.setdefault(r.partition, []).append(r.offset)
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())
    events, bad = await read_events_to_end(kafka_bootstrap, topics.triggers, TriggerEvent)
    assert (len(events), bad) == (5, 1)
    assert await read_to_end(kafka_bootstrap, topics.plans) == []  # an empty topic ends at once


async def test_the_launcher_says_when_a_service_exits_instead_of_becoming_ready() -> None:
    # A service that cannot start (no broker to bootstrap from) ends: the wait stops and says so.
    broken = ServiceProcess("scheduler", free_port(), {"FOLLOWUP_KAFKA_BOOTSTRAP": ""})
    with pytest.raises(ServiceExited, match="scheduler exited with"):
        await broken.started(timeout=60)
    assert not broken.alive
