"""The tracker's detection worker: speed per event, memory per tracked appointment, the cost
of due work among many tracked, and throughput through the real broker.

- decode+detect+snapshot per event (in memory), against decoding alone (the floor any
  consumer pays), on an empty detector and on one already holding ``tracked`` appointments;
- resident memory per tracked appointment (RSS growth while ``tracked`` appointments of as
  many patients are applied), against the size of the canonical JSON that carried it;
- ``due()`` with ``DUE`` due among ``tracked``, against ``DUE`` due among ``DUE``;
- end to end: ``events`` canonical AppointmentEvents produced to a fresh topic, consumed by the
  real DetectionWorker (decode, detect, changelog write per patient, offset commit), against
  a bare aiokafka consumer reading the same records and decoding each with the same model.

Sizes from the environment: ``FOLLOWUP_BENCH_TRACKED`` (default 100,000, ``--big``
1,000,000: that run takes about 45 s more and peaks at 1.7 GB resident) and
``FOLLOWUP_BENCH_EVENTS`` (default 50,000). The broker from
``FOLLOWUP_KAFKA_BOOTSTRAP``; the bench's topics get a unique prefix and are deleted after.
RSS growth is only meaningful at a large size (the allocator reuses what earlier measurements
freed).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.harness import Figure, Reading, compare
from common.clock import ManualClock
from common.codec import decode, encode
from common.config import PREFIX, Settings
from common.kafka import ensure_topics, make_admin, make_consumer, make_producer
from schemas import AppointmentEvent
from schemas.topics import APPOINTMENTS, TopicNames
from services.tracker.detection import DetectionRules, Detector
from services.tracker.worker import (
    CHANGELOG,
    DetectionWorker,
    changelog_topic,
    ensure_changelog,
)

N = 20_000
DUE = 1000
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# Before every start: nothing is due while the events are applied.
BEFORE = START - timedelta(days=1)


@dataclass(frozen=True)
class Sizes:
    tracked: int
    events: int

    @classmethod
    def from_env(cls, big: bool = False) -> Sizes:
        return cls(
            tracked=int(os.environ.get(f"{PREFIX}BENCH_TRACKED", "1000000" if big else "100000")),
            events=int(os.environ.get(f"{PREFIX}BENCH_EVENTS", "50000")),
        )


def booking(i: int, prefix: str = "", later: timedelta = timedelta(0)) -> AppointmentEvent:
    """Appointment ``i`` of its own patient, starting ``i`` minutes after START (+ later)."""
    return AppointmentEvent(
        event_id=f"{prefix}a{i}:booked",
        occurred_at=START - timedelta(days=2),
        source="bench",
        change="booked",
        appointment_id=f"{prefix}a{i}",
        patient_id=f"{prefix}p{i}",
        start=START + later + timedelta(minutes=i),
        timezone="Europe/Vilnius",
        department="dental",
        status="booked",
    )


def _raw(n: int, prefix: str = "", later: timedelta = timedelta(0)) -> list[bytes]:
    return [encode(booking(i, prefix, later)) for i in range(n)]


def _chunks(n: int, size: int = 10_000) -> Iterator[list[bytes]]:
    # A million encoded events need not sit in memory next to what they build.
    for first in range(0, n, size):
        yield [encode(booking(i)) for i in range(first, min(n, first + size))]


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _detect(detector: Detector, raws: list[bytes]) -> int:
    for raw in raws:
        event = decode(AppointmentEvent, raw)
        detector.on_appointment(event, BEFORE)
        # What the worker writes to the changelog for the touched patient.
        detector.patients[event.patient_id].to_json()
    return len(raws)


def _due_rate(detector: Detector) -> float:
    """Due work per second when the first DUE appointments' grace has passed."""
    now = START + timedelta(minutes=DUE - 1) + detector.rules.no_show_grace
    started = time.perf_counter()
    found = detector.due(now)
    elapsed = time.perf_counter() - started
    if len(found) != DUE:
        raise RuntimeError(f"due() found {len(found)} of {DUE}")
    return DUE / elapsed


