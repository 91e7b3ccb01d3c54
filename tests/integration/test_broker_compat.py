"""The broker version we run works with the three Kafka clients the services use."""

from __future__ import annotations

import asyncio
import uuid

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer

from schemas.topics import TopicNames

pytestmark = pytest.mark.integration


def test_kafka_python_round_trip(kafka_bootstrap: str, topics: TopicNames) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(topics.outcomes, key=b"p", value=b"kafka-python").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(
        topics.outcomes,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"kp-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=15000,
    )
    values = [m.value for m in consumer]
    consumer.close()
    assert values[:1] == [b"kafka-python"]


async def test_aiokafka_round_trip_with_idempotent_producer(
    kafka_bootstrap: str, topics: TopicNames
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    await producer.send_and_wait(topics.outcomes, b"aiokafka", key=b"p")
    await producer.stop()
    consumer = AIOKafkaConsumer(
        topics.outcomes,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"ak-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    assert record.value == b"aiokafka"


async def test_faust_agent_and_changelog_table(kafka_bootstrap: str, unique: str) -> None:
    """faust-streaming joins a group, runs an agent and writes a table changelog."""
    app = faust.App(
        f"compat-{unique}",
        broker=f"kafka://{kafka_bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_replication_factor=1,
        topic_partitions=1,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(
        f"t{unique}.compat",
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    counts = app.Table("counts", default=int, partitions=1)
    seen: asyncio.Queue[bytes] = asyncio.Queue()

    @app.agent(topic)
    async def count(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            counts[event.key] += 1
            await seen.put(event.value)

    async def drive() -> bytes:
        await topic.maybe_declare()  # faust creates the topics it is given, like the services
        await app.start()
        try:
            await topic.send(key=b"p", value=b"faust")
            return await asyncio.wait_for(seen.get(), 60)
        finally:
            await app.stop()

    assert await asyncio.wait_for(drive(), 120) == b"faust"
