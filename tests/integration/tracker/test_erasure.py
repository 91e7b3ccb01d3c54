"""Issue 19: an erasure on followup.patients takes the doctor's notes out of the tracker's
state and its changelog (the compacted record is written again without them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from common.clock import ManualClock
from common.erasure import erasure_request
from common.kafka import KafkaPublisher
from common.topic_reader import read_to_end
from schemas.events import TreatmentPlanEvent, TreatmentStage
from schemas.topics import TopicNames
from services.tracker.worker import changelog_topic, ensure_changelog
from tests.support.polling import eventually
from tests.support.tracker import detection_worker

pytestmark = pytest.mark.integration

NOTES = "Anticoagulants: stop two days before."
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


async def test_an_erasure_rewrites_the_patients_changelog_record_without_the_notes(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher
) -> None:
    await ensure_changelog(kafka_bootstrap, topics)
    clock = ManualClock(NOW)
    worker = detection_worker(kafka_bootstrap, topics, clock)
    await worker.start()
    try:
        plan = TreatmentPlanEvent(
            event_id="plan-e:v1",
            occurred_at=NOW - timedelta(days=3),
            source="integrator",
            plan_id="plan-e",
            patient_id="pat-e",
            department="dental",
            timezone="Europe/Vilnius",
            stages=[
                TreatmentStage(stage_id="s1", sequence=1, name="Extraction", notes=NOTES),
                TreatmentStage(stage_id="s2", sequence=2, name="Implant", max_interval_days=21),
            ],
        )
        await publisher.publish(topics.plans, plan)
        await eventually(lambda: "pat-e" in worker.detector.patients)

        async def latest_record() -> bytes | None:
            records = await read_to_end(kafka_bootstrap, changelog_topic(topics))
            mine = [r.value for r in records if r.key == b"pat-e"]
            return mine[-1] if mine else None

        assert NOTES.encode() in (await eventually(latest_record) or b"")
        erasure = erasure_request("pat-e", requested_by="dpo", source="test", now=clock.now())
        await publisher.publish(topics.patients, erasure)

        async def rewritten() -> bool:
            latest = await latest_record()
            return latest is not None and NOTES.encode() not in latest

        await eventually(rewritten)
        held = worker.detector.patients["pat-e"].plans["plan-e"]
        assert [s.notes for s in held.stages] == [None, None]
        assert [s.stage_id for s in held.stages] == ["s1", "s2"]  # ids and the plan stay
    finally:
        await worker.stop()
