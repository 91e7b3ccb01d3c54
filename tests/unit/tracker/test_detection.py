"""Detection rules with a controlled clock: each trigger, each clearing rule, time zones."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from common.clock import ManualClock
from schemas.events import AppointmentEvent, OutcomeEvent, TreatmentPlanEvent, TreatmentStage
from services.tracker.detection import Detection, DetectionRules, Detector, PatientState

VILNIUS = ZoneInfo("Europe/Vilnius")
NEW_YORK = ZoneInfo("America/New_York")
START = datetime(2026, 3, 2, 9, 30, tzinfo=VILNIUS)
RULES = DetectionRules(
    no_show_grace=timedelta(minutes=15),
    late_cancellation_window=timedelta(hours=24),
    stage_lead_days=3,
)


def appointment(
    status: str = "booked",
    *,
    at: datetime,
    appointment_id: str = "appt-1",
    start: datetime = START,
    change: str = "booked",
    **extra: Any,
) -> AppointmentEvent:
    return AppointmentEvent(
        event_id=f"{appointment_id}:{status}:{at.isoformat()}",
        occurred_at=at,
        source="test",
        change=change,  # type: ignore[arg-type]
        appointment_id=appointment_id,
        patient_id="pat-1",
        start=start,
        timezone=str(start.tzinfo),
        department="dental",
        practitioner_id="dr-7",
        status=status,  # type: ignore[arg-type]
        **extra,
    )


def plan(completed_at: datetime | None, tz: str = "Europe/Vilnius") -> TreatmentPlanEvent:
    return TreatmentPlanEvent(
        event_id="plan-1:v1",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        source="test",
        plan_id="plan-1",
        patient_id="pat-1",
        department="dental",
        timezone=tz,
        responsible_practitioner_id="dr-7",
        stages=[
            TreatmentStage(stage_id="s1", sequence=1, name="Extraction", completed_at=completed_at),
            TreatmentStage(stage_id="s2", sequence=2, name="Implant", max_interval_days=10),
        ],
    )


def outcome(kind: str, *, at: datetime, event_id: str = "o-1", **extra: Any) -> OutcomeEvent:
    return OutcomeEvent(
        event_id=event_id,
        occurred_at=at,
        source="test",
        outcome=kind,  # type: ignore[arg-type]
        patient_id="pat-1",
        channel="call_task",
        **extra,
    )


def ids(found: list[Detection]) -> list[str]:
    return [d.trigger.event_id for d in found]


def test_no_show_after_grace_exactly_once() -> None:
    clock = ManualClock(START - timedelta(days=2))
    detector = Detector(RULES)
    detector.on_appointment(appointment(at=clock.now()), clock.now())
    clock.set(START + timedelta(minutes=14))
    assert detector.due(clock.now()) == []
    clock.set(START + timedelta(minutes=15))
    found = detector.due(clock.now())
    assert ids(found) == ["no_show:appt-1"]
    trigger = found[0].trigger
    assert trigger.kind == "no_show" and trigger.appointment_start == START
    assert found[0].detectable_at == START + timedelta(minutes=15)
    assert trigger.timezone == "Europe/Vilnius"
    clock.advance(timedelta(hours=1))
    assert detector.due(clock.now()) == []
    # A duplicate of the booking after detection does not re-emit.
    assert detector.on_appointment(appointment(at=START - timedelta(days=2)), clock.now()) == []
    assert detector.due(clock.now() + timedelta(days=1)) == []


def test_explicit_no_show_emits_at_once_and_grace_then_adds_nothing() -> None:
    detector = Detector(RULES)
    now = START - timedelta(days=1)
    detector.on_appointment(appointment(at=now), now)
    found = detector.on_appointment(
        appointment("noshow", at=START + timedelta(minutes=5), change="noshow"),
        START + timedelta(minutes=5),
    )
    assert ids(found) == ["no_show:appt-1"]
    assert detector.due(START + timedelta(hours=2)) == []


def test_check_in_inside_grace_clears_no_show() -> None:
    detector = Detector(RULES)
    detector.on_appointment(appointment(at=START - timedelta(days=1)), START - timedelta(days=1))
    detector.on_appointment(
        appointment("checked-in", at=START + timedelta(minutes=5), change="status_changed"),
        START + timedelta(minutes=5),
    )
    assert detector.due(START + timedelta(hours=1)) == []


def test_late_delivered_check_in_with_event_time_inside_grace_clears_no_show() -> None:
    detector = Detector(RULES)
    detector.on_appointment(appointment(at=START - timedelta(days=1)), START - timedelta(days=1))
    # The clock is already past the grace when the check-in arrives; it is applied before
    # the due scan, and its event time says the patient came in time.
    late = START + timedelta(minutes=40)
    detector.on_appointment(
        appointment(
            "arrived",
            at=START + timedelta(minutes=10),
            change="status_changed",
            status_at=START + timedelta(minutes=10),
        ),
        late,
    )
    assert detector.due(late) == []


def test_reschedule_moves_the_grace_deadline() -> None:
    detector = Detector(RULES)
    detector.on_appointment(appointment(at=START - timedelta(days=3)), START - timedelta(days=3))
    later = START + timedelta(days=2)
    detector.on_appointment(
        appointment(at=START - timedelta(days=1), start=later, change="rescheduled"),
        START - timedelta(days=1),
    )
    assert detector.due(START + timedelta(hours=1)) == []
    found = detector.due(later + timedelta(minutes=15))
    assert ids(found) == ["no_show:appt-1"]
    assert found[0].trigger.appointment_start == later


def test_out_of_order_older_snapshot_is_ignored() -> None:
    detector = Detector(RULES)
    detector.on_appointment(
        appointment("cancelled", at=START - timedelta(days=1), change="cancelled"),
        START - timedelta(days=1),
    )
    # The original booking, delivered after the cancellation, must not revive the visit.
    detector.on_appointment(appointment(at=START - timedelta(days=5)), START - timedelta(days=1))
    assert detector.due(START + timedelta(hours=1)) == []
    assert detector.patients["pat-1"].appointments["appt-1"].status == "cancelled"


def test_entered_in_error_forgets_the_appointment() -> None:
    detector = Detector(RULES)
    detector.on_appointment(appointment(at=START - timedelta(days=2)), START - timedelta(days=2))
    detector.on_appointment(
        appointment("entered-in-error", at=START - timedelta(days=1), change="deleted"),
        START - timedelta(days=1),
    )
    assert detector.tracked_appointments == 0
    assert detector.due(START + timedelta(hours=1)) == []


def test_late_cancellation_by_patient_inside_window() -> None:
    detector = Detector(RULES)
    at = START - timedelta(hours=3)
    found = detector.on_appointment(
        appointment("cancelled", at=at, change="cancelled", cancelled_by="patient"), at
    )
    assert ids(found) == ["late_cancellation:appt-1"]
    again = detector.on_appointment(
        appointment("cancelled", at=at, change="cancelled", cancelled_by="patient"), at
    )
    assert again == []
    assert detector.due(START + timedelta(hours=1)) == []  # a cancelled visit is no no-show


def test_early_or_clinic_cancellation_is_not_late() -> None:
    detector = Detector(RULES)
    early = START - timedelta(hours=25)
    assert (
        detector.on_appointment(
            appointment("cancelled", at=early, change="cancelled", cancelled_by="patient"), early
        )
        == []
    )
    late = START - timedelta(hours=1)
    found = detector.on_appointment(
        appointment(
            "cancelled",
            at=late,
            change="cancelled",
            cancelled_by="clinic",
            appointment_id="appt-2",
        ),
        late,
    )
    assert ids(found) == ["clinic_cancellation:appt-2"]  # its own reason, never a late one


def test_clinic_cancellation_opens_at_once_without_a_plan() -> None:
    detector = Detector(RULES)
    at = START - timedelta(days=5)  # days ahead: not late, still a patient to rebook
    event = appointment("cancelled", at=at, change="cancelled", cancelled_by="clinic")
    found = detector.on_appointment(event, at)
    assert ids(found) == ["clinic_cancellation:appt-1"]
    trigger = found[0].trigger
    assert trigger.kind == "clinic_cancellation"
    assert trigger.plan_id is None and trigger.appointment_id == "appt-1"
    assert trigger.practitioner_id == "dr-7" and trigger.detected_at == at
    assert detector.on_appointment(event, at) == []  # once
    assert detector.due(START + timedelta(hours=1)) == []  # a cancelled visit is no no-show


def test_clinic_cancellation_of_a_past_visit_is_history() -> None:
    detector = Detector(RULES)
    at = START + timedelta(days=2)  # first seen long after: a backfill
    event = appointment("cancelled", at=at, change="cancelled", cancelled_by="clinic")
    assert detector.on_appointment(event, at) == []


def test_unanswered_call_without_case_emits_per_outcome() -> None:
    detector = Detector(RULES)
    at = START
    found = detector.on_outcome(outcome("no_answer", at=at, event_id="clinic-call-9"), at)
    assert ids(found) == ["unanswered_call:clinic-call-9"]
    assert found[0].trigger.case_id is None
    assert detector.on_outcome(outcome("no_answer", at=at, event_id="clinic-call-9"), at) == []
    assert detector.on_outcome(outcome("answered_declined", at=at, event_id="x"), at) == []


def test_no_answer_with_case_is_left_to_the_scheduler() -> None:
    detector = Detector(RULES)
    found = detector.on_outcome(
        outcome("voicemail", at=START, case_id="case-1", attempt_number=1), START
    )
    assert found == []


def test_call_task_without_result_in_its_window() -> None:
    detector = Detector(RULES)
    respond_by = START + timedelta(hours=4)
    detector.on_outcome(
        outcome(
            "task_created",
            at=START,
            case_id="case-1",
            attempt_number=2,
            respond_by=respond_by,
            event_id="case-1:2:task_created",
        ),
        START,
    )
    assert detector.due(respond_by - timedelta(seconds=1)) == []
    found = detector.due(respond_by)
    assert ids(found) == ["unanswered_call:case-1:2"]
    assert found[0].trigger.case_id == "case-1"
    assert detector.due(respond_by + timedelta(days=1)) == []


def test_call_task_result_even_before_task_created_clears_it() -> None:
    detector = Detector(RULES)
    detector.on_outcome(
        outcome("answered_rebooked", at=START, case_id="case-1", attempt_number=1), START
    )
    detector.on_outcome(
        outcome(
            "task_created",
            at=START - timedelta(minutes=1),
            case_id="case-1",
            attempt_number=1,
            respond_by=START + timedelta(hours=1),
            event_id="t",
        ),
        START,
    )
    assert detector.due(START + timedelta(days=1)) == []


def test_stage_window_at_risk_with_lead_and_cleared_by_new_booking() -> None:
    done = datetime(2026, 3, 2, 10, 0, tzinfo=VILNIUS)
    detector = Detector(RULES)
    detector.on_plan(plan(done), done)
    deadline = datetime(2026, 3, 12, 23, 59, 59, tzinfo=VILNIUS)
    warn = deadline - timedelta(days=3)
    assert detector.due(warn - timedelta(seconds=1)) == []
    found = detector.due(warn)
    assert ids(found) == ["stage_window_at_risk:plan-1:s2"]
    assert found[0].trigger.stage_deadline == deadline
    assert found[0].trigger.stage_id == "s2"

    # A second patient state: the booking of the next stage clears the risk.
    other = Detector(RULES)
    other.on_plan(plan(done), done)
    other.on_appointment(
        appointment(
            at=done + timedelta(days=1),
            appointment_id="appt-9",
            start=done + timedelta(days=9),
            plan_id="plan-1",
            stage_id="s2",
        ),
        done + timedelta(days=1),
    )
    assert other.due(warn) == []


def test_fulfilled_visit_completes_the_stage_and_starts_the_window() -> None:
    detector = Detector(RULES)
    detector.on_plan(plan(None), START - timedelta(days=10))
    detector.on_appointment(
        appointment(at=START - timedelta(days=2), plan_id="plan-1", stage_id="s1"),
        START - timedelta(days=2),
    )
    fulfilled_at = START + timedelta(hours=1)
    detector.on_appointment(
        appointment(
            "fulfilled",
            at=fulfilled_at,
            change="status_changed",
            status_at=fulfilled_at,
            plan_id="plan-1",
            stage_id="s1",
        ),
        fulfilled_at,
    )
    assert detector.due(START + timedelta(days=5)) == []
    found = detector.due(datetime(2026, 3, 9, 23, 59, 59, tzinfo=VILNIUS))
    assert ids(found) == ["stage_window_at_risk:plan-1:s2"]


def test_stage_lead_counts_clinic_calendar_days_across_dst() -> None:
    # US clocks spring forward on 2026-03-08. Deadline 10 local days after 2026-03-02:
    # 2026-03-12 23:59:59 EDT; three calendar days earlier is 2026-03-09 23:59:59 EDT,
    # which is not 72 hours of absolute time before the deadline on both sides of DST.
    done = datetime(2026, 3, 2, 10, 0, tzinfo=NEW_YORK)
    detector = Detector(RULES)
    detector.on_plan(plan(done, tz="America/New_York"), done)
    warn = datetime(2026, 3, 9, 23, 59, 59, tzinfo=NEW_YORK)
    assert warn.utcoffset() == timedelta(hours=-4)
    assert detector.due(warn - timedelta(seconds=1)) == []
    found = detector.due(warn)
    assert found[0].trigger.stage_deadline == datetime(2026, 3, 12, 23, 59, 59, tzinfo=NEW_YORK)
    assert found[0].trigger.timezone == "America/New_York"


def test_no_show_grace_is_absolute_time_across_dst() -> None:
    # Europe's clocks spring forward at 03:00 on 2026-03-29: a visit at 02:50 UTC+2
    # gets 15 real minutes of grace, not a wall-clock 15 that crosses the gap.
    start = datetime(2026, 3, 29, 2, 50, tzinfo=VILNIUS)
    detector = Detector(RULES)
    detector.on_appointment(appointment(at=start - timedelta(days=1), start=start), start)
    due = start.astimezone(UTC) + timedelta(minutes=15)
    assert detector.due(due - timedelta(seconds=1)) == []
    assert ids(detector.due(due)) == ["no_show:appt-1"]


def test_due_touches_only_due_patients() -> None:
    detector = Detector(RULES)
    for n in range(1000):
        start = START + timedelta(days=n)
        detector.on_appointment(
            appointment(at=START - timedelta(days=1), appointment_id=f"a{n}", start=start),
            START - timedelta(days=1),
        )
    assert detector.tracked_appointments == 1000
    found = detector.due(START + timedelta(days=1, minutes=15))
    assert ids(found) == ["no_show:a0", "no_show:a1"]
    assert detector.next_wakeup() == START + timedelta(days=2, minutes=15)


def test_one_wake_up_per_patient_reaches_each_rule_moment_in_turn() -> None:
    """The heap holds a patient's earliest moment only; evaluating it pushes the next, so a
    later visit's no-show, a no-show after a quiet stretch and the retention all come."""
    detector = Detector(RULES)
    before = START - timedelta(days=1)
    for n, days in enumerate((0, 2, 5)):
        detector.on_appointment(
            appointment(at=before, appointment_id=f"a{n}", start=START + timedelta(days=days)),
            before,
        )
    assert len(detector._wakeups) == 1
    assert detector.next_wakeup() == START + timedelta(minutes=15)
    assert ids(detector.due(START + timedelta(minutes=15))) == ["no_show:a0"]
    assert detector.next_wakeup() == START + timedelta(days=2, minutes=15)
    # A due() long after both remaining moments decides both at once.
    assert ids(detector.due(START + timedelta(days=6))) == ["no_show:a1", "no_show:a2"]
    assert detector.next_wakeup() == START + RULES.retention
    assert detector.due(START + timedelta(days=6)) == []  # nothing pushed twice
    detector.due(START + timedelta(days=5) + RULES.retention)
    assert detector.tracked_appointments == 0
    assert detector.next_wakeup() is None


