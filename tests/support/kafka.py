"""Reading what landed on a topic, for assertions."""

from __future__ import annotations

import asyncio
import uuid
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from common.codec import decode
from schemas.base import Envelope

M = TypeVar("M", bound=Envelope)


async def read_records(
    bootstrap: str, topic: str, count: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """The first ``count`` records of ``topic`` from the beginning, or fail after ``timeout``."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    records.extend(batch)
    except TimeoutError:
        raise AssertionError(
            f"expected {count} records on {topic}, found {len(records)} in {timeout}s"
        ) from None
    finally:
        await consumer.stop()
    return records


async def read_events(
    bootstrap: str, topic: str, model: type[M], count: int, timeout: float = 30.0
) -> list[M]:
    return [decode(model, r.value) for r in await read_records(bootstrap, topic, count, timeout)]


async def read_all(
    bootstrap: str, topic: str, quiet: float = 2.0, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Everything on ``topic`` until it has been quiet for ``quiet`` seconds."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = loop.time()
    try:
        while loop.time() < deadline and loop.time() - last < quiet:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
                last = loop.time()
    finally:
        await consumer.stop()
    return records
