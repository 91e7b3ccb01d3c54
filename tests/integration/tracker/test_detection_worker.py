"""The detection worker against the real broker: JSON on Kafka in, triggers out, restarts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from common.clock import ManualClock
from common.kafka import KafkaPublisher
from schemas.events import (
    AppointmentEvent,
    DeadLetter,
    OutcomeEvent,
    TreatmentPlanEvent,
    TreatmentStage,
    TriggerEvent,
)
from schemas.topics import TopicNames
from services.tracker.worker import DetectionWorker, changelog_topic, ensure_changelog
from tests.support.kafka import read_all, read_events, read_records
from tests.support.polling import eventually
from tests.support.tracker import detection_worker
from tests.unit.tracker.events import booking as canonical_booking

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 2, 7, 30, tzinfo=UTC)


def booking(appointment_id: str = "appt-1", patient_id: str = "pat-1") -> AppointmentEvent:
    return canonical_booking(appointment_id, patient_id, START)


async def test_no_show_survives_a_restart_and_is_emitted_once(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher
) -> None:
    await ensure_changelog(kafka_bootstrap, topics)
    clock = ManualClock(START - timedelta(hours=1))
    first = detection_worker(kafka_bootstrap, topics, clock)
    await first.start()
    try:
        await publisher.publish(topics.appointments, booking())
        await eventually(lambda: first.detector.tracked_appointments == 1)
        stored = await read_records(kafka_bootstrap, changelog_topic(topics), 1)
        assert stored[0].key == b"pat-1"
    finally:
        await first.stop()  # between the booking and its grace deadline

    # The state is on the changelog, not just in the stopped worker's memory.
    clock.set(START + timedelta(minutes=16))
    second = detection_worker(kafka_bootstrap, topics, clock)
    await second.start()
    try:
        triggers = await read_events(kafka_bootstrap, topics.triggers, TriggerEvent, 1)
    finally:
        await second.stop()
    assert [t.event_id for t in triggers] == ["no_show:appt-1"]
    assert triggers[0].detected_at == clock.now()

    # A third start (same group, replayed or not) finds the trigger recorded as emitted.
    clock.advance(timedelta(hours=1))
    third = detection_worker(kafka_bootstrap, topics, clock)
    await third.start()
    try:
        await asyncio.wait_for(third.ready.wait(), 30)
        assert third.detector.patients["pat-1"].emitted == ["no_show:appt-1"]
        await asyncio.sleep(0.5)  # a few timer ticks
    finally:
        await third.stop()
    records = await read_all(kafka_bootstrap, topics.triggers, quiet=1.0)
    assert [r.key for r in records] == [b"pat-1"]
    changelog = await read_all(kafka_bootstrap, changelog_topic(topics), quiet=0.5)
    assert {r.key for r in changelog} == {b"pat-1"}


@pytest.fixture
async def running(
    kafka_bootstrap: str, topics: TopicNames
) -> AsyncIterator[tuple[DetectionWorker, ManualClock]]:
    """One worker whose clock is past the grace of START."""
    await ensure_changelog(kafka_bootstrap, topics)
    clock = ManualClock(START + timedelta(hours=1))
    worker = detection_worker(kafka_bootstrap, topics, clock)
    await worker.start()
    yield worker, clock
    await worker.stop()


async def test_bad_json_is_dead_lettered_and_the_next_event_flows(
    kafka_bootstrap: str,
    topics: TopicNames,
    publisher: KafkaPublisher,
    running: tuple[DetectionWorker, ManualClock],
) -> None:
    worker, clock = running
    await publisher.publish_raw(topics.appointments, b"{not json", key=b"pat-2")
    wrong = booking().model_dump(mode="json") | {"status": "maybe"}
    await publisher.publish_raw(topics.appointments, json.dumps(wrong).encode(), key=b"pat-2")
    # Ahead of the clock when first seen (a visit already over then is a backfill: never
    # chased), then missed.
    later = START + timedelta(hours=2)
    await publisher.publish(topics.appointments, canonical_booking("appt-2", "pat-2", later))
    await eventually(lambda: worker.detector.tracked_appointments == 1)
    clock.set(later + timedelta(minutes=16))
    triggers = await read_events(kafka_bootstrap, topics.triggers, TriggerEvent, 1)
    letters = await read_events(kafka_bootstrap, topics.deadletter, DeadLetter, 2)
    assert triggers[0].event_id == "no_show:appt-2"
    assert sorted(letter.error_type for letter in letters) == ["invalid_event", "invalid_json"]
    assert all(letter.source_topic == topics.appointments for letter in letters)


async def test_two_replicas_split_the_partitions_and_emit_each_trigger_once(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher
) -> None:
    await ensure_changelog(kafka_bootstrap, topics)
    clock = ManualClock(START - timedelta(hours=1))
    first = detection_worker(kafka_bootstrap, topics, clock)
    await first.start()
    patients = [f"pat-{n}" for n in range(12)]
    try:
        await publisher.publish_many(
            topics.appointments, [booking(f"appt-{p}", p) for p in patients]
        )
        await eventually(lambda: first.detector.tracked_appointments == len(patients))
        second = detection_worker(kafka_bootstrap, topics, clock)
        await second.start()
        try:
            # The second replica takes half the partitions and restores their patients.
            await eventually(
                lambda: (
                    first.ready.is_set()
                    and second.ready.is_set()
                    and first.detector.tracked_appointments + second.detector.tracked_appointments
                    == len(patients)
                ),
                timeout=60,
            )
            assert first.detector.tracked_appointments > 0
            assert second.detector.tracked_appointments > 0
            clock.set(START + timedelta(minutes=20))
            triggers = await read_events(
                kafka_bootstrap, topics.triggers, TriggerEvent, len(patients)
            )
            await asyncio.sleep(1.0)  # room for a duplicate to show up, if one were coming
        finally:
            await second.stop()
    finally:
        await first.stop()
    records = await read_all(kafka_bootstrap, topics.triggers, quiet=1.0)
    assert len(records) == len(patients)
    assert sorted(t.event_id for t in triggers) == sorted(f"no_show:appt-{p}" for p in patients)


async def test_plans_and_outcomes_as_json_on_kafka_give_their_triggers(
    kafka_bootstrap: str,
    topics: TopicNames,
    publisher: KafkaPublisher,
    running: tuple[DetectionWorker, ManualClock],
) -> None:
    _worker, clock = running
    completed = START - timedelta(days=20)
    plan = TreatmentPlanEvent(
        event_id="plan-7:v1",
        occurred_at=completed,
        source="integrator",
        plan_id="plan-7",
        patient_id="pat-7",
        department="dental",
        timezone="Europe/Vilnius",
        responsible_practitioner_id="dr-7",
        stages=[
            TreatmentStage(stage_id="s1", sequence=1, name="Extraction", completed_at=completed),
            TreatmentStage(stage_id="s2", sequence=2, name="Implant", max_interval_days=21),
        ],
    )
    call = OutcomeEvent(
        event_id="clinic-call-1",
        occurred_at=clock.now(),
        source="integrator",
        outcome="busy",
        patient_id="pat-8",
        channel="call_task",
    )
    await publisher.publish(topics.plans, plan)
    await publisher.publish(topics.outcomes, call)
    triggers = await read_events(kafka_bootstrap, topics.triggers, TriggerEvent, 2)
    by_kind = {t.kind: t for t in triggers}
    assert by_kind["stage_window_at_risk"].event_id == "stage_window_at_risk:plan-7:s2"
    assert by_kind["stage_window_at_risk"].stage_deadline is not None
    assert by_kind["unanswered_call"].event_id == "unanswered_call:clinic-call-1"


async def test_a_state_larger_than_a_record_batch_still_reaches_the_changelog(
    kafka_bootstrap: str,
    topics: TopicNames,
    publisher: KafkaPublisher,
    running: tuple[DetectionWorker, ManualClock],
) -> None:
    # Changelog records go out in record batches (16 KiB); a long-notes plan makes one
    # patient's state larger than that, next to small states in the same batch.
    stages = [
        TreatmentStage(stage_id=f"s{n}", sequence=n, name=f"Stage {n}", notes="x" * 4000)
        for n in range(1, 9)
    ]
    plan = TreatmentPlanEvent(
        event_id="plan-big:v1",
        occurred_at=START - timedelta(days=1),
        source="integrator",
        plan_id="plan-big",
        responsible_practitioner_id="dr-big",
        patient_id="pat-big",
        department="dental",
        timezone="Europe/Vilnius",
        stages=stages,
    )
    small = [booking(f"appt-s{n}", f"pat-s{n}") for n in range(20)]
    await publisher.publish_many(topics.appointments, small)
    await publisher.publish(topics.plans, plan)
    changelog = await read_records(kafka_bootstrap, changelog_topic(topics), len(small) + 1)
    by_key = {r.key: r.value for r in changelog}
    assert set(by_key) == {b"pat-big"} | {f"pat-s{n}".encode() for n in range(20)}
    big = by_key[b"pat-big"]
    assert big is not None and len(big) > 16384
    assert json.loads(big)["plans"]["plan-big"]["stages"][7]["notes"] == "x" * 4000
