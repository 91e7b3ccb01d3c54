"""The tracker as a process (``python -m services.tracker``), through its wire interfaces:

- HL7 over MLLP: SIU^S12 messages per second, each acknowledged only after its canonical
  event is stored on the broker, on 1 connection and on ``MLLP_CONNECTIONS``, against
  parsing and ACK building alone in this process (the ``hl7`` library; the floor of any
  listener written with it) and against the listener's own reading, encoding and ACK
  without the network and the broker (``services.tracker.hl7_siu``);
- replay: a day's feed of canonical bookings (past appointments, so each is a no-show)
  sent a second time: the drain time of both passes and the new triggers of the second;
- restore: kill -9 with the feed's patients tracked, then restart to ready, against the
  time a bare consumer takes to read the same changelog.

Sizes from the environment: ``FOLLOWUP_BENCH_SIU`` (messages per MLLP figure, default
5,000) and ``FOLLOWUP_BENCH_FEED`` (the day's feed, default 20,000; ``--big`` 100,000).
The feed is sent as canonical AppointmentEvents to the appointments topic (what the HL7
and FHIR adapters produce), so the figure is the detection's, not the ingest's.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import hl7

from bench.harness import Figure, Observation, Reading, Result
from bench.processes import (
    ServiceProcess,
    end_offsets,
    partitions,
    produce,
    settled,
    unique_prefix,
    until_committed,
)
from common.codec import encode
from common.config import PREFIX, Settings
from common.kafka import delete_topics_with_prefix, ensure_topics, make_consumer
from schemas import AppointmentEvent
from schemas.topics import TopicNames
from services.tracker import hl7_siu
from tests.support.polling import free_port
from tests.unit.tracker.events import booking

MLLP_CONNECTIONS = 50
START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\x0d"


@dataclass(frozen=True)
class Sizes:
    siu: int
    feed: int

    @classmethod
    def from_env(cls, big: bool = False) -> Sizes:
        return cls(
            siu=int(os.environ.get(f"{PREFIX}BENCH_SIU", "5000")),
            feed=int(os.environ.get(f"{PREFIX}BENCH_FEED", "100000" if big else "20000")),
        )


def siu(i: int, start: datetime) -> str:
    stamp = start.strftime("%Y%m%d%H%M%S+0000")
    return (
        f"MSH|^~\\&|HIS|CLINIC|FOLLOWUP|TRACKER|{stamp}||SIU^S12^SIU_S12|B{i}|P|2.5\r"
        f"SCH|A{i}^HIS|A{i}^HIS|||||||||^^^{stamp}\r"
        f"PID|1||PAT-{i}^^^HIS^MR\r"
    )


def parse_and_ack(messages: list[str]) -> int:
    """The baseline: what any listener built on the hl7 library does per message."""
    for text in messages:
        ack = hl7.parse(text).create_ack()
        str(ack).encode()
    return len(messages)


def read_and_ack(messages: list[str]) -> int:
    """The second baseline: the listener's own work per message without the network or the
    broker (its narrow SIU reader, the canonical events encoded, the ACK)."""
    zone, now = ZoneInfo("UTC"), datetime.now(UTC)
    for text in messages:
        raw = text.encode()
        result = hl7_siu.read(raw, zone=zone, now=now, department="bench")
        for event in result.events():
            encode(event)
        hl7_siu.ack(hl7_siu.read_header(raw), code="AA", now=now).encode()
    return len(messages)


async def _sender(port: int, messages: list[str]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for text in messages:
            writer.write(START_BLOCK + text.encode() + END_BLOCK)
            await writer.drain()
            block = await reader.readuntil(END_BLOCK)
            if b"MSA|AA|" not in block:
                raise RuntimeError("the tracker did not accept a benchmark SIU message")
        return len(messages)
    finally:
        writer.close()


async def mllp_rate(port: int, messages: list[str], connections: int) -> float:
    shares = [messages[c::connections] for c in range(connections)]
    started = time.perf_counter()
    done = await asyncio.gather(*(_sender(port, share) for share in shares))
    return sum(done) / (time.perf_counter() - started)


def day_feed(count: int, base: datetime) -> list[AppointmentEvent]:
    """A day's visits, one per patient, started hours ago and marked no-show by the
    scheduling system itself: a visit already over when first seen is recorded, never
    chased, unless the message says no-show (so each is one no-show trigger)."""
    return [
        booking(f"feed-a{i}", f"feed-p{i}", base + timedelta(seconds=i % 14_400)).model_copy(
            update={"event_id": f"feed-a{i}:noshow", "change": "noshow", "status": "noshow"}
        )
        for i in range(count)
    ]


async def bare_read(bootstrap: str, topic: str) -> tuple[int, float]:
    """Records of ``topic`` and the seconds a bare consumer takes to read them all."""
    consumer = make_consumer(bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await partitions(bootstrap, topic)
        consumer.assign(tps)
        started = time.perf_counter()
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        total = sum(ends.values())
        seen = 0
        while seen < total:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            seen += sum(len(r) for r in batches.values())
        return total, time.perf_counter() - started
    finally:
        await consumer.stop()


class TrackerOps:
    def __init__(self, bootstrap: str, sizes: Sizes) -> None:
        self.bootstrap = bootstrap
        self.sizes = sizes
        self.names = TopicNames(prefix=unique_prefix("tracker"))
        self.group_id = f"{self.names.prefix}tracker"
        self.mllp_port = free_port()

    def process(self) -> ServiceProcess:
        return ServiceProcess(
            "services.tracker",
            {
                "FOLLOWUP_KAFKA_BOOTSTRAP": self.bootstrap,
                "FOLLOWUP_TOPIC_PREFIX": self.names.prefix,
                "FOLLOWUP_MLLP_PORT": str(self.mllp_port),
            },
        )

    async def mllp(self, tracker: ServiceProcess) -> list[Result]:
        future = datetime.now(UTC) + timedelta(days=3)
        messages = [siu(i, future + timedelta(minutes=i)) for i in range(self.sizes.siu)]
        started = time.perf_counter()
        parse_and_ack(messages)
        floor = len(messages) / (time.perf_counter() - started)
        started = time.perf_counter()
        read_and_ack(messages)
        own = len(messages) / (time.perf_counter() - started)
        one = await mllp_rate(self.mllp_port, messages[: max(1, len(messages) // 5)], 1)
        many = await mllp_rate(self.mllp_port, messages, MLLP_CONNECTIONS)
        return [
            Figure("tracker: SIU over MLLP, ACK after durable, 1 conn", one, "parse+ACK", floor),
            Figure(f"tracker: SIU over MLLP, {MLLP_CONNECTIONS} conns", many, "parse+ACK", floor),
            Figure(
                f"tracker: SIU over MLLP, {MLLP_CONNECTIONS} conns, vs own reader",
                many,
                "the listener's own read+ACK",
                own,
            ),
        ]

    async def replay(self) -> list[Result]:
        feed = self.sizes.feed
        base = datetime.now(UTC) - timedelta(hours=5)
        events = day_feed(feed, base)
        before = await committed_total(self)
        started = time.perf_counter()
        await produce(self.bootstrap, self.names.appointments, events)
        await until_committed(self.bootstrap, self.group_id, self.names.appointments, before + feed)
        first = time.perf_counter() - started
        first_triggers = await settled(self.bootstrap, self.names.triggers)
        started = time.perf_counter()
        await produce(self.bootstrap, self.names.appointments, events)
        await until_committed(
            self.bootstrap, self.group_id, self.names.appointments, before + 2 * feed
        )
        second = time.perf_counter() - started
        again = await settled(self.bootstrap, self.names.triggers) - first_triggers
        return [
            Reading(
                f"tracker: replay of a {feed}-event feed, drain", second, "s", "first pass", first
            ),
            Figure(
                "tracker: feed events/s, second pass", feed / second, "first pass", feed / first
            ),
            Observation(
                f"tracker: triggers of the first pass ({feed} no-shows)", first_triggers, "triggers"
            ),
            Observation("tracker: new triggers of the replay", again, "triggers"),
        ]

    async def figures(self) -> list[Result]:
        await ensure_topics(self.bootstrap, self.names)
        results: list[Result] = []
        tracker = self.process()
        try:
            first_start = await tracker.start()
            results += await self.mllp(tracker)
            results += await self.replay()
            idle = tracker.rss()
            triggers = await end_offsets(self.bootstrap, self.names.triggers)
            await tracker.kill()
            changelog = f"{self.names.prefix}followup.tracker.patient-state-changelog"
            records, bare_seconds = await bare_read(self.bootstrap, changelog)
            tracker = self.process()
            restore = await tracker.start()
            after = await settled(self.bootstrap, self.names.triggers, quiet=3.0)
            tracked = self.sizes.feed + self.sizes.siu
            results += [
                Reading(
                    f"tracker: kill -9, restart to ready ({records} changelog records)",
                    restore,
                    "s",
                    "bare read of the changelog",
                    bare_seconds,
                ),
                Observation(
                    "tracker: triggers re-emitted after the restore", after - triggers, "triggers"
                ),
                # What a restart costs before any changelog: imports, group join, metadata.
                Observation("tracker: first start to ready (empty topics)", first_start, "s"),
                Observation(
                    f"tracker: process RSS holding {tracked} appointments", idle / 2**20, "MiB"
                ),
            ]
        finally:
            await tracker.stop()
            await delete_topics_with_prefix(self.bootstrap, self.names.prefix)
        return results


async def committed_total(bench: TrackerOps) -> int:
    from bench.processes import committed

    return await committed(bench.bootstrap, bench.group_id, bench.names.appointments)


def run(
    sizes: Sizes | None = None, bootstrap: str | None = None, big: bool = False
) -> list[Result]:
    sizes = sizes or Sizes.from_env(big)
    bootstrap = bootstrap or Settings().kafka_bootstrap
    return asyncio.run(TrackerOps(bootstrap, sizes).figures())