def test_state_survives_a_json_round_trip_and_keeps_emitted() -> None:
    detector = Detector(RULES)
    detector.on_appointment(appointment(at=START - timedelta(days=1)), START - timedelta(days=1))
    detector.on_plan(plan(START - timedelta(days=1)), START)
    detector.due(START + timedelta(minutes=20))
    raw = detector.patients["pat-1"].to_json()
    restored = Detector(RULES)
    restored.load(PatientState.from_json(raw))
    assert restored.patients["pat-1"] == detector.patients["pat-1"]
    assert restored.due(START + timedelta(hours=1)) == []  # already emitted before restart


def test_a_changelog_record_is_validated_when_restored() -> None:
    detector = Detector(RULES)
    detector.on_appointment(appointment(at=START - timedelta(days=1)), START - timedelta(days=1))
    record = json.loads(detector.patients["pat-1"].to_json())
    assert record["appointments"]["appt-1"]["start"] == "2026-03-02T09:30:00+02:00"
    with pytest.raises(ValidationError):
        PatientState.from_json(json.dumps(record | {"unknown": 1}))
    record["appointments"]["appt-1"]["start"] = "not a time"
    with pytest.raises(ValidationError):
        PatientState.from_json(json.dumps(record))


def test_old_appointments_leave_memory_but_their_trigger_is_not_repeated() -> None:
    detector = Detector(RULES)
    detector.on_appointment(appointment(at=START - timedelta(days=1)), START - timedelta(days=1))
    assert ids(detector.due(START + timedelta(minutes=15))) == ["no_show:appt-1"]
    later = START + RULES.retention
    assert detector.due(later) == []
    assert detector.tracked_appointments == 0
    # A stale copy of the booking replayed afterwards emits nothing again.
    detector.on_appointment(appointment(at=START - timedelta(days=1)), later)
    assert detector.due(later + timedelta(minutes=1)) == []


