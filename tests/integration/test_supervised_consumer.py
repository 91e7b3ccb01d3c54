"""Nothing a record contains ends a consumer, through the real broker.

Poison records found on 0e56ca5, each of which ended a consumer task for good: a time zone
that names a tzdata directory (``zoneinfo`` raised IsADirectoryError past the codec) and an
undecodable record of 0.8-1 MB (its dead letter, base64, exceeded the producer's 1 MiB
limit). Also the key rule of JSON on Kafka, and what happens when a task ends anyway.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from prometheus_client import REGISTRY

from common.clock import ManualClock
from common.codec import encode
from common.http import OpsServer
from common.kafka import KafkaPublisher
from schemas import AppointmentEvent, DeadLetter
from schemas.events import ContactEvent
from schemas.topics import APPOINTMENTS, CONTACTS, TopicNames
from services.tracker.app import Tracker
from services.tracker.worker import ensure_changelog
from tests.support.kafka import appointments_consumer, read_events, refused_then_received
from tests.support.polling import eventually
from tests.support.samples import sample_events
from tests.support.tracker import detection_worker, tracker_settings
from tests.unit.tracker.events import booking

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 2, 7, 30, tzinfo=UTC)
# Not JSON, and large: the letter must still fit the topic.
OVERSIZE = b"\xff" + b"x" * 900_000


def tz_directory(event: AppointmentEvent | ContactEvent) -> bytes:
    data = json.loads(encode(event))
    data["timezone"] = "Europe"  # a directory of tzdata, not a zone
    return json.dumps(data).encode()


async def test_poison_contacts_are_dead_lettered_and_the_consumer_goes_on(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher
) -> None:
    good = sample_events()[CONTACTS]
    assert isinstance(good, ContactEvent)
    key = good.key()
    await publisher.publish_raw(topics.contacts, tz_directory(good), key)
    await publisher.publish_raw(topics.contacts, OVERSIZE, key)
    await publisher.publish(topics.contacts, good)
    letters, received = await refused_then_received(
        kafka_bootstrap, topics, publisher, 2, spec=CONTACTS, max_original_bytes=64 * 1024
    )
    assert received == [good]
    tz, big = letters
    assert tz.error_type == "invalid_event"
    assert tz.reason.startswith("timezone:")
    assert "Europe" not in tz.reason  # names the field, not the value
    assert big.error_type == "invalid_json"
    assert big.original_length == len(OVERSIZE)
    assert big.original_sha256 == hashlib.sha256(OVERSIZE).hexdigest()
    assert base64.b64decode(big.original_b64) == OVERSIZE[: 64 * 1024]
    assert big.key() == key


async def test_the_tracker_dead_letters_poison_and_the_next_booking_flows(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher
) -> None:
    await ensure_changelog(kafka_bootstrap, topics)
    worker = detection_worker(kafka_bootstrap, topics, ManualClock(START - timedelta(hours=1)))
    poisoned = booking("appt-1", "pat-1", START)
    await publisher.publish_raw(topics.appointments, tz_directory(poisoned), b"pat-1")
    await publisher.publish_raw(topics.appointments, OVERSIZE, b"pat-1")
    # JSON on Kafka: the key must be the event's patient_id.
    await publisher.publish_raw(topics.appointments, encode(poisoned), None)
    await publisher.publish_raw(topics.appointments, encode(poisoned), b"pat-2")
    await publisher.publish(topics.appointments, booking("appt-3", "pat-1", START))
    await worker.start()
    try:
        letters = await read_events(kafka_bootstrap, topics.deadletter, DeadLetter, 4)
        await eventually(lambda: worker.detector.tracked_appointments == 1)
    finally:
        await worker.stop()
    # A keyless record lands on any partition: order across partitions is not kept.
    found = {letter.error_type: letter for letter in letters}
    assert found.keys() == {"invalid_event", "invalid_json", "no_key", "wrong_key"}
    assert found["invalid_event"].reason.startswith("timezone:")
    assert found["invalid_json"].original_length == len(OVERSIZE)
    assert len(base64.b64decode(found["invalid_json"].original_b64)) < len(OVERSIZE)
    assert "patient_id" in found["no_key"].reason
    assert "patient_id" in found["wrong_key"].reason
    assert worker.detector.patients["pat-1"].appointments.keys() == {"appt-3"}


async def test_event_consumer_refuses_records_not_keyed_by_their_patient(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher
) -> None:
    good = sample_events()[APPOINTMENTS]
    await publisher.publish_raw(topics.appointments, encode(good), None)
    await publisher.publish_raw(topics.appointments, encode(good), b"somebody-else")
    await publisher.publish(topics.appointments, good)
    letters, received = await refused_then_received(kafka_bootstrap, topics, publisher, 2)
    assert sorted(letter.error_type for letter in letters) == ["no_key", "wrong_key"]
    assert received == [good]


class _Escapes(BaseException):
    """Stands for whatever a loop did not foresee: it passes every ``except Exception``."""


@pytest.fixture
async def ops() -> AsyncIterator[OpsServer]:
    server = OpsServer("supervised-test")
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop()


async def test_a_consumer_task_that_ends_makes_readyz_fail(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher, ops: OpsServer
) -> None:
    async def handle(_event: AppointmentEvent) -> None:
        raise _Escapes()

    def stopped() -> float:
        labels = {"service": "supervised-test", "task": "consume:followup.appointments"}
        return REGISTRY.get_sample_value("followup_tasks_stopped_total", labels) or 0.0

    before = stopped()
    url = f"http://127.0.0.1:{ops.port}/readyz"
    async with (
        appointments_consumer(kafka_bootstrap, topics, publisher, handle) as consumer,
        aiohttp.ClientSession() as http,
    ):
        ops.supervisor.watch(consumer.tasks)
        async with http.get(url) as response:
            assert response.status == 200
        await publisher.publish(topics.appointments, sample_events()[APPOINTMENTS])
        await asyncio.wait_for(ops.supervisor.failed.wait(), 30)
        async with http.get(url) as response:
            body = await response.json()
            assert response.status == 503
        assert body["checks"]["tasks"] is False
        ops.supervisor.closing()
    assert stopped() == before + 1


async def test_the_tracker_turns_unready_when_its_timer_loop_ends(
    kafka_bootstrap: str, topics: TopicNames
) -> None:
    tracker = Tracker(tracker_settings(kafka_bootstrap, topics), ManualClock(START))
    await tracker.start()
    url = f"http://127.0.0.1:{tracker.ops.port}/readyz"
    try:
        await asyncio.wait_for(tracker.worker.ready.wait(), 30)
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as response:
                assert response.status == 200
            tracker.worker.tasks["tracker:timer"].cancel()  # ended, and nobody asked it to
            await asyncio.wait_for(tracker.ops.supervisor.failed.wait(), 10)
            async with http.get(url) as response:
                assert response.status == 503
                assert (await response.json())["checks"] == {
                    "tasks": False,
                    "detection": True,
                    "kafka": True,
                }
        assert tracker.ops.supervisor.stopped_task == "tracker:timer"
    finally:
        await tracker.stop()
