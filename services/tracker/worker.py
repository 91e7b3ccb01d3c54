"""The detection worker: Kafka in, Detector in the middle, triggers and a changelog out.

Appointments, plans and outcomes are keyed by patient and co-partitioned, so a range
assignment gives one replica the same partition number of all three topics, and with it
every fact about the patients of that partition. The state of those patients lives in
memory and in a compacted changelog topic (one record per patient, written to the same
partition number); on assignment a replica pauses its new partitions, restores them from
the changelog in a task of its own (aiokafka sends no heartbeat while an assignment callback
runs, so a restore inside it longer than the session would get the member dropped) and
resumes them when restored; it is ready only then, and forgets what it lost. That is the
guarantee a faust table gives, with the timer and the restore under our control (see
README: why not faust).

Timer detections (a no-show when the grace has passed) wait for the input: they are
evaluated at the watermark, the latest clock time T such that every input partition this
replica owns was fetched after T and has been read to its end. After a broker or ingest
outage the check-ins queued behind it are applied before any grace timer fires on them,
as stream processors do with event-time watermarks; in steady state the watermark trails
the clock by one fetch (FETCH_MAX_WAIT_MS).

Order of effects per batch: triggers, then the changelog (which records them as emitted),
then the input offsets. A crash in between re-emits a trigger with the same deterministic
event id at worst; a crash after the changelog write emits nothing again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import Counter

from common.clock import Clock
from common.codec import DEFAULT_MAX_ORIGINAL_BYTES, DecodeError, encode
from common.kafka import (
    METADATA_MAX_AGE_MS,
    ConsumerMonitor,
    dead_letter_record,
    decode_record,
    ensure_topics,
    handler_failure,
    is_transient,
    make_consumer,
    make_producer,
)
from common.logs import get_logger
from common.metrics import EVENTS_CONSUMED
from common.sites import SiteRegistry, UnknownSite
from schemas.base import Envelope
from schemas.topics import APPOINTMENTS, OUTCOMES, PATIENTS, PLANS, TopicNames, TopicSpec
from services.tracker.detection import Detection, Detector, PatientState
from services.tracker.metrics import (
    DETECTION_LAG,
    EVENTS,
    INGEST_REJECTED,
    SITE_EVENTS,
    SITE_TRIGGERS,
    TRACKED_APPOINTMENTS,
    TRIGGERS,
    WATERMARK_LAG,
)

log = get_logger(__name__)

# Written to the same partition number as the patient's input records, so it has as many
# partitions as the co-partitioned inputs. Its records are PatientState JSON, not a contract:
# ensure_topics reads only the name, the partition count and the compaction of a spec.
CHANGELOG = TopicSpec(
    "followup.tracker.patient-state-changelog",
    Envelope,
    "The tracker's patient state, one record per patient (compacted).",
    compacted=True,
    partitions=APPOINTMENTS.partitions,
)
# How long a fetch waits for new records before it answers empty: it bounds how far the
# detection watermark trails the clock when input is idle (aiokafka's default is 500 ms).
FETCH_MAX_WAIT_MS = 100
# A static member's session (see TrackerSettings.group_instance_id): a restart under the
# same id rejoins at once whatever this is, so it can be Kafka's own default rather than
# aiokafka's 10 s (a replica gone for good hands its partitions on after it).
STATIC_SESSION_TIMEOUT_MS = 45_000
# Restored states adopted between yields to the loop: the consume loop, the timer and the
# ops endpoint keep running while a large changelog is loaded.
_RESTORE_CHUNK = 5000
# Poll starts remembered to map a fetch's wall time back to the injected clock.
_POLL_STARTS_KEPT = 1000
# Events our own ingest adapters produced were counted where they came in.
OWN_SOURCES = frozenset({"tracker.hl7", "tracker.fhir"})


@dataclass(frozen=True)
class _Input:
    """One input topic: its contract, its detector handler and its metric children, resolved
    once (a labels() lookup per record is a measurable share of the per-event cost at tens
    of thousands of events per second)."""

    base_topic: str
    model: type[Any]
    handle: Callable[[Any, datetime], list[Detection]]
    events_in: Counter
    consumed_ok: Counter


def changelog_topic(names: TopicNames) -> str:
    return names.of(CHANGELOG)


async def ensure_changelog(bootstrap: str, names: TopicNames) -> None:
    await ensure_topics(bootstrap, names, (CHANGELOG,))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: DetectionWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._worker.revoke({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._worker.assign({tp.partition for tp in assigned})


class DetectionWorker:
    def __init__(
        self,
        *,
        bootstrap: str,
        names: TopicNames,
        group_id: str,
        detector: Detector,
        clock: Clock,
        service: str = "tracker",
        tick_seconds: float = 1.0,
        max_original_bytes: int = DEFAULT_MAX_ORIGINAL_BYTES,
        sites: SiteRegistry | None = None,
        group_instance_id: str | None = None,
        session_timeout_ms: int | None = None,
    ) -> None:
        self._sites = sites
        self._bootstrap = bootstrap
        self._names = names
        self._group_id = group_id
        self.detector = detector
        self._clock = clock
        self._service = service
        self._tick = tick_seconds
        self._max_original_bytes = max_original_bytes

        def route(spec: TopicSpec, kind: str, handle: Callable[..., list[Detection]]) -> _Input:
            return _Input(
                spec.name,
                spec.model,
                handle,
                EVENTS.labels("kafka", kind),
                EVENTS_CONSUMED.labels(service, spec.name, "ok"),
            )

        self._inputs = {
            names.appointments: route(APPOINTMENTS, "appointment", detector.on_appointment),
            names.plans: route(PLANS, "plan", detector.on_plan),
            names.outcomes: route(OUTCOMES, "outcome", detector.on_outcome),
            # Erasures (issue 19): the notes in the held plans go.
            names.patients: route(PATIENTS, "contact", detector.on_patient_status),
        }
        self._consumer = make_consumer(
            bootstrap,
            group_id=group_id,
            # Static membership (see TrackerSettings.group_instance_id): such a member never
            # sends LeaveGroup, and its restart under the same id rejoins without waiting.
            group_instance_id=group_instance_id,
            session_timeout_ms=session_timeout_ms
            or (STATIC_SESSION_TIMEOUT_MS if group_instance_id else 10_000),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self._monitor = ConsumerMonitor(
            self._consumer, service, lambda t: self._inputs[t].base_topic
        )
        self._producer = make_producer(
            bootstrap,
            client_id=f"{service}-detection",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
        )
        self._lock = asyncio.Lock()
        self._owned: set[int] = set()
        self._partition_of: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Partitions assigned but not yet restored (paused), and the task restoring them.
        self._restoring: set[int] = set()
        self._restore_task: asyncio.Task[None] | None = None
        self.restores = 0  # restores begun: a member dropped mid-restore begins again
        self.ready = asyncio.Event()
        # (wall time in ms, injected clock) at the start of each poll; see _advance_watermark.
        self._poll_starts: deque[tuple[float, datetime]] = deque(maxlen=_POLL_STARTS_KEPT)
        self.watermark: datetime | None = None
        # Set by new partitions: their queued input is unread, so the watermark must be
        # computed afresh (it may go back) before timers run again.
        self._holding = True
        self._held_since = clock.now()

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, asyncio.Task[None]]:
        """The consume and timer loops by name, for a Supervisor."""
        return {task.get_name(): task for task in self._tasks}

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()
        self._consumer.subscribe(list(self._inputs), listener=_Rebalance(self))
        self._tasks = [
            asyncio.create_task(self._consume(), name="tracker:consume"),
            asyncio.create_task(self._timer(), name="tracker:timer"),
        ]

    async def stop(self) -> None:
        # Not in the middle of a batch: its triggers and changelog go out together. No
        # final commit: a fetched batch may not have been processed yet.
        async with self._lock:
            await self._cancel_restore()
            for task in self._tasks:
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._consumer.stop()
        await self._producer.stop()

    # --- partitions ---------------------------------------------------------------------

    async def revoke(self, partitions: set[int]) -> None:
        async with self._lock:
            self.ready.clear()
            await self._cancel_restore()
            self._forget(partitions)

    async def assign(self, partitions: set[int]) -> None:
        """The assignment callback: only bookkeeping and a pause; the restore runs in a task
        (the callback holds up the group protocol, heartbeats included)."""
        async with self._lock:
            await self._cancel_restore()
            # Partitions whose restore a revoke or a new assignment cut short start afresh.
            self._forget((self._owned - partitions) | self._restoring)
            fresh = partitions - self._owned
            self._owned = set(partitions)
            if not fresh:
                TRACKED_APPOINTMENTS.set(self.detector.tracked_appointments)
                log.info("partitions_assigned", partitions=sorted(partitions), restored=0)
                self.ready.set()
                return
            # New partitions' queued input is unread: hold timers until it is, and read
            # none of it before their patients' states are back.
            self.ready.clear()
            self._holding = True
            self._restoring = fresh
            self._consumer.pause(*self._input_partitions(fresh))
            self.restores += 1
            self._restore_task = asyncio.create_task(
                self._restore_and_resume(fresh), name="tracker:restore"
            )

    def _input_partitions(self, partitions: set[int]) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for topic in self._inputs for p in sorted(partitions)]

    async def _cancel_restore(self) -> None:
        task, self._restore_task = self._restore_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _restore_and_resume(self, partitions: set[int]) -> None:
        began, delay = time.perf_counter(), 0.2
        while True:
            try:
                states = await self._read_changelog(partitions)
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise  # the consume loop raises it: the supervisor turns us unready
                log.warning("restore_retry", error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        read, restored = time.perf_counter(), 0
        # Restored states hold no reference cycles; the collector's passes over a growing
        # million of them were a fifth of the restore's CPU (bench/tracker_restore_bench.py).
        gc.disable()
        try:
            for patient_id, (partition, value) in states.items():
                if value is not None:
                    self.detector.load(PatientState.from_json(value))
                    self._partition_of[patient_id] = partition
                restored += 1
                if restored % _RESTORE_CHUNK == 0:
                    await asyncio.sleep(0)
        finally:
            gc.enable()
        async with self._lock:
            if self._restore_task is not asyncio.current_task():
                return  # cut short meanwhile: a revoke forgot these partitions
            self._restore_task = None
            self._restoring = set()
            self._consumer.resume(*self._input_partitions(partitions))
            TRACKED_APPOINTMENTS.set(self.detector.tracked_appointments)
            log.info(
                "partitions_assigned",
                partitions=sorted(self._owned),
                restored=restored,
                read_seconds=round(read - began, 2),
                load_seconds=round(time.perf_counter() - read, 2),
            )
            self.ready.set()

    def _forget(self, partitions: set[int]) -> None:
        if not partitions:
            return
        gone = [p for p, part in self._partition_of.items() if part in partitions]
        for patient_id in gone:
            self.detector.drop(patient_id)
            del self._partition_of[patient_id]
        self._owned -= partitions
        self._restoring -= partitions

    async def _read_changelog(self, partitions: set[int]) -> dict[str, tuple[int, bytes | None]]:
        """Read the changelog partitions from the beginning to their end: the latest wins."""
        topic = changelog_topic(self._names)
        reader = make_consumer(self._bootstrap, enable_auto_commit=False, group_id=None)
        await reader.start()
        states: dict[str, tuple[int, bytes | None]] = {}
        try:
            tps = [TopicPartition(topic, p) for p in partitions]
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            ends = await reader.end_offsets(tps)
            pending = {tp for tp in tps if ends[tp] > 0}
            while pending:
                batches = await reader.getmany(*pending, timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        if record.key is not None:
                            states[record.key.decode()] = (tp.partition, record.value)
                for tp in list(pending):
                    if await reader.position(tp) >= ends[tp]:
                        pending.discard(tp)
        finally:
            await reader.stop()
        return states

    # --- the loops ----------------------------------------------------------------------

    async def _consume(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._consume_once()
                delay = 0.2
            except Exception as exc:
                if not is_transient(exc):
                    raise  # the supervisor turns the tracker unready
                log.warning("consume_retry", error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _consume_once(self) -> None:
        restore = self._restore_task
        if restore is not None and restore.done() and not restore.cancelled():
            failure = restore.exception()
            if failure is not None:
                raise failure
        self._poll_starts.append((time.time() * 1000, self._clock.now()))
        # A short wait when idle: the watermark moves once per poll.
        batches = await self._consumer.getmany(timeout_ms=FETCH_MAX_WAIT_MS, max_records=2000)
        self._monitor.note_assignment()
        if not batches:
            await self._advance_watermark()
            await self._monitor.report_lag()
            return
        async with self._lock:
            now = self._clock.now()
            found: list[Detection] = []
            dirty: set[str] = set()
            # Events counted once per batch and input (an inc per record cost ~5% of ingest).
            tally: dict[str, list[int]] = {}
            for records in batches.values():
                for record in records:
                    found += await self._apply(record, now, dirty, tally)
            for topic, (ok, fresh) in tally.items():
                source = self._inputs[topic]
                source.consumed_ok.inc(ok)
                if fresh:
                    source.events_in.inc(fresh)
            # Due work after the batch: a late check-in in this batch counts first.
            await self._advance_watermark()
            found += self._due(now)
            await self._flush_until_stored(found, dirty, now)
        try:
            await self._monitor.commit()
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions: the new owner replays; handlers are
            # idempotent and emitted triggers are in the changelog.
            log.warning("commit_failed", error=type(exc).__name__)
        await self._monitor.report_lag()

    async def _timer(self) -> None:
        while True:
            # The tick is a polling cadence in real time; what is due is decided by the
            # injected clock (a ManualClock in tests, a scaled one in the demo).
            await asyncio.sleep(self._tick)
            async with self._lock:
                now = self._clock.now()
                found = self._due(now)
                if found:
                    await self._flush_until_stored(found, set(), now)

    def _due(self, now: datetime) -> list[Detection]:
        """What is due at the watermark: nothing until every input partition was read."""
        behind = self._held_since if self.watermark is None else self.watermark
        WATERMARK_LAG.set(max(0.0, (now - behind).total_seconds()))
        if self._holding or self.watermark is None:
            return []
        return self.detector.due(min(now, self.watermark))

    async def _advance_watermark(self) -> None:
        """Move the watermark to the latest poll start that every owned input partition has
        been fetched since, if each is read to the high-water mark that fetch reported. A
        record produced before that moment is then applied (or dead-lettered) already."""
        assignment = self._consumer.assignment()
        if not assignment:
            return
        oldest_fetch = float("inf")
        for tp in assignment:
            try:
                highwater = self._consumer.highwater(tp)
                fetched_at = self._consumer.last_poll_timestamp(tp)
                position = await self._consumer.position(tp)
            except (AssertionError, IllegalStateError):
                return  # revoked meanwhile: the next poll sees the new assignment
            if highwater is None or fetched_at is None or position < highwater:
                return  # not read to its end, or never fetched: hold
            oldest_fetch = min(oldest_fetch, fetched_at)
        starts = self._poll_starts
        while len(starts) > 1 and starts[1][0] <= oldest_fetch:
            starts.popleft()
        if starts and starts[0][0] <= oldest_fetch:
            at = starts[0][1]
            if self._holding or self.watermark is None or at > self.watermark:
                self.watermark = at
            self._holding = False

    async def _apply(
        self,
        record: ConsumerRecord[bytes, bytes],
        now: datetime,
        dirty: set[str],
        tally: dict[str, list[int]],
    ) -> list[Detection]:
        """Applies one record; ``tally[topic]`` counts it (ok, and not one of our own)."""
        source = self._inputs[record.topic]
        try:
            event = decode_record(source.model, record)
        except DecodeError as error:
            await self._dead_letter(record, error, source.base_topic)
            return []
        if self._sites is not None:
            try:
                event = self._sites.current().check_event(event)
            except UnknownSite as exc:
                refused = DecodeError(f"{exc.field}: names no configured site", "unknown_site")
                await self._dead_letter(record, refused, source.base_topic)
                return []
        try:
            found = source.handle(event, now)
        except Exception as exc:  # one bad event must not stop detection
            log.error(
                "handler_failed", topic=record.topic, offset=record.offset, error=type(exc).__name__
            )
            await self._dead_letter(record, handler_failure(exc), source.base_topic)
            return []
        patient_id: str = event.patient_id
        if self._sites is not None and "site" in type(event).model_fields:
            # Only for a chain: a deployment of one clinic pays no extra labels() per event.
            kind = source.base_topic.removeprefix("followup.")
            SITE_EVENTS.labels(self._site_label(getattr(event, "site", None)), kind).inc()
        self._partition_of[patient_id] = record.partition
        dirty.add(patient_id)
        counts = tally.setdefault(record.topic, [0, 0])
        counts[0] += 1
        if event.source not in OWN_SOURCES:
            counts[1] += 1
        return found

    async def _flush_until_stored(
        self, found: list[Detection], dirty: set[str], now: datetime
    ) -> None:
        """The detector already counts these triggers as emitted: a broker that is away is
        waited for (the same deterministic event ids again), never skipped."""
        delay = 0.2
        while True:
            try:
                await self._flush(found, set(dirty), now)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("flush_retry", error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _flush(self, found: list[Detection], dirty: set[str], now: datetime) -> None:
        dirty |= {d.trigger.patient_id for d in found}
        futures = []
        for detection in found:
            trigger = detection.trigger
            futures.append(
                await self._producer.send(
                    self._names.triggers, value=encode(trigger), key=trigger.key()
                )
            )
        if futures:
            await asyncio.gather(*futures)
        await self._write_states(dirty)
        for detection in found:
            # Per trigger, not per event: cheap enough to count for one clinic too ("none").
            site = self._site_label(detection.trigger.site)
            TRIGGERS.labels(detection.trigger.kind, site).inc()
            SITE_TRIGGERS.labels(site, detection.trigger.kind).inc()
            lag = (now - detection.detectable_at).total_seconds()
            DETECTION_LAG.observe(max(0.0, lag))
            log.info(
                "trigger",
                kind=detection.trigger.kind,
                trigger_id=detection.trigger.event_id,
                patient_id=detection.trigger.patient_id,
            )
        TRACKED_APPOINTMENTS.set(self.detector.tracked_appointments)

    async def _write_states(self, patients: set[str]) -> None:
        """One changelog record per patient, in record batches per partition: the producer's
        per-message path costs as much as the detection itself at this volume (see
        bench/tracker_bench.py). Returns once the broker has acknowledged every batch."""
        changelog = changelog_topic(self._names)
        batches: dict[int, BatchBuilder] = {}
        futures: list[asyncio.Future[Any]] = []
        for patient_id in patients:
            state = self.detector.patients.get(patient_id)
            partition = self._partition_of.get(patient_id)
            if state is None or partition is None:
                continue
            key, value = patient_id.encode(), state.to_json()
            batch = batches.get(partition)
            if batch is not None and batch.append(key=key, value=value, timestamp=None) is not None:
                continue
            if batch is not None:  # full: send it and start the next
                futures.append(
                    await self._producer.send_batch(batch, changelog, partition=partition)
                )
            batch = batches[partition] = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                # Larger than a batch: the per-message path takes up to max_request_size.
                del batches[partition]
                futures.append(
                    await self._producer.send(changelog, value, key=key, partition=partition)
                )
        for partition, batch in batches.items():
            futures.append(await self._producer.send_batch(batch, changelog, partition=partition))
        if futures:
            await asyncio.gather(*futures)

    def _site_label(self, site: str | None) -> str:
        return self._sites.current().label(site) if self._sites is not None else "none"

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], error: DecodeError, base_topic: str
    ) -> None:
        await dead_letter_record(
            self._send_raw,
            self._names.deadletter,
            record,
            error,
            service=self._service,
            base_topic=base_topic,
            clock=self._clock,
            max_original_bytes=self._max_original_bytes,
        )
        INGEST_REJECTED.labels("kafka", error.error_type).inc()

    async def _send_raw(self, topic: str, value: bytes, key: bytes) -> None:
        await self._producer.send_and_wait(topic, value=value, key=key)
