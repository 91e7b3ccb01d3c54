from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from common.treatment import next_stage_deadline
from schemas import TreatmentPlanEvent, TreatmentStage

VILNIUS = ZoneInfo("Europe/Vilnius")


def plan(*stages: TreatmentStage) -> TreatmentPlanEvent:
    return TreatmentPlanEvent(
        event_id="plan-1:v1",
        occurred_at=datetime(2026, 3, 1, tzinfo=UTC),
        source="test",
        plan_id="plan-1",
        patient_id="pat-1",
        department="dental",
        timezone="Europe/Vilnius",
        responsible_practitioner_id="dr-1",
        stages=list(stages),
    )


def stage(seq: int, days: int | None = None, done: datetime | None = None) -> TreatmentStage:
    return TreatmentStage(
        stage_id=f"s{seq}",
        sequence=seq,
        name=f"Stage {seq}",
        max_interval_days=days,
        completed_at=done,
    )


def test_deadline_is_end_of_the_clinic_day_after_the_interval() -> None:
    done = datetime(2026, 3, 10, 15, 0, tzinfo=VILNIUS)
    result = next_stage_deadline(plan(stage(1, done=done), stage(2, days=14)))
    assert result is not None
    assert result.stage.stage_id == "s2"
    assert result.deadline == datetime(2026, 3, 24, 23, 59, 59, tzinfo=VILNIUS)


def test_daylight_saving_change_does_not_shift_the_deadline() -> None:
    # Lithuania moves clocks forward on 2026-03-29; the deadline stays at local 23:59:59.
    done = datetime(2026, 3, 20, 10, 0, tzinfo=VILNIUS)
    result = next_stage_deadline(plan(stage(1, done=done), stage(2, days=14)))
    assert result is not None
    assert result.deadline.astimezone(VILNIUS).hour == 23
    assert result.deadline.utcoffset() != done.utcoffset()


def test_observed_completion_counts_and_later_stage_is_next() -> None:
    done1 = datetime(2026, 3, 1, 9, tzinfo=VILNIUS)
    done2 = datetime(2026, 3, 8, 9, tzinfo=VILNIUS)
    p = plan(stage(1, done=done1), stage(2, days=7), stage(3, days=30))
    result = next_stage_deadline(p, {"s2": done2})
    assert result is not None and result.stage.stage_id == "s3"
    assert result.deadline.date() == datetime(2026, 4, 7).date()


def test_no_deadline_before_start_after_end_or_without_interval() -> None:
    assert next_stage_deadline(plan(stage(1), stage(2, days=7))) is None
    done = datetime(2026, 3, 1, tzinfo=VILNIUS)
    assert next_stage_deadline(plan(stage(1, done=done), stage(2, done=done))) is None
    assert next_stage_deadline(plan(stage(1, done=done), stage(2))) is None
