"""The tracker's restore at size: ``python -m services.tracker`` killed with -9 while holding
``FOLLOWUP_BENCH_RESTORE`` tracked appointments (default 100,000; ``--big`` 1,000,000), and
restarted to ready (``/readyz``: its partitions restored and consuming).

The changelog is written directly, one record per patient with the bytes the worker itself
writes (a booked future visit, ``PatientState.to_json``), so the figure is the restore's and
not the hours a million events take through the detection first. The tracker runs with
``FOLLOWUP_GROUP_INSTANCE_ID`` (static membership, as the k8s base deploys it), so the
restart takes its partitions back at once; a first start restores the same changelog and is
killed, then the measured restart. Baseline: a bare aiokafka consumer reading the same
changelog (no decoding). The process's RSS once restored is shown too, and the CPU seconds
the restarted process spent to ready (imports included): on a shared machine the wall time
is that CPU time stretched by the load average, the CPU time is what a free core would take.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka.producer.message_accumulator import BatchBuilder

from bench.harness import Observation, Reading, Result
from bench.processes import ServiceProcess, unique_prefix
from bench.tracker_ops_bench import bare_read
from common.config import PREFIX, Settings
from common.kafka import delete_topics_with_prefix, ensure_topics, make_producer
from schemas.topics import TopicNames
from services.tracker.detection import DetectionRules, Detector
from services.tracker.worker import CHANGELOG, changelog_topic
from tests.support.polling import free_port
from tests.unit.tracker.events import booking

# Placeholders replaced per patient in one state's JSON (same length class as real ids).
_PATIENT, _APPOINTMENT = "PATIENT-XXXXXXXX", "APPOINTMENT-XXXXXXXX"


@dataclass(frozen=True)
class Sizes:
    tracked: int

    @classmethod
    def from_env(cls, big: bool = False) -> Sizes:
        default = "1000000" if big else "100000"
        return cls(tracked=int(os.environ.get(f"{PREFIX}BENCH_RESTORE", default)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def state_template(start: datetime) -> bytes:
    """One patient's changelog record as the worker writes it after a booking."""
    detector = Detector(DetectionRules())
    detector.on_appointment(booking(_APPOINTMENT, _PATIENT, start), start - timedelta(days=3))
    return detector.patients[_PATIENT].to_json()


async def seed_changelog(bootstrap: str, topic: str, tracked: int) -> None:
    """``tracked`` patients' states, in record batches per partition (as the worker does)."""
    start = datetime.now(UTC) + timedelta(days=30)
    template = state_template(start)
    patient, appointment = _PATIENT.encode(), _APPOINTMENT.encode()
    producer = make_producer(bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        batches: dict[int, BatchBuilder] = {}
        futures = []
        for i in range(tracked):
            key = f"rp{i:08d}".encode()
            value = template.replace(patient, key).replace(appointment, f"ra{i:08d}".encode())
            partition = i % CHANGELOG.partitions
            batch = batches.get(partition)
            if batch is None or batch.append(key=key, value=value, timestamp=None) is None:
                if batch is not None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            if len(futures) > 200:
                await asyncio.gather(*futures)
                futures = []
        for partition, batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class TrackerRestore:
    def __init__(self, bootstrap: str, sizes: Sizes) -> None:
        self.bootstrap = bootstrap
        self.sizes = sizes
        self.names = TopicNames(prefix=unique_prefix("restore"))

    def process(self) -> ServiceProcess:
        return ServiceProcess(
            "services.tracker",
            {
                "FOLLOWUP_KAFKA_BOOTSTRAP": self.bootstrap,
                "FOLLOWUP_TOPIC_PREFIX": self.names.prefix,
                "FOLLOWUP_MLLP_PORT": str(free_port()),
                "FOLLOWUP_GROUP_INSTANCE_ID": f"{self.names.prefix}tracker-0",
            },
        )

    async def figures(self) -> list[Result]:
        tracked = self.sizes.tracked
        await ensure_topics(self.bootstrap, self.names)
        await ensure_topics(self.bootstrap, self.names, (CHANGELOG,))
        tracker: ServiceProcess | None = None
        try:
            topic = changelog_topic(self.names)
            started = time.perf_counter()
            await seed_changelog(self.bootstrap, topic, tracked)
            seeded = time.perf_counter() - started
            records, bare_seconds = await bare_read(self.bootstrap, topic)
            tracker = self.process()
            first = await tracker.start(timeout=1800)
            await tracker.kill()
            tracker = self.process()
            restart = await tracker.start(timeout=1800)
            assert tracker.process is not None
            cpu = cpu_seconds(tracker.process.pid)
            rss = tracker.rss()
            return [
                Reading(
                    f"tracker: kill -9 holding {tracked}, restart to ready ({records} records)",
                    restart,
                    "s",
                    "bare read of the changelog",
                    bare_seconds,
                ),
                Observation("tracker: CPU of that restart, to ready", cpu, "s"),
                Observation(f"tracker: first start to ready holding {tracked}", first, "s"),
                Observation(f"tracker: process RSS restored with {tracked}", rss / 2**20, "MiB"),
                Observation(f"tracker: changelog of {tracked} written in", seeded, "s"),
            ]
        finally:
            if tracker is not None:
                await tracker.stop()
            await delete_topics_with_prefix(self.bootstrap, self.names.prefix)


def run(
    sizes: Sizes | None = None, bootstrap: str | None = None, big: bool = False
) -> list[Result]:
    sizes = sizes or Sizes.from_env(big)
    bootstrap = bootstrap or Settings().kafka_bootstrap
    return asyncio.run(TrackerRestore(bootstrap, sizes).figures())
