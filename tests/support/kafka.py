"""Reading what landed on a topic, for assertions."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from common.clock import SystemClock
from common.codec import DEFAULT_MAX_ORIGINAL_BYTES, decode
from common.kafka import EventConsumer, KafkaPublisher, make_consumer
from schemas import DeadLetter
from schemas.base import Envelope
from schemas.topics import APPOINTMENTS, TopicNames, TopicSpec
from tests.support.polling import eventually

M = TypeVar("M", bound=Envelope)


async def _start_reader(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """A started consumer of ``topic`` from its beginning, in a group of its own."""
    consumer = make_consumer(
        bootstrap,
        topic,
        group_id=f"test-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    return consumer


async def read_records(
    bootstrap: str, topic: str, count: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """The first ``count`` records of ``topic`` from the beginning, or fail after ``timeout``."""
    consumer = await _start_reader(bootstrap, topic)
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
    consumer = await _start_reader(bootstrap, topic)
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


class TopicTail:
    """Follows ``topic`` from its beginning while a test runs: ``events`` grows as records
    arrive (decoded as ``model``); ``stop`` ends it."""

    def __init__(self, bootstrap: str, topic: str, model: type[Any]) -> None:
        self.events: list[Any] = []
        self._bootstrap, self._topic, self._model = bootstrap, topic, model
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = await _start_reader(self._bootstrap, self._topic)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        async for record in self._consumer:
            self.events.append(decode(self._model, record.value))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


@asynccontextmanager
async def appointments_consumer(
    bootstrap: str,
    topics: TopicNames,
    publisher: KafkaPublisher,
    handler: Callable[[Any], Awaitable[None]],
    *,
    group: str = "test",
    service: str = "test",
    spec: TopicSpec = APPOINTMENTS,
    max_original_bytes: int = DEFAULT_MAX_ORIGINAL_BYTES,
) -> AsyncIterator[EventConsumer[Any]]:
    """A running EventConsumer of this test's appointments topic (or ``spec``'s), dead-lettering
    to its own dead-letter topic; its group id carries the test's unique prefix."""
    consumer: EventConsumer[Any] = EventConsumer(
        bootstrap=bootstrap,
        topic=topics.of(spec),
        base_topic=spec.name,
        model=spec.model,
        group_id=f"{topics.of(spec)}.{group}",
        handler=handler,
        publisher=publisher,
        deadletter_topic=topics.deadletter,
        service=service,
        clock=SystemClock(),
        max_original_bytes=max_original_bytes,
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def refused_then_received(
    bootstrap: str,
    topics: TopicNames,
    publisher: KafkaPublisher,
    letters: int,
    *,
    spec: TopicSpec = APPOINTMENTS,
    max_original_bytes: int = DEFAULT_MAX_ORIGINAL_BYTES,
) -> tuple[list[DeadLetter], list[Any]]:
    """Runs a consumer of ``spec``'s topic until ``letters`` dead letters and a first event
    handed to the handler are in: what a consumer that goes on after bad input shows."""
    received: list[Any] = []

    async def handle(event: Any) -> None:
        received.append(event)

    async with appointments_consumer(
        bootstrap, topics, publisher, handle, spec=spec, max_original_bytes=max_original_bytes
    ):
        refused = await read_events(bootstrap, topics.deadletter, DeadLetter, letters)
        await eventually(lambda: bool(received))
    return refused, received
