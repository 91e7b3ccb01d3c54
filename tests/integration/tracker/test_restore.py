"""The restore after an assignment runs beside the group protocol, not inside its callback:
a restore longer than the consumer group's session keeps the member (one restore, not one
per rejoin), the worker is unready until it ends, and input queued meanwhile is applied
after the restored state, not overwritten by it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from common.clock import ManualClock
from common.kafka import KafkaPublisher
from schemas.events import TriggerEvent
from schemas.topics import TopicNames
from services.tracker.detection import DetectionRules, Detector
from services.tracker.worker import DetectionWorker, changelog_topic, ensure_changelog
from tests.support.kafka import read_all, read_events, read_records
from tests.support.polling import eventually
from tests.support.tracker import detection_worker
from tests.unit.tracker.events import booking

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 2, 7, 30, tzinfo=UTC)
# The broker's smallest session (group.min.session.timeout.ms), and a restore outlasting it.
SESSION_MS = 6000
RESTORE_DELAY = 9.0


class SlowRestore(DetectionWorker):
    """A changelog that takes longer to read than the session lasts."""

    reads = 0

    async def _read_changelog(self, partitions: set[int]) -> dict[str, tuple[int, bytes | None]]:
        self.reads += 1
        await asyncio.sleep(RESTORE_DELAY)
        return await super()._read_changelog(partitions)


async def test_a_restore_longer_than_the_session_keeps_the_member_and_the_queued_input(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher
) -> None:
    await ensure_changelog(kafka_bootstrap, topics)
    clock = ManualClock(START - timedelta(hours=1))
    first = detection_worker(kafka_bootstrap, topics, clock)
    await first.start()
    try:
        await publisher.publish(topics.appointments, booking("appt-1", "pat-1", START))
        await read_records(kafka_bootstrap, changelog_topic(topics), 1)
        await eventually(lambda: first.detector.tracked_appointments == 1)
    finally:
        await first.stop()

    second = SlowRestore(
        bootstrap=kafka_bootstrap,
        names=topics,
        group_id=f"{topics.prefix}tracker",
        detector=Detector(DetectionRules(no_show_grace=timedelta(minutes=15))),
        clock=clock,
        tick_seconds=0.1,
        session_timeout_ms=SESSION_MS,
    )
    await second.start()
    try:
        await eventually(lambda: second.reads == 1, timeout=60)
        # The patient arrives while the restore is still reading: it must not be applied
        # before (and then overwritten by) the restored booking.
        arrived = booking("appt-1", "pat-1", START).model_copy(
            update={
                "event_id": "appt-1:arrived",
                "occurred_at": START - timedelta(minutes=5),
                "change": "status_changed",
                "status": "arrived",
            }
        )
        await publisher.publish(topics.appointments, arrived)
        await asyncio.sleep(2.0)
        assert not second.ready.is_set()
        assert second.detector.tracked_appointments == 0
        await asyncio.wait_for(second.ready.wait(), 60)
        await eventually(
            lambda: second.detector.patients["pat-1"].appointments["appt-1"].status == "arrived"
        )
        # One restore: the broker kept the member through it (a dropped member rejoins and
        # restores again).
        assert second.reads == 1
        assert second.restores == 1
        clock.set(START + timedelta(minutes=20))
        await asyncio.sleep(1.0)  # timer ticks: an arrived patient is no no-show
    finally:
        await second.stop()
    assert await read_all(kafka_bootstrap, topics.triggers, quiet=0.5) == []


async def test_the_restored_patient_no_show_is_emitted_after_a_slow_restore(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher
) -> None:
    """The paused partitions are resumed: input after the restore flows and the timer runs."""
    await ensure_changelog(kafka_bootstrap, topics)
    clock = ManualClock(START - timedelta(hours=1))
    first = detection_worker(kafka_bootstrap, topics, clock)
    await first.start()
    try:
        await publisher.publish(topics.appointments, booking("appt-1", "pat-1", START))
        await read_records(kafka_bootstrap, changelog_topic(topics), 1)
    finally:
        await first.stop()
    second = SlowRestore(
        bootstrap=kafka_bootstrap,
        names=topics,
        group_id=f"{topics.prefix}tracker",
        detector=Detector(DetectionRules(no_show_grace=timedelta(minutes=15))),
        clock=clock,
        tick_seconds=0.1,
        session_timeout_ms=SESSION_MS,
    )
    await second.start()
    try:
        await asyncio.wait_for(second.ready.wait(), 60)
        await publisher.publish(topics.appointments, booking("appt-2", "pat-2", START))
        await eventually(lambda: second.detector.tracked_appointments == 2)
        clock.set(START + timedelta(minutes=16))
        triggers = await read_events(kafka_bootstrap, topics.triggers, TriggerEvent, 2)
    finally:
        await second.stop()
    assert sorted(t.event_id for t in triggers) == ["no_show:appt-1", "no_show:appt-2"]
    assert second.reads == 1
