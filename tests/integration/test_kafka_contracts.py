"""Every contract through the real broker, and bad input into the dead-letter topic."""

from __future__ import annotations

import base64
import json

import pytest

from common.codec import decode, encode
from common.kafka import KafkaPublisher
from schemas import AppointmentEvent, DeadLetter
from schemas.topics import APPOINTMENTS, CATALOGUE, TopicNames, TopicSpec
from tests.support.kafka import (
    appointments_consumer,
    read_events,
    read_records,
    refused_then_received,
)
from tests.support.polling import eventually
from tests.support.samples import sample_events

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.name)
async def test_every_contract_round_trips_through_the_broker(
    spec: TopicSpec, kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher
) -> None:
    sent = sample_events()[spec]
    await publisher.publish(topics.of(spec), sent)
    [record] = await read_records(kafka_bootstrap, topics.of(spec), 1)
    assert record.key == sent.key()
    assert decode(spec.model, record.value) == sent


async def test_bad_messages_go_to_the_dead_letter_topic_and_the_next_one_flows(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher
) -> None:
    good = sample_events()[APPOINTMENTS]
    garbage = b"\x89PNG not json at all"
    invalid = json.loads(encode(good))
    invalid["status"] = "teleported"
    invalid_bytes = json.dumps(invalid).encode()
    topic = topics.appointments
    await publisher.publish_raw(topic, garbage, key=b"pat-1")
    await publisher.publish_raw(topic, invalid_bytes, key=b"pat-1")
    await publisher.publish(topic, good)

    letters, received = await refused_then_received(kafka_bootstrap, topics, publisher, 2)
    assert received == [good]
    by_type = {letter.error_type: letter for letter in letters}
    assert set(by_type) == {"invalid_json", "invalid_event"}
    assert base64.b64decode(by_type["invalid_json"].original_b64) == garbage
    assert base64.b64decode(by_type["invalid_event"].original_b64) == invalid_bytes
    assert "status" in by_type["invalid_event"].reason
    for letter in letters:
        assert letter.source_topic == topic
        assert letter.source_partition is not None and letter.source_offset is not None
        assert letter.key() == b"pat-1"


async def test_a_failing_handler_dead_letters_and_the_consumer_goes_on(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher
) -> None:
    first = sample_events()[APPOINTMENTS]
    second = first.model_copy(update={"event_id": "appt-1:booked:2"})
    await publisher.publish_many(topics.appointments, [first, second])
    seen: list[str] = []

    async def handle(event: AppointmentEvent) -> None:
        if event.event_id == first.event_id:
            raise KeyError("a bug in a handler")
        seen.append(event.event_id)

    async with appointments_consumer(kafka_bootstrap, topics, publisher, handle):
        [letter] = await read_events(kafka_bootstrap, topics.deadletter, DeadLetter, 1)
        await eventually(lambda: bool(seen))
    assert letter.error_type == "handler_error"
    assert seen == [second.event_id]
