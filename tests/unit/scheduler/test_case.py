"""Every row of the scheduler README's "What moves a case", on the pure ``Case``: no database.

The policy is the service's own ``policy.yaml``; time is a plain moment passed in.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas.base import Channel
from schemas.events import (
    AppointmentEvent,
    OutcomeKind,
    StageEducation,
    TreatmentPlanEvent,
    TriggerEvent,
)
from schemas.topics import PLANS
from services.scheduler.cadence import AttemptRecord
from services.scheduler.case import (
    Case,
    CaseState,
    Context,
    Correction,
    KnownVisit,
    why_not_open,
)
from services.scheduler.cases import case_id_for
from services.scheduler.guards import Hold
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy
from tests.support.samples import sample_events
from tests.support.scheduler import (
    MISSED,
    missed_visit_now,
    no_show_trigger,
    stage_at_risk_trigger,
)

POLICY = CadencePolicy.load(DEFAULT_POLICY_PATH)
VILNIUS = ZoneInfo("Europe/Vilnius")
DETECTED = MISSED + timedelta(minutes=20)
DEADLINE = datetime(2026, 3, 16, 18, 0, tzinfo=VILNIUS)


def ctx(now: datetime, opted: frozenset[Channel] = frozenset()) -> Context:
    return Context(now.astimezone(UTC), POLICY, opted)


def trigger(**extra: Any) -> TriggerEvent:
    return no_show_trigger(missed=MISSED, **extra)


def visit(**extra: Any) -> AppointmentEvent:
    fields: dict[str, Any] = {
        "event_id": "appt-2:booked",
        "occurred_at": DETECTED,
        "source": "tracker",
        "change": "booked",
        "appointment_id": "appt-2",
        "patient_id": "pat-1",
        "start": MISSED + timedelta(days=2),
        "timezone": "Europe/Vilnius",
        "department": "dental",
        "status": "booked",
    }
    fields.update(extra)
    return AppointmentEvent.model_validate(fields)


def opened(**extra: Any) -> Case:
    case = Case.open(trigger(**extra), ctx(DETECTED))
    case.plan_next(ctx(DETECTED))
    return case


def planned(case: Case) -> AttemptRecord:
    (attempt,) = [a for a in case.attempts if a.state == "planned"]
    return attempt


def fire_next(case: Case, late: timedelta = timedelta()) -> tuple[AttemptRecord, datetime]:
    """Fire the planned attempt at its time; returns it fired and the moment."""
    due = planned(case)
    now = due.planned_at + late
    fired = case.fire(due.number, ctx(now))
    assert fired is not None
    return fired, now


def events(case: Case) -> list[str]:
    return [h.event for h in case.changes.history]


def outcome(case: Case, kind: OutcomeKind, at: datetime, number: int = 1, **kw: Any) -> None:
    attempt = case.attempt(number)
    assert attempt is not None
    case.record_outcome(number, kind, attempt.channel, ctx(at), **kw)


# --- trigger ---------------------------------------------------------------------------------


def test_a_trigger_opens_a_case_and_plans_the_first_call() -> None:
    case = opened()
    assert case.case_id == case_id_for("no_show:appt-1")
    assert case.state is CaseState.OPEN and case.fact_at == MISSED
    first = planned(case)
    assert (first.number, first.channel, first.template) == (1, "call_task", "no_show_call")
    assert first.planned_at == MISSED + timedelta(hours=1)  # PT1H after the missed visit
    assert events(case) == ["opened", "planned"]
    assert [(t.metric, t.label) for t in case.changes.tallies] == [
        ("opened", "no_show"),
        ("planned", "call_task"),
    ]


def test_a_second_trigger_for_the_same_reason_joins_the_open_case() -> None:
    case = opened()
    second = trigger(event_id="no_show:appt-2", appointment_id="appt-2")
    assert case.same_follow_up(second)
    case.join(second, ctx(DETECTED))
    assert events(case)[-1] == "joined" and len(case.attempts) == 1


def test_no_case_for_a_patient_who_must_not_be_contacted_or_a_visit_attended() -> None:
    assert why_not_open(trigger(), "deceased", None) == "not_contactable"
    assert why_not_open(trigger(), "active", None) is None
    came = KnownVisit(MISSED, "arrived", MISSED + timedelta(minutes=12))
    assert why_not_open(trigger(), None, came) == "attended"
    late = trigger(event_id="late_cancellation:appt-1", kind="late_cancellation")
    assert why_not_open(late, None, KnownVisit(MISSED, "fulfilled")) == "attended"
    # Another slot of the same appointment attended says nothing about this one.
    assert why_not_open(trigger(), None, KnownVisit(MISSED + timedelta(days=1), "arrived")) is None
    # A cancellation in time: no no-show; still a booked visit: the no-show stands.
    cancelled = KnownVisit(MISSED, "cancelled", MISSED - timedelta(hours=3))
    assert why_not_open(trigger(), None, cancelled) == "attended"
    assert why_not_open(trigger(), None, KnownVisit(MISSED, "booked")) is None


def test_our_own_call_task_expired_moves_the_case_on() -> None:
    case = opened()
    fire_next(case)
    task = case.attempts[0]
    case.task_expired(ctx(task.window_end))
    assert events(case)[-2:] == ["task_expired", "planned"]  # the planned step decided afresh
    assert planned(case).channel == "sms"


# --- one slip, two cases -----------------------------------------------------------------------


def test_a_missed_stage_visit_and_its_window_at_risk_are_one_follow_up() -> None:
    case = opened(plan_id="plan-1", stage_id="stage-2")
    at_risk = stage_at_risk_trigger("plan-1", "stage-2", missed=MISSED, stage_deadline=DEADLINE)
    assert case.same_follow_up(at_risk)
    case.join(at_risk, ctx(DETECTED + timedelta(minutes=5)))
    joined = [h for h in case.changes.history if h.event == "joined"]
    assert joined[0].detail == {"trigger": at_risk.event_id, "reason": "stage_window_at_risk"}
    # The deadline it brought now bounds the cadence; still one planned attempt.
    assert case.stage_deadline == DEADLINE and len(case.attempts) == 1
    # The same visit under another reason joins too; another stage or visit does not.
    late = trigger(event_id="late_cancellation:appt-1", kind="late_cancellation")
    assert case.same_follow_up(late)
    assert not case.same_follow_up(
        at_risk.model_copy(update={"stage_id": "stage-3", "kind": "stage_window_at_risk"})
    )
    assert not opened(appointment_id="appt-1").same_follow_up(
        trigger(event_id="x", kind="late_cancellation", appointment_id="appt-9")
    )


# --- outcomes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "resolution"),
    [("answered_rebooked", "recovered"), ("answered_declined", "declined")],
)
def test_an_answer_on_the_call_closes_the_case(kind: OutcomeKind, resolution: str) -> None:
    case = opened()
    _, now = fire_next(case)
    outcome(case, kind, now + timedelta(minutes=10))
    assert (case.state, case.resolution) == (CaseState.CLOSED, resolution)
    assert all(a.state != "planned" for a in case.attempts)  # the SMS step is cancelled
    assert events(case)[-2:] == ["outcome", "closed"]


@pytest.mark.parametrize("kind", ["no_answer", "busy", "voicemail"])
def test_unanswered_calls_take_the_next_step_and_another_slot(kind: OutcomeKind) -> None:
    case = opened()
    _, now = fire_next(case)
    outcome(case, kind, now + timedelta(minutes=30))
    assert planned(case).channel == "sms"
    fire_next(case)
    call = planned(case)
    assert call.channel == "call_task"
    assert call.planned_at.astimezone(VILNIUS).hour >= 12  # not the morning slot again


def test_failed_for_quiet_hours_is_the_next_step_not_a_lost_channel() -> None:
    case = opened()
    fire_next(case)
    sms, now = fire_next(case)
    outcome(case, "failed", now, number=sms.number, detail="quiet_hours")
    assert case.impossible == frozenset() and planned(case).number == 3


def test_a_callback_request_is_planned_when_the_patient_asked() -> None:
    case = opened()
    _, now = fire_next(case)
    asked = datetime(2026, 3, 3, 16, 15, tzinfo=VILNIUS)
    outcome(case, "callback_requested", now, respond_by=asked)
    assert case.attempts[0].callback_at == asked
    callback = planned(case)
    assert (callback.channel, callback.planned_at) == ("call_task", asked)
    # An hour asked for outside business hours moves into them.
    case = opened()
    _, now = fire_next(case)
    outcome(case, "callback_requested", now, respond_by=datetime(2026, 3, 3, 20, tzinfo=VILNIUS))
    assert planned(case).planned_at.astimezone(VILNIUS) == datetime(2026, 3, 4, 8, tzinfo=VILNIUS)


@pytest.mark.parametrize(
    ("kind", "detail", "lost"),
    [
        ("wrong_number", None, {"call_task", "sms"}),
        ("bounced", None, {"email"}),
        ("failed", "provider_21211", {"sms"}),
        ("channel_impossible", "no_phone", {"call_task", "sms"}),
    ],
)
def test_a_lost_channel_is_impossible_for_the_case_and_the_cadence_falls_back(
    kind: OutcomeKind, detail: str | None, lost: set[str]
) -> None:
    case = opened()
    fire_next(case)
    sms, now = fire_next(case)
    case.record_outcome(sms.number, kind, "sms", ctx(now), detail=detail)
    assert case.impossible == lost
    history = [h for h in case.changes.history if h.event == "channels_lost"]
    assert history[0].detail["channels"] == sorted(lost)
    assert planned(case).channel not in lost


def test_opt_out_and_in_replan_the_planned_step() -> None:
    case = opened()
    fire_next(case)
    assert planned(case).channel == "sms"
    now = DETECTED + timedelta(hours=2)
    case.opt("opt_out", "sms", ctx(now, frozenset({"sms"})))
    assert planned(case).channel != "sms" and events(case)[-2] == "opt_out"
    case.opt("opt_in", "sms", ctx(now))
    assert planned(case).channel == "sms"


def test_receipts_are_recorded_and_never_hide_a_call_result() -> None:
    case = opened()
    _, now = fire_next(case)
    outcome(case, "task_created", now)
    assert recorded(case) == "task_created"
    sms_step = planned(case)
    outcome(case, "no_answer", now + timedelta(minutes=5))
    outcome(case, "delivered", now + timedelta(minutes=6))  # a late receipt
    assert recorded(case) == "no_answer"
    assert planned(case).channel == sms_step.channel


def recorded(case: Case, number: int = 1) -> OutcomeKind | None:
    attempt = case.attempt(number)
    return attempt.outcome if attempt is not None else None


def _escalating(supervisor: str | None = None) -> Case:
    """A stage case whose deadline is too close for the cadence: it escalates."""
    case = Case.open(trigger(stage_deadline=MISSED + timedelta(days=2)), ctx(DETECTED))
    case.supervisor_id = supervisor
    case.plan_next(ctx(DETECTED))
    return case


def test_a_handled_escalation_closes_escalated_an_unanswered_one_goes_to_the_supervisor() -> None:
    case = _escalating()
    escalation = planned(case)
    assert escalation.purpose == "escalation" and escalation.escalate_to == "dr-7"
    assert case.state is CaseState.ESCALATING
    _, now = fire_next(case)
    outcome(case, "callback_requested", now + timedelta(minutes=5))  # the doctor took it on
    assert (case.state, case.resolution) == (CaseState.CLOSED, "escalated")

    case = _escalating(supervisor="sup-1")
    _, now = fire_next(case)
    outcome(case, "no_answer", now + timedelta(minutes=5))
    assert planned(case).escalate_to == "sup-1"
    _, now = fire_next(case)
    outcome(case, "no_answer", now + timedelta(minutes=5), number=2)
    assert (case.state, case.resolution) == (CaseState.CLOSED, "escalated")  # once


# --- bookings and appointments -------------------------------------------------------------------


def test_a_booking_closes_superseded_before_contact_recovered_after_and_withdraws_the_task() -> (
    None
):
    case = opened()
    case.appointment(visit(), ctx(DETECTED + timedelta(minutes=5)))
    assert case.resolution == "superseded" and events(case)[-2:] == ["booked", "closed"]

    case = opened()
    _, now = fire_next(case)
    case.appointment(visit(), ctx(now + timedelta(minutes=5)))
    assert case.resolution == "recovered"
    withdrawal = case.changes.commands[-1]
    assert withdrawal.purpose == "withdrawal"
    assert withdrawal.idempotency_key == f"{case.case_id}:1:withdrawal"
    assert case.attempts[0].withdrawn_at == (now + timedelta(minutes=5)).astimezone(UTC)


def test_a_booking_that_does_not_satisfy_the_case_leaves_it_open() -> None:
    case = opened()
    case.appointment(visit(department="surgery"), ctx(DETECTED))
    assert case.state is CaseState.OPEN


def test_an_arrival_after_the_no_show_clears_the_case_without_contact() -> None:
    case = opened()
    came = missed_visit_now("arrived", DETECTED, status_at=MISSED + timedelta(minutes=12))
    case.appointment(came, ctx(DETECTED + timedelta(minutes=5)))
    assert (case.state, case.resolution) == (CaseState.CLOSED, "cleared")
    assert events(case)[-2:] == ["cleared", "closed"]
    assert case.changes.commands == []  # nothing went out, nothing to take back
    assert all(a.state == "cancelled" for a in case.attempts)


def test_an_arrival_after_the_call_task_went_out_withdraws_it() -> None:
    case = opened()
    _, now = fire_next(case)
    fulfilled = missed_visit_now("fulfilled", now)
    case.appointment(fulfilled, ctx(now + timedelta(minutes=3)))
    assert case.resolution == "cleared"
    (withdrawal,) = [c for c in case.changes.commands if c.purpose == "withdrawal"]
    assert withdrawal.attempt_number == 1 and "withdrawn" in events(case)


def test_a_cancellation_before_the_start_clears_a_no_show() -> None:
    case = opened()
    in_time = missed_visit_now("cancelled", DETECTED, status_at=MISSED - timedelta(hours=2))
    case.appointment(in_time, ctx(DETECTED))
    assert case.resolution == "cleared"
    # After the start, a cancellation says nothing new: the no-show stands.
    case = opened()
    case.appointment(
        in_time.model_copy(update={"status_at": MISSED + timedelta(hours=1)}), ctx(DETECTED)
    )
    assert case.state is CaseState.OPEN


def test_a_plan_change_moves_the_deadline_and_replans() -> None:
    case = opened()
    assert planned(case).purpose == "follow_up"
    case.deadline_changed(MISSED + timedelta(days=2), "sup-1", ctx(DETECTED))
    assert case.stage_deadline == MISSED + timedelta(days=2)
    # Too close for the cadence now: the doctor is asked.
    assert case.supervisor_id == "sup-1" and planned(case).purpose == "escalation"
    assert "deadline_changed" in events(case)
    before = len(case.changes.history)
    case.deadline_changed(MISSED + timedelta(days=2), "sup-1", ctx(DETECTED))
    assert len(case.changes.history) == before  # the same deadline again: nothing


def test_a_case_of_a_plan_stage_takes_the_stage_and_its_deadline_from_the_plan() -> None:
    plan = sample_events()[PLANS]  # stage-2 "Implant" of plan-1, 90 days after stage-1
    assert isinstance(plan, TreatmentPlanEvent)
    stage = trigger(plan_id="plan-1", stage_id="stage-2", practitioner_id=None)
    case = Case.open(stage, ctx(DETECTED), plan)
    assert (case.stage_name, case.doctor_notes) == ("Implant", "Check healing first.")
    assert (case.practitioner_id, case.supervisor_id) == ("dr-7", "dr-1")
    completed = plan.stages[0].completed_at
    assert completed is not None and case.stage_deadline is not None
    assert case.stage_deadline.date() >= (completed + timedelta(days=90)).date()


def test_the_stage_explained_for_the_patient_rides_on_every_command_of_the_case() -> None:
    plan = sample_events()[PLANS]
    assert isinstance(plan, TreatmentPlanEvent)
    education = [StageEducation(language="lt", text="Implantas turi sugyti.")]
    stages = [s.model_copy(update={"education": education}) for s in plan.stages]
    plan = plan.model_copy(update={"stages": stages})
    case = Case.open(trigger(plan_id="plan-1", stage_id="stage-2"), ctx(DETECTED), plan)
    case.plan_next(ctx(DETECTED))
    fire_next(case)
    [command] = case.changes.commands
    assert command.education == education


@pytest.mark.parametrize("status", ["deceased", "transferred_out"])
def test_a_patient_who_left_closes_the_case_and_the_task_out_is_withdrawn(status: Any) -> None:
    case = opened()
    _, now = fire_next(case)
    case.patient_left(status, now + timedelta(minutes=1))
    assert case.resolution == status
    assert [c.purpose for c in case.changes.commands][-1] == "withdrawal"
    assert all(a.state != "planned" for a in case.attempts)


# --- firing ---------------------------------------------------------------------------------------


def test_firing_makes_the_command_counts_the_contact_and_plans_the_next_step() -> None:
    case = opened()
    due = planned(case)
    assert case.fire(due.number, ctx(due.planned_at)) is not None
    (command,) = case.changes.commands
    assert command.idempotency_key == f"{case.case_id}:1" and command.channel == "call_task"
    assert command.previous_attempts == []  # the attempts before this one: none
    assert case.state is CaseState.CONTACTING and case.first_contact_at is not None
    assert [c.attempt_number for c in case.changes.contacts] == [1]
    assert planned(case).number == 2
    assert case.fire(1, ctx(due.planned_at)) is None  # fired once only
    fire_next(case)
    second = case.changes.commands[-1]
    assert [p.attempt_number for p in second.previous_attempts] == [1]


def test_a_held_attempt_is_planned_afresh_from_the_hold() -> None:
    case = opened()
    due = planned(case)
    until = due.planned_at + timedelta(days=1)
    assert case.fire(due.number, ctx(due.planned_at), Hold("frequency_cap", until)) is None
    again = planned(case)
    assert again.number == 1 and again.planned_at >= until
    assert case.changes.commands == [] and "held" in events(case)


def test_an_attempt_found_after_its_window_is_cancelled_and_planned_afresh() -> None:
    case = opened()
    due = planned(case)
    assert case.fire(due.number, ctx(due.window_end + timedelta(minutes=1))) is None
    assert case.attempts[0].state == "cancelled" and planned(case).number == 2
    assert "expired" in events(case)


# --- corrections ----------------------------------------------------------------------------------


def test_a_correction_reopens_a_case_the_wrong_outcome_closed() -> None:
    case = opened()
    _, now = fire_next(case)
    outcome(case, "answered_rebooked", now)
    fix = Correction("corr-1", "no_answer", "admin-3")
    assert case.correct(1, fix, ctx(now + timedelta(hours=1)), other_open=False) == "applied"
    assert case.state is CaseState.CONTACTING and case.resolution is None
    assert events(case)[-3:] == ["corrected", "reopened", "planned"]
    assert planned(case).channel == "sms"


def test_a_correction_is_only_recorded_when_another_reason_closed_the_case() -> None:
    case = opened()
    _, now = fire_next(case)
    case.appointment(visit(), ctx(now))
    fix = Correction("corr-1", "no_answer", "admin-3")
    assert case.correct(1, fix, ctx(now), other_open=False) == "recorded"
    assert case.state is CaseState.CLOSED
    # Closed by the wrong outcome but another case is open by now: recorded only.
    case = opened()
    _, now = fire_next(case)
    outcome(case, "answered_declined", now)
    assert case.correct(1, fix, ctx(now), other_open=True) == "recorded"
    with pytest.raises(LookupError):
        case.correct(9, fix, ctx(now), other_open=False)


def test_review_closes_once_the_last_window_is_over() -> None:
    # A late cancellation: four steps, the last a call task whose window must end first.
    case = opened(event_id="late_cancellation:appt-1", kind="late_cancellation")
    for _ in range(4):
        attempt, now = fire_next(case)
        kind: OutcomeKind = "no_answer" if attempt.channel == "call_task" else "delivered"
        outcome(case, kind, now + timedelta(minutes=5), number=attempt.number)
    assert case.review_at == case.attempts[-1].window_end
    assert case.state is not CaseState.CLOSED
    case.review(ctx(case.review_at))
    assert (case.state, case.resolution) == (CaseState.CLOSED, "unreachable")


# --- no phone and no email ----------------------------------------------------------------------


def test_no_phone_goes_straight_to_email_and_no_email_then_escalates_with_the_reason() -> None:
    case = opened()
    _, now = fire_next(case)
    outcome(case, "no_answer", now + timedelta(hours=1))
    sms, now = fire_next(case)
    case.record_outcome(sms.number, "channel_impossible", "sms", ctx(now), detail="no_phone")
    email = planned(case)
    # The SMS never went out: its step goes at once to the channel still possible.
    assert email.channel == "email" and email.planned_at == now.astimezone(UTC)
    assert case.changes.uncounted == [sms.number]  # not a contact for the caps
    sent, now = fire_next(case)
    case.record_outcome(sent.number, "channel_impossible", "email", ctx(now), detail="no_email")
    escalation = planned(case)
    assert escalation.purpose == "escalation" and escalation.escalate_to == "dr-7"
    assert case.state is CaseState.ESCALATING and case.resolution is None
    why = [h for h in case.changes.history if h.event == "escalation_planned"][-1]
    assert why.detail["reason"] == "no_channel"
    assert why.detail["channels_lost"] == ["call_task", "email", "sms"]


def test_no_contact_at_all_escalates_at_once() -> None:
    case = opened()
    _, now = fire_next(case)
    case.record_outcome(1, "channel_impossible", "call_task", ctx(now), detail="no_contact")
    assert planned(case).purpose == "escalation"


# --- the frequency cap counts only what went out -----------------------------------------------


@pytest.mark.parametrize(
    ("kind", "detail", "counted"),
    [
        ("channel_impossible", "no_phone", False),
        ("failed", "window_passed", False),
        ("failed", "runaway_guard", False),
        ("failed", "gave_up_timeout", False),
        ("failed", "delivery_unknown", True),
        ("withdrawn", "never_sent", False),
        ("withdrawn", "no_task", False),
        ("sent", None, True),
        ("delivered", None, True),
    ],
)
def test_only_contacts_that_went_out_count(
    kind: OutcomeKind, detail: str | None, counted: bool
) -> None:
    case = opened()
    fire_next(case)
    sms, now = fire_next(case)
    case.record_outcome(sms.number, kind, "sms", ctx(now), detail=detail)
    assert (sms.number in case.changes.uncounted) is not counted


# --- the patient's zone ---------------------------------------------------------------------------


def test_quiet_hours_are_planned_in_the_patient_s_zone() -> None:
    evening = datetime(2026, 3, 2, 19, 30, tzinfo=VILNIUS)  # 21:30 in Tbilisi
    late = trigger(
        event_id="late_cancellation:appt-1",
        kind="late_cancellation",
        detected_at=evening - timedelta(hours=2),
        patient_timezone="Asia/Tbilisi",
    )
    case = Case.open(late, ctx(evening - timedelta(hours=2)))
    case.plan_next(ctx(evening - timedelta(hours=2)))
    sms = planned(case)  # PT2H after: 21:30 in Tbilisi, quiet there
    assert sms.channel == "sms"
    assert sms.planned_at.astimezone(ZoneInfo("Asia/Tbilisi")).hour == 8
    in_clinic_zone = Case.open(replace_zone(late), ctx(evening - timedelta(hours=2)))
    in_clinic_zone.plan_next(ctx(evening - timedelta(hours=2)))
    assert planned(in_clinic_zone).planned_at == evening.astimezone(UTC)


def replace_zone(t: TriggerEvent) -> TriggerEvent:
    return t.model_copy(update={"patient_timezone": None})


# --- saving: what the ledger writes ---------------------------------------------------------------


def test_the_difference_since_loading_is_what_gets_written() -> None:
    case = opened().loaded()
    assert case.attempt_changes().inserted == [] and not case.row_changed()
    fire_next(case)
    changes = case.attempt_changes()
    assert [a.number for a in changes.updated] == [1]  # fired
    assert [a.number for a in changes.inserted] == [2]  # the next step
    assert changes.deleted == [] and case.row_changed()  # contacting now
    loaded = replace(case).loaded()
    loaded.opt("opt_out", "sms", ctx(DETECTED + timedelta(hours=2), frozenset({"sms"})))
    assert [a.number for a in loaded.attempt_changes().updated] == [2]  # replanned in place
    assert loaded.attempt_changes().inserted == []