def in_memory(tracked: int) -> list[Figure | Reading]:
    raws = _raw(N, prefix="new-")
    empty = compare(
        "tracker: decode+detect+snapshot",
        lambda: _detect(Detector(DetectionRules()), raws),
        "codec.decode only",
        lambda: len([decode(AppointmentEvent, raw) for raw in raws]),
    )

    gc.collect()
    before = _rss()
    detector = Detector(DetectionRules())
    payload = 0
    for chunk in _chunks(tracked):
        payload += sum(len(raw) for raw in chunk)
        for raw in chunk:
            detector.on_appointment(decode(AppointmentEvent, raw), BEFORE)
    gc.collect()
    grown = _rss() - before
    if detector.tracked_appointments != tracked:
        raise RuntimeError(f"tracking {detector.tracked_appointments} of {tracked}")
    memory = Reading(
        f"tracker: RSS per appointment ({tracked} tracked)",
        grown / tracked,
        "bytes",
        "canonical JSON of its event",
        payload / tracked,
    )
    resident = Reading(
        f"tracker: RSS growth holding {tracked}",
        grown / 2**20,
        "MiB",
        "JSON of the events",
        payload / 2**20,
    )

    rounds = itertools.count(1)
    added: list[str] = []

    def crowded() -> int:
        # New patients each round (a patient seen before would find its wake-ups queued),
        # on top of the ``tracked`` ones held.
        # Starting months later: their wake-ups are not among the due ones measured below.
        fresh = _raw(N, prefix=f"r{next(rounds)}-", later=timedelta(days=90))
        started = time.perf_counter()
        done = _detect(detector, fresh)
        elapsed = time.perf_counter() - started
        added.extend(decode(AppointmentEvent, raw).patient_id for raw in fresh)
        return int(done / elapsed)

    def empty_detector() -> int:
        fresh = _raw(N, prefix="new-")
        started = time.perf_counter()
        done = _detect(Detector(DetectionRules()), fresh)
        return int(done / (time.perf_counter() - started))

    full = Figure(
        f"tracker: decode+detect+snapshot, {tracked} held",
        statistics.median(crowded() for _ in range(3)),
        "the same on an empty detector",
        statistics.median(empty_detector() for _ in range(3)),
    )
    for patient_id in added:  # only the ``tracked`` ones are due below
        detector.drop(patient_id)
    small = Detector(DetectionRules())
    for raw in _raw(DUE):
        small.on_appointment(decode(AppointmentEvent, raw), BEFORE)
    due = Figure(
        f"tracker: due() {DUE} of {tracked} tracked",
        _due_rate(detector),
        f"{DUE} of {DUE}",
        _due_rate(small),
    )
    return [empty, full, due, memory, resident]


class BrokerBench:
    """The real worker against the real broker, on topics of a unique prefix."""

    def __init__(self, bootstrap: str, events: int) -> None:
        self.bootstrap = bootstrap
        self.events = events
        self.names = TopicNames(prefix=f"bench{uuid.uuid4().hex[:10]}.")
        self.consumed_by_worker = 0
        self.changelog_records = 0

    async def _produce(self) -> None:
        producer = make_producer(self.bootstrap, linger_ms=20, acks="all")
        await producer.start()
        try:
            futures = []
            for i in range(self.events):
                event = booking(i)
                futures.append(
                    await producer.send(
                        self.names.appointments, encode(event), key=event.patient_id.encode()
                    )
                )
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    async def plain_consume(self) -> float:
        """The baseline: records per second of a bare consumer over the same partitions,
        decoding each record with the topic's own model (what the worker decodes it with)."""
        consumer = make_consumer(self.bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [
                TopicPartition(self.names.appointments, p) for p in range(APPOINTMENTS.partitions)
            ]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            seen = 0
            started = time.perf_counter()
            while seen < self.events:
                batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                for records in batches.values():
                    for record in records:
                        decode(APPOINTMENTS.model, record.value)
                    seen += len(records)
            return self.events / (time.perf_counter() - started)
        finally:
            await consumer.stop()

    async def _committed(self, admin: AIOKafkaAdminClient, group_id: str) -> int:
        offsets = await admin.list_consumer_group_offsets(group_id)
        return sum(
            meta.offset
            for tp, meta in offsets.items()
            if tp.topic == self.names.appointments and meta.offset > 0
        )

    async def worker_consume(self) -> float:
        """Records per second through the DetectionWorker, from its partitions assigned and
        restored to every input offset committed (so every changelog write is acknowledged)."""
        group_id = f"{self.names.prefix}tracker"
        worker = DetectionWorker(
            bootstrap=self.bootstrap,
            names=self.names,
            group_id=group_id,
            detector=Detector(DetectionRules()),
            clock=ManualClock(BEFORE),
            tick_seconds=60.0,
        )
        admin = make_admin(self.bootstrap)
        await admin.start()
        await worker.start()
        try:
            await asyncio.wait_for(worker.ready.wait(), 60)
            started = time.perf_counter()
            while await self._committed(admin, group_id) < self.events:
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
            self.consumed_by_worker = worker.detector.tracked_appointments
        finally:
            await worker.stop()
            await admin.close()
        return self.events / elapsed

    async def _count_changelog(self) -> int:
        consumer = make_consumer(self.bootstrap, group_id=None)
        await consumer.start()
        try:
            topic = changelog_topic(self.names)
            partitions = range(CHANGELOG.partitions)
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
            return sum(ends.values())
        finally:
            await consumer.stop()

    async def _delete_topics(self) -> None:
        admin = make_admin(self.bootstrap)
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(self.names.prefix)]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()

    async def figures(self) -> list[Figure]:
        await ensure_topics(self.bootstrap, self.names)
        await ensure_changelog(self.bootstrap, self.names)
        try:
            await self._produce()
            floor = await self.plain_consume()
            ours = await self.worker_consume()
            self.changelog_records = await self._count_changelog()
        finally:
            await self._delete_topics()
        return [
            Figure(
                f"tracker: worker via broker ({self.events} events)",
                ours,
                "bare aiokafka consume+decode",
                floor,
            )
        ]


def run(
    sizes: Sizes | None = None, bootstrap: str | None = None, big: bool = False
) -> list[Figure | Reading]:
    sizes = sizes or Sizes.from_env(big)
    bootstrap = bootstrap or Settings().kafka_bootstrap
    figures = in_memory(sizes.tracked)
    figures += asyncio.run(BrokerBench(bootstrap, sizes.events).figures())
    return figures