def test_cancellation_after_a_reported_no_show_is_not_a_second_case() -> None:
    detector = Detector(RULES)
    detector.on_appointment(appointment(at=START - timedelta(days=1)), START - timedelta(days=1))
    assert ids(detector.due(START + timedelta(minutes=15))) == ["no_show:appt-1"]
    at = START + timedelta(hours=1)
    found = detector.on_appointment(
        appointment("cancelled", at=at, change="cancelled", cancelled_by="patient"), at
    )
    assert found == []


def test_arrival_belongs_to_its_slot_not_to_a_later_reschedule() -> None:
    detector = Detector(RULES)
    first = START - timedelta(days=10)
    detector.on_appointment(appointment(at=first - timedelta(days=1), start=first), first)
    detector.on_appointment(
        appointment("arrived", at=first, start=first, change="status_changed"), first
    )
    # The same appointment id moved to a new slot (a follow-up visit), then missed.
    detector.on_appointment(
        appointment(at=first + timedelta(hours=2), change="rescheduled"),
        first + timedelta(hours=2),
    )
    assert ids(detector.due(START + timedelta(minutes=15))) == ["no_show:appt-1"]


def test_attended_and_nothing_booked_gets_a_gentle_next_visit_case_before_it_is_due() -> None:
    rules = DetectionRules(stage_lead_days=3, next_visit_days={"dental": 14})
    detector = Detector(rules)
    done = START + timedelta(hours=1)
    detector.on_appointment(appointment("booked", at=START - timedelta(days=2)), START)
    detector.on_appointment(appointment("fulfilled", at=done, change="status_changed"), done)
    # Due by the end of 16 March (14 days); the gentle case comes 3 days before.
    warn = datetime(2026, 3, 13, 23, 59, 59, tzinfo=VILNIUS)
    assert detector.due(warn - timedelta(minutes=1)) == []
    found = detector.due(warn + timedelta(minutes=1))
    assert ids(found) == ["next_visit_due:appt-1"]
    trigger = found[0].trigger
    assert trigger.kind == "next_visit_due" and trigger.plan_id is None
    assert trigger.appointment_id is None and trigger.stage_deadline is None  # gentle
    assert (trigger.department, trigger.practitioner_id) == ("dental", "dr-7")
    assert detector.due(warn + timedelta(days=1)) == []  # once


