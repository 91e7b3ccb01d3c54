"""The clinic's own workflow (issue 18) on the pure ``Case`` and cadence: clinic
cancellations, schedule churn, closure days, clinical concerns, desk capacity, routing,
risk. No database; the policy is the service's own ``policy.yaml`` unless a test says."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas.events import AppointmentEvent, TriggerEvent
from services.scheduler.cadence import CaseView, Escalate, PlanAttempt, next_decision
from services.scheduler.case import Case, CaseState, Context, KnownVisit, why_not_open
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy, PolicyError

POLICY = CadencePolicy.load(DEFAULT_POLICY_PATH)
VILNIUS = ZoneInfo("Europe/Vilnius")
# A Wednesday morning: the clinic cancels Friday's visit (doctor ill).
CANCELLED_AT = datetime(2026, 3, 4, 9, 0, tzinfo=VILNIUS)
VISIT = datetime(2026, 3, 6, 10, 0, tzinfo=VILNIUS)


def ctx(now: datetime, policy: CadencePolicy = POLICY) -> Context:
    return Context(now.astimezone(UTC), policy)


def clinic_cancellation(**extra: Any) -> TriggerEvent:
    fields: dict[str, Any] = {
        "event_id": "clinic_cancellation:appt-1",
        "occurred_at": CANCELLED_AT,
        "source": "tracker",
        "kind": "clinic_cancellation",
        "patient_id": "pat-1",
        "department": "dental",
        "timezone": "Europe/Vilnius",
        "appointment_id": "appt-1",
        "appointment_start": VISIT,
        "practitioner_id": "dr-7",
        "detected_at": CANCELLED_AT + timedelta(seconds=2),
    }
    fields.update(extra)
    return TriggerEvent.model_validate(fields)


def rebooked(at: datetime, start: datetime = VISIT, **extra: Any) -> AppointmentEvent:
    fields: dict[str, Any] = {
        "event_id": f"appt-1:booked:{at.isoformat()}",
        "occurred_at": at,
        "source": "tracker",
        "change": "booked",
        "appointment_id": "appt-1",
        "patient_id": "pat-1",
        "start": start,
        "timezone": "Europe/Vilnius",
        "department": "dental",
        "status": "booked",
    }
    fields.update(extra)
    return AppointmentEvent.model_validate(fields)


def opened(trigger: TriggerEvent, now: datetime, policy: CadencePolicy = POLICY) -> Case:
    case = Case.open(trigger, ctx(now, policy))
    case.plan_next(ctx(now, policy))
    return case


def planned(case: Case) -> Any:
    (attempt,) = [a for a in case.attempts if a.state == "planned"]
    return attempt


def events(case: Case) -> list[str]:
    return [h.event for h in case.changes.history]


# --- 1. the clinic cancels ----------------------------------------------------------------


def test_a_clinic_cancellation_opens_its_own_case_and_calls_at_once() -> None:
    case = opened(clinic_cancellation(), CANCELLED_AT + timedelta(seconds=3))
    assert case.reason == "clinic_cancellation" and case.plan_id is None
    first = planned(case)
    assert (first.channel, first.template) == ("call_task", "clinic_cancellation_call")
    # Its own cadence (PT0S, a call), after the settle window of ten minutes.
    assert first.planned_at == (case.fact_at + timedelta(minutes=10)).astimezone(UTC)
    assert case.changes.tallies[0][:2] == ("opened", "clinic_cancellation")


def test_a_clinic_cancellation_has_its_own_rules_in_the_policy() -> None:
    rules = POLICY.rules_for("dental", "clinic_cancellation")
    assert rules.steps[0].delay == timedelta(0) and rules.steps[0].channel == "call_task"
    assert rules.max_attempts == 5
    assert POLICY.rules_for("dental", "no_show").settle_window == timedelta(0)


def test_a_new_visit_after_a_clinic_cancellation_closes_the_case() -> None:
    case = opened(clinic_cancellation(), CANCELLED_AT)
    moved = rebooked(CANCELLED_AT + timedelta(hours=3), start=VISIT + timedelta(days=4))
    case.appointment(moved.model_copy(update={"appointment_id": "appt-9"}), ctx(moved.occurred_at))
    assert case.resolution == "superseded"


# --- 7. schedule churn ----------------------------------------------------------------------


def test_a_cancellation_undone_within_the_settle_window_sends_nothing() -> None:
    case = opened(clinic_cancellation(), CANCELLED_AT)
    assert planned(case).planned_at > (CANCELLED_AT + timedelta(minutes=3)).astimezone(UTC)
    undo = rebooked(CANCELLED_AT + timedelta(minutes=3))  # same visit, same slot, again
    case.appointment(undo, ctx(undo.occurred_at))
    assert (case.state, case.resolution) == (CaseState.CLOSED, "cleared")
    assert events(case)[-2:] == ["cleared", "closed"]
    assert case.changes.commands == [] and all(a.state == "cancelled" for a in case.attempts)


def test_the_booking_that_was_cancelled_does_not_undo_it() -> None:
    # The visit's first booking (before the cancellation) arriving late is no undo.
    case = opened(clinic_cancellation(), CANCELLED_AT)
    old = rebooked(CANCELLED_AT - timedelta(days=3))
    case.appointment(old, ctx(CANCELLED_AT + timedelta(minutes=1)))
    assert case.state is CaseState.OPEN
    known = KnownVisit(VISIT, "booked", CANCELLED_AT - timedelta(days=3))
    assert why_not_open(clinic_cancellation(), "active", known) is None
    undone = KnownVisit(VISIT, "booked", CANCELLED_AT + timedelta(minutes=2))
    assert why_not_open(clinic_cancellation(), "active", undone) == "attended"


def test_a_late_cancellation_by_the_patient_also_settles_first() -> None:
    trigger = clinic_cancellation(
        event_id="late_cancellation:appt-1", kind="late_cancellation", appointment_start=VISIT
    )
    case = opened(trigger, CANCELLED_AT)
    assert planned(case).planned_at >= (CANCELLED_AT + timedelta(minutes=10)).astimezone(UTC)
    undo = rebooked(CANCELLED_AT + timedelta(minutes=5))
    case.appointment(undo, ctx(undo.occurred_at))
    assert case.resolution == "cleared"


# --- 2. closure days ------------------------------------------------------------------------


def policy_with(extra: str) -> CadencePolicy:
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    return CadencePolicy.from_text(text.replace("  closures: []\n", extra), "<test>")


def view(opened_at: datetime, **extra: Any) -> CaseView:
    return CaseView(reason="no_show", timezone="Europe/Vilnius", opened_at=opened_at, **extra)


def test_no_call_task_on_a_public_holiday_of_the_clinic_s_country() -> None:
    # 11 March is Lithuania's Restoration of Independence Day; in Bulgaria a working day.
    rules = POLICY.rules_for("dental", "no_show")
    assert rules.country == "LT" and rules.closed_on(date(2026, 3, 11))
    missed = datetime(2026, 3, 10, 17, 30, tzinfo=VILNIUS)  # Tuesday, after hours
    decision = next_decision(rules, view(missed), missed + timedelta(minutes=20))
    assert isinstance(decision, PlanAttempt) and decision.channel == "call_task"
    assert decision.planned_at == datetime(2026, 3, 12, 8, 0, tzinfo=VILNIUS).astimezone(UTC)
    bulgaria = policy_with("  closures: []\n").rules_for("dental", "no_show")
    bulgaria = bulgaria.model_copy(update={"country": "BG"})
    decision = next_decision(bulgaria, view(missed), missed + timedelta(minutes=20))
    assert isinstance(decision, PlanAttempt)
    assert decision.planned_at == datetime(2026, 3, 11, 8, 0, tzinfo=VILNIUS).astimezone(UTC)


def test_the_clinic_s_own_closure_dates_are_skipped_too() -> None:
    policy = policy_with("  closures: [2026-03-03, 2026-03-04]\n")
    rules = policy.rules_for("dental", "no_show")
    missed = datetime(2026, 3, 2, 17, 30, tzinfo=VILNIUS)  # Monday evening
    decision = next_decision(rules, view(missed), missed + timedelta(minutes=20))
    assert isinstance(decision, PlanAttempt)
    assert decision.planned_at == datetime(2026, 3, 5, 8, 0, tzinfo=VILNIUS).astimezone(UTC)


def test_a_bad_country_stops_the_policy_with_its_line() -> None:
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8").replace("country: LT", "country: XX")
    with pytest.raises(PolicyError, match=r"^<test>:\d+: country: "):
        CadencePolicy.from_text(text, "<test>")


def test_a_stage_deadline_on_a_closed_day_moves_back_to_the_open_day_before() -> None:
    from common.treatment import last_open_moment

    rules = POLICY.rules_for("dental", "stage_window_at_risk")
    deadline = datetime(2026, 3, 11, 23, 59, 59, tzinfo=VILNIUS)  # the holiday itself
    moved = last_open_moment(deadline, VILNIUS, rules.closed_on)
    assert moved == datetime(2026, 3, 10, 23, 59, 59, tzinfo=VILNIUS)
    assert last_open_moment(moved, VILNIUS, rules.closed_on) == moved
    # The cadence's last useful moment counts from the open day.
    from services.scheduler.cadence import last_useful_moment

    useful = last_useful_moment(rules, view(deadline, stage_deadline=deadline))
    assert useful == moved.astimezone(UTC) - rules.rebook_lead


def test_an_escalation_waits_for_the_next_open_day() -> None:
    policy = policy_with("  closures: [2026-03-12]\n")
    rules = policy.rules_for("dental", "stage_window_at_risk")
    now = datetime(2026, 3, 10, 19, 0, tzinfo=VILNIUS)  # after hours; 11th holiday, 12th closed
    deadline = datetime(2026, 3, 12, 23, 59, tzinfo=VILNIUS)
    decision = next_decision(rules, view(now, stage_deadline=deadline, practitioner_id="dr-7"), now)
    assert isinstance(decision, Escalate)
    assert decision.planned_at == datetime(2026, 3, 13, 8, 0, tzinfo=VILNIUS).astimezone(UTC)


# --- 3. a clinical concern on the call ------------------------------------------------------

NOTE = "Swelling and fever since the extraction"


def fired_call(case: Case) -> tuple[int, datetime]:
    due = planned(case)
    assert case.fire(due.number, ctx(due.planned_at)) is not None
    return due.number, due.planned_at


def test_a_clinical_concern_stops_the_cadence_and_escalates_at_once_with_the_note() -> None:
    case = opened(clinic_cancellation(), CANCELLED_AT)
    number, at = fired_call(case)
    reported = at + timedelta(minutes=20)
    case.record_outcome(number, "clinical_concern", "call_task", ctx(reported), note=NOTE)
    assert case.concern_at == reported.astimezone(UTC) and case.concern_note == NOTE
    assert case.state is CaseState.ESCALATING
    (escalation,) = [a for a in case.attempts if a.state == "planned"]
    assert escalation.purpose == "escalation" and escalation.planned_at == reported
    assert escalation.escalate_to == "dr-7"  # no clinician on call named: the practitioner
    assert escalation.template == "clinical_concern_escalation"
    assert escalation.window_end == reported + timedelta(hours=1)
    assert "concern" in events(case)
    # The note is on the case, never in history or metrics.
    assert all(NOTE not in str(h.detail) for h in case.changes.history)
    assert all(NOTE not in str(t) for t in case.changes.tallies)
    assert ("escalation", "clinical_concern") in [t[:2] for t in case.changes.tallies]
    assert NOTE not in repr(case)
    # Fired: the escalation command carries the note; follow-up commands never do.
    assert case.fire(escalation.number, ctx(reported)) is not None
    command = case.changes.commands[-1]
    assert command.purpose == "escalation" and command.note == NOTE
    assert all(c.note is None for c in case.changes.commands if c.purpose == "follow_up")


def test_a_concern_at_night_goes_to_the_clinician_on_call_not_to_business_hours() -> None:
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    text = text.replace(
        "    concern_respond_within: PT1H\n",
        "    concern_respond_within: PT1H\n    on_call_id: dr-on-call\n",
    )
    policy = CadencePolicy.from_text(text, "<test>")
    case = opened(clinic_cancellation(), CANCELLED_AT, policy)
    number, _ = fired_call(case)
    night = datetime(2026, 3, 4, 23, 30, tzinfo=VILNIUS)
    case.record_outcome(number, "clinical_concern", "call_task", ctx(night, policy), note=NOTE)
    (escalation,) = [a for a in case.attempts if a.state == "planned"]
    assert escalation.escalate_to == "dr-on-call" and escalation.planned_at == night


def test_a_handled_concern_closes_escalated_an_unanswered_one_goes_to_the_pool() -> None:
    case = opened(clinic_cancellation(practitioner_id=None), CANCELLED_AT)
    number, at = fired_call(case)
    case.record_outcome(number, "clinical_concern", "call_task", ctx(at), note=NOTE)
    (escalation,) = [a for a in case.attempts if a.state == "planned"]
    assert escalation.escalate_to == "clinic_pool"  # nobody named: never dropped
    case.fire(escalation.number, ctx(at))
    case.record_outcome(escalation.number, "no_answer", "call_task", ctx(at))
    assert case.state is CaseState.CLOSED  # nobody above the pool: closed escalated, once
    assert case.resolution == "escalated"

    case = opened(clinic_cancellation(), CANCELLED_AT)
    number, at = fired_call(case)
    case.record_outcome(number, "clinical_concern", "call_task", ctx(at), note=NOTE)
    (escalation,) = [a for a in case.attempts if a.state == "planned"]
    case.fire(escalation.number, ctx(at))
    case.record_outcome(escalation.number, "callback_requested", "call_task", ctx(at))
    assert (case.state, case.resolution) == (CaseState.CLOSED, "escalated")  # taken on


def test_a_concern_reported_after_the_case_closed_opens_it_again() -> None:
    case = opened(clinic_cancellation(), CANCELLED_AT)
    number, at = fired_call(case)
    moved = rebooked(at, start=VISIT + timedelta(days=3)).model_copy(
        update={"appointment_id": "appt-9"}
    )
    case.appointment(moved, ctx(at + timedelta(minutes=1)))
    assert case.resolution == "recovered"
    case.record_outcome(
        number, "clinical_concern", "call_task", ctx(at + timedelta(minutes=2)), note=NOTE
    )
    assert case.state is CaseState.ESCALATING and "reopened" in events(case)


# --- 4. front-desk capacity, 5. routing, 6. risk --------------------------------------------


def test_a_desk_at_capacity_holds_call_tasks_to_the_next_open_day() -> None:
    from services.scheduler.cadence import next_open_day
    from services.scheduler.guards import Hold, desk_hold

    rules = POLICY.rules_for("dental", "no_show")
    tuesday = datetime(2026, 3, 10, 11, 0, tzinfo=VILNIUS)
    after_holiday = datetime(2026, 3, 12, 8, 0, tzinfo=VILNIUS).astimezone(UTC)
    assert next_open_day(rules, VILNIUS, tuesday) == after_holiday  # 11 March is closed
    assert desk_hold(4, 5, after_holiday) is None
    assert desk_hold(5, 5, after_holiday) == Hold("desk_capacity", after_holiday)
    assert desk_hold(500, None, after_holiday) is None  # no capacity set: no limit


def test_a_held_call_that_would_miss_its_deadline_escalates_instead() -> None:
    from services.scheduler.guards import Hold

    deadline = datetime(2026, 3, 6, 23, 59, tzinfo=VILNIUS)
    trigger = clinic_cancellation(stage_deadline=deadline, plan_id="plan-1", stage_id="s2")
    case = opened(trigger, CANCELLED_AT)
    due = planned(case)
    # Full today; tomorrow is past the last useful moment (deadline minus the lead).
    case.fire(
        due.number, ctx(due.planned_at), Hold("desk_capacity", deadline - timedelta(hours=20))
    )
    (escalation,) = [a for a in case.attempts if a.state == "planned"]
    assert escalation.purpose == "escalation" and case.state is CaseState.ESCALATING


def test_the_owner_is_the_team_else_the_practitioner_s_else_the_pool() -> None:
    from services.scheduler.policy import Routing

    assert Routing(team_id="dental-desk").owner_for("dr-7") == "dental-desk"
    assert Routing(practitioner_teams={"dr-7": "team-7"}).owner_for("dr-7") == "team-7"
    assert Routing(practitioner_teams={"dr-7": "team-7"}).owner_for("dr-8") == "clinic_pool"
    assert Routing().owner_for(None) == "clinic_pool"
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8") + (
        "  surgery:\n    routing:\n      team_id: surgery-desk\n"
    )
    policy = CadencePolicy.from_text(text, "<test>")
    case = opened(clinic_cancellation(department="surgery"), CANCELLED_AT, policy)
    due = planned(case)
    case.fire(due.number, ctx(due.planned_at, policy))
    assert case.changes.commands[-1].owner == "surgery-desk"


def test_the_risk_score_counts_what_it_documents() -> None:
    deadline = CANCELLED_AT + timedelta(days=4, hours=12)
    trigger = clinic_cancellation(stage_deadline=deadline, plan_id="plan-1", stage_id="s2")
    case = opened(trigger, CANCELLED_AT)
    number, at = fired_call(case)
    case.record_outcome(number, "no_answer", "call_task", ctx(at + timedelta(minutes=30)))
    risk = case.risk(no_shows=2, now=at + timedelta(hours=1))
    # 2 earlier no-shows (x2) + 1 unanswered + deadline within 7 days (2) + plan stage (2)
    assert (risk.earlier_no_shows, risk.unanswered_attempts) == (2, 1)
    assert (risk.days_to_deadline, risk.plan_stage, risk.score) == (4, True, 9)
    # A no-show case does not count itself as an earlier no-show.
    plain = opened(clinic_cancellation(kind="no_show", event_id="no_show:appt-1"), CANCELLED_AT)
    assert plain.risk(no_shows=1, now=CANCELLED_AT).score == 0
    due = planned(case)
    case.fire(due.number, ctx(due.planned_at))
    command = case.changes.commands[-1]
    if command.channel == "call_task":
        assert command.risk is not None and command.owner == "clinic_pool"
    else:
        assert command.risk is None and command.owner is None  # messages carry neither
