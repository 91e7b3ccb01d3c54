"""Read a topic from its beginning to the end it has now: what a restore, a report or an
assertion needs when the producers are done. One home for the harnesses (demo, tests,
benchmarks); ``services.tracker.worker``'s changelog restore is the same loop and can use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from aiokafka import ConsumerRecord, TopicPartition

from common.codec import DecodeError, decode
from common.kafka import make_consumer
from schemas.base import Envelope

M = TypeVar("M", bound=Envelope)


async def read_to_end(
    bootstrap: str, topic: str, partitions: Iterable[int] | None = None
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` (or of its ``partitions``) up to each partition's current
    end, partition by partition in offset order. No consumer group: nothing is committed."""
    consumer = make_consumer(bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        if partitions is None:
            known = consumer.partitions_for_topic(topic)
            if not known:  # a topic created a moment ago: ask the broker once more
                await consumer._client.force_metadata_update()
                known = consumer.partitions_for_topic(topic) or set()
            partitions = known
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000)
            for batch in batches.values():
                records.extend(batch)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return records


async def read_events_to_end(bootstrap: str, topic: str, model: type[M]) -> tuple[list[M], int]:
    """The events of ``topic`` up to its end, and how many records did not decode."""
    events: list[M] = []
    bad = 0
    for record in await read_to_end(bootstrap, topic):
        try:
            events.append(decode(model, record.value))
        except DecodeError:
            bad += 1
    return events, bad