def test_a_next_visit_booked_or_a_department_without_the_rule_opens_nothing() -> None:
    rules = DetectionRules(stage_lead_days=3, next_visit_days={"dental": 14})
    detector = Detector(rules)
    done = START + timedelta(hours=1)
    detector.on_appointment(appointment("fulfilled", at=done, change="status_changed"), done)
    later = START + timedelta(days=10)
    detector.on_appointment(
        appointment("booked", at=done, appointment_id="appt-2", start=later), done
    )
    assert all(d.trigger.kind != "next_visit_due" for d in detector.due(START + timedelta(days=12)))
    other = Detector(DetectionRules(stage_lead_days=3, next_visit_days={"surgery": 14}))
    other.on_appointment(appointment("fulfilled", at=done, change="status_changed"), done)
    assert other.due(START + timedelta(days=12)) == []


# --- the compact state (issue 16: resident bytes per tracked appointment) ----------------


def _decoded(appointment_id: str, patient_id: str) -> AppointmentEvent:
    """As the worker holds it: decoded from JSON, each datetime with its own parsed offset."""
    event = appointment(at=START - timedelta(days=1), appointment_id=appointment_id)
    raw = event.model_copy(update={"patient_id": patient_id}).model_dump_json()
    return AppointmentEvent.model_validate_json(raw)


