"""`deadletters list|show|replay`: what the consumers refused, and sending it back after a fix.

A dead letter (schemas.events.DeadLetter) keeps the original bytes and key (base64), the
source topic, partition and offset, and a reason that names fields, never values. Replay
publishes the original bytes with the original key to the source topic, so the record lands
on its patient's partition and the consumer reads it as new; consumers are idempotent, so a
record replayed twice changes nothing the second time.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

from common.codec import DecodeError, decode
from followup_admin.config import Deployment
from schemas.events import DeadLetter
from schemas.topics import OPERATED

REPLAY_HEADER = "followup-replay-of"


@dataclass(frozen=True)
class Letter:
    """One record of the dead-letter topic; ``letter`` is None when it is not a DeadLetter."""

    partition: int
    offset: int
    letter: DeadLetter | None

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True)
class Selection:
    """Which letters a command acts on; every given filter must match."""

    reason: str | None = None  # a piece of the reason, case-insensitive
    error_type: str | None = None
    source_topic: str | None = None  # as deployed or without the prefix
    positions: frozenset[str] = frozenset()  # "partition:offset"

    def matches(self, item: Letter, deployment: Deployment) -> bool:
        letter = item.letter
        if letter is None:
            return False
        if self.positions and item.position not in self.positions:
            return False
        if self.reason and self.reason.lower() not in letter.reason.lower():
            return False
        if self.error_type and letter.error_type != self.error_type:
            return False
        if self.source_topic:
            wanted = {self.source_topic, deployment.names.prefix + self.source_topic}
            if letter.source_topic not in wanted:
                return False
        return True


def read(deployment: Deployment, timeout_s: float = 30.0) -> Iterator[Letter]:
    """Every record on the dead-letter topic, from its beginning to its end now."""
    topic = deployment.names.deadletter
    with deployment.consumer() as consumer:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise SystemExit(f"error: {topic} does not exist (run `topics apply`)")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        yield from _until_end(consumer, tps, timeout_s)


def _until_end(
    consumer: KafkaConsumer, tps: list[TopicPartition], timeout_s: float
) -> Iterator[Letter]:
    end = consumer.end_offsets(tps)
    left = {tp for tp in tps if consumer.position(tp) < end[tp]}
    idle_polls = 0
    while left:
        batches = consumer.poll(timeout_ms=500, max_records=500)
        idle_polls = 0 if batches else idle_polls + 1
        if idle_polls * 0.5 > timeout_s:
            raise SystemExit(f"error: the dead-letter topic did not answer in {timeout_s:.0f} s")
        for records in batches.values():
            for record in records:
                yield Letter(record.partition, record.offset, _decoded(record.value))
        left = {tp for tp in left if consumer.position(tp) < end[tp]}


def _decoded(raw: bytes | None) -> DeadLetter | None:
    try:
        return decode(DeadLetter, raw)
    except DecodeError:
        return None


def summary_line(item: Letter) -> str:
    letter = item.letter
    if letter is None:
        return f"{item.position}  (not a dead letter)"
    source = (
        f"{letter.source_topic}@{letter.source_partition}:{letter.source_offset}"
        if letter.source_topic
        else f"{letter.source} (no topic: HTTP or MLLP input)"
    )
    return (
        f"{item.position}  {letter.occurred_at.isoformat()}  {letter.error_type}  "
        f"{source}  {letter.reason}"
    )


def details(item: Letter, *, original: bool) -> dict[str, object]:
    """A letter for `show`. The original bytes may hold personal data: only on request."""
    assert item.letter is not None
    letter = item.letter
    body = base64.b64decode(letter.original_b64)
    shown: dict[str, object] = {
        "position": item.position,
        **letter.model_dump(mode="json", exclude={"original_b64", "original_key_b64"}),
        "original_key": base64.b64decode(letter.original_key_b64).decode(errors="replace")
        if letter.original_key_b64
        else None,
        "original_bytes": len(body),
        "original_sha256": hashlib.sha256(body).hexdigest(),
    }
    if original:
        shown["original"] = body.decode(errors="replace")
    return shown


@dataclass
class ReplayReport:
    replayed: list[str]  # "position -> topic"
    skipped: list[str]  # "position: why"


def replay(deployment: Deployment, selection: Selection, *, dry_run: bool) -> ReplayReport:
    """Publish each selected letter's original record to its source topic (nothing with
    ``dry_run``). Only to this deployment's own topics: a letter from HTTP or MLLP input has
    no topic to go back to, and another prefix's topic is another deployment's."""
    ours = {deployment.names.of(spec) for spec in OPERATED}
    report = ReplayReport([], [])
    chosen = [item for item in read(deployment) if selection.matches(item, deployment)]
    sends = []
    for item in chosen:
        assert item.letter is not None
        target = item.letter.source_topic
        if target is None:
            report.skipped.append(f"{item.position}: no source topic (HTTP or MLLP input)")
        elif target not in ours:
            report.skipped.append(f"{item.position}: {target} is not a topic of this deployment")
        else:
            sends.append((item, target))
            report.replayed.append(f"{item.position} -> {target}")
    if dry_run or not sends:
        return report
    with deployment.producer() as producer:
        futures = []
        for item, target in sends:
            assert item.letter is not None
            key = item.letter.original_key_b64
            futures.append(
                producer.send(
                    target,
                    value=base64.b64decode(item.letter.original_b64),
                    key=base64.b64decode(key) if key else None,
                    headers=[
                        (REPLAY_HEADER, f"{deployment.names.deadletter}:{item.position}".encode())
                    ],
                )
            )
        producer.flush()
        for future in futures:
            future.get(timeout=30)  # raises when the broker refused one
    return report