def test_patients_share_only_empty_collections_and_a_write_gives_one_its_own() -> None:
    detector = Detector(RULES)
    for n in (1, 2):
        detector.on_appointment(_decoded(f"a{n}", f"pat-{n}"), START - timedelta(days=1))
    first, second = detector.patients["pat-1"], detector.patients["pat-2"]
    first.add_alias("placer-1", "a1")
    first.hold_plan(plan(START - timedelta(days=1)))
    first.record_emitted("no_show:a1")
    assert second.aliases == {} and second.plans == {} and second.emitted == []
    assert first.aliases == {"placer-1": "a1"} and first.emitted == ["no_show:a1"]
    with pytest.raises(TypeError, match="shared"):
        second.call_tasks["case:1"] = first.call_tasks.get("case:1")  # type: ignore[assignment]
    with pytest.raises(TypeError, match="shared"):
        second.emitted.append("no_show:a2")
    assert second.emitted == [] and first.call_tasks == {}


def test_held_appointments_share_zones_and_strings_and_serialise_as_they_came() -> None:
    detector = Detector(RULES)
    events = [_decoded(f"a{n}", f"pat-{n}") for n in (1, 2)]
    for event in events:
        detector.on_appointment(event, START - timedelta(days=1))
    one, two = (detector.patients[f"pat-{n}"].appointments[f"a{n}"] for n in (1, 2))
    starts = [event.start for event in events]
    assert starts[0] is not None and starts[1] is not None
    assert starts[0].tzinfo is not starts[1].tzinfo  # pydantic: one per value
    assert one.start.tzinfo is two.start.tzinfo and one.start == events[0].start
    assert one.timezone is two.timezone and one.department is two.department
    record = json.loads(detector.patients["pat-1"].to_json())
    assert record["appointments"]["a1"]["start"] == "2026-03-02T09:30:00+02:00"
    found, _second = detector.due(START + timedelta(minutes=15))
    assert found.trigger.appointment_id == "a1"
    assert found.trigger.appointment_start == events[0].start
    assert '"appointment_start":"2026-03-02T09:30:00+02:00"' in found.trigger.model_dump_json()


def test_a_restored_state_writes_the_same_record_and_takes_new_facts() -> None:
    detector = Detector(RULES)
    detector.on_appointment(_decoded("appt-1", "pat-1"), START - timedelta(days=1))
    raw = detector.patients["pat-1"].to_json()
    restored = Detector(RULES)
    restored.load(PatientState.from_json(raw))
    assert restored.patients["pat-1"].to_json() == raw
    restored.on_plan(plan(START - timedelta(days=1)), START)
    assert ids(restored.due(START + timedelta(minutes=15))) == ["no_show:appt-1"]
    assert list(restored.patients["pat-1"].plans) == ["plan-1"]
    assert restored.patients["pat-1"].emitted == ["no_show:appt-1"]
