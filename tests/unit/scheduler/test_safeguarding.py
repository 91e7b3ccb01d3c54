"""Children who were not brought (issue 18) on the pure ``Case`` and cadence: a child's
case addresses the parent or guardian; the policy's N-th missed visit of a child makes it a
safeguarding case for the named lead. The policy is the service's own ``policy.yaml``."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas.events import TriggerEvent
from services.scheduler.case import Case, Context
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy, PolicyError

POLICY = CadencePolicy.load(DEFAULT_POLICY_PATH)
VILNIUS = ZoneInfo("Europe/Vilnius")
VISIT = datetime(2026, 3, 3, 10, 0, tzinfo=VILNIUS)  # a Tuesday
DETECTED = VISIT + timedelta(minutes=16)
CHILD = date(2018, 4, 12)  # 7 on the day of the visit
RULE = POLICY.rules_for("general", "no_show").safeguarding


def no_show(appointment: str = "appt-1", start: datetime = VISIT) -> TriggerEvent:
    return TriggerEvent.model_validate(
        {
            "event_id": f"no_show:{appointment}",
            "occurred_at": start + timedelta(minutes=16),
            "source": "tracker",
            "kind": "no_show",
            "patient_id": "pat-1",
            "department": "general",
            "timezone": "Europe/Vilnius",
            "appointment_id": appointment,
            "appointment_start": start,
            "practitioner_id": "dr-7",
            "detected_at": start + timedelta(minutes=16),
        }
    )


def ctx(now: datetime = DETECTED, **extra: Any) -> Context:
    return replace(Context(now.astimezone(UTC), POLICY), **extra)


def opened(trigger: TriggerEvent, context: Context) -> Case:
    case = Case.open(trigger, context)
    case.plan_next(context)
    return case


def planned(case: Case) -> Any:
    (attempt,) = [a for a in case.attempts if a.state == "planned"]
    return attempt


def test_the_shipped_policy_names_a_lead_and_a_childs_age() -> None:
    assert (RULE.under_age, RULE.missed_visits, RULE.lead_id) == (18, 2, "safeguarding_lead")


def test_a_childs_first_missed_visit_is_an_ordinary_case_addressed_to_the_guardian() -> None:
    case = opened(no_show(), ctx(birth_date=CHILD, missed_visits=1))
    assert case.child and case.safeguarding_at is None
    attempt = planned(case)
    assert (attempt.purpose, attempt.channel) == ("follow_up", "call_task")
    case.fire(attempt.number, ctx(attempt.planned_at))
    (command,) = case.changes.commands
    assert (command.audience, command.safeguarding) == ("guardian", False)


def test_an_adults_repeated_missed_visits_stay_ordinary() -> None:
    # followup.patients brings no adult's birth date: without one nobody is a child.
    for context in (ctx(missed_visits=5), ctx(birth_date=date(2000, 1, 1), missed_visits=5)):
        case = opened(no_show(), context)
        assert not case.child and case.safeguarding_at is None
        assert planned(case).purpose == "follow_up"


def test_a_childs_second_missed_visit_goes_to_the_safeguarding_lead() -> None:
    case = opened(no_show(), ctx(birth_date=CHILD, missed_visits=2))
    assert case.safeguarding_at == DETECTED.astimezone(UTC)
    attempt = planned(case)
    assert (attempt.purpose, attempt.escalate_to) == ("escalation", "safeguarding_lead")
    assert attempt.template == "safeguarding_escalation"
    assert attempt.window_end - attempt.planned_at == RULE.respond_within
    history = [h for h in case.changes.history if h.event == "safeguarding"]
    assert [h.detail for h in history] == [{"missed_visits": 2, "to": "safeguarding_lead"}]
    assert "2018" not in str(case.changes.history)  # no birth date, no age
    case.fire(attempt.number, ctx(attempt.planned_at))
    (command,) = case.changes.commands
    assert (command.purpose, command.owner, command.escalate_to) == (
        "escalation",
        "safeguarding_lead",
        "safeguarding_lead",
    )
    assert (command.audience, command.safeguarding) == ("guardian", True)
    assert "2018" not in command.model_dump_json()
    tallies = [(t.metric, t.label) for t in case.changes.tallies if t.metric == "escalation"]
    assert tallies == [("escalation", "safeguarding")]


def test_a_second_missed_visit_joining_the_open_case_makes_it_a_safeguarding_case() -> None:
    case = opened(no_show(), ctx(birth_date=CHILD, missed_visits=1))
    first = planned(case)
    case.fire(first.number, ctx(first.planned_at))  # a call task out to the family
    # The child's next visit the same day (another department's) is missed too, while the
    # front desk's call task is still out.
    later = VISIT + timedelta(hours=1)
    second = ctx(later + timedelta(minutes=16), birth_date=CHILD, missed_visits=2)
    case.join(no_show("appt-2", later), second)
    assert case.safeguarding_at is not None
    withdrawals = [c for c in case.changes.commands if c.purpose == "withdrawal"]
    assert [w.attempt_number for w in withdrawals] == [first.number]
    attempt = planned(case)
    assert (attempt.purpose, attempt.escalate_to) == ("escalation", "safeguarding_lead")


def test_an_unanswered_lead_closes_the_case_as_escalated_without_a_supervisor() -> None:
    case = opened(no_show(), ctx(birth_date=CHILD, missed_visits=3))
    attempt = planned(case)
    case.fire(attempt.number, ctx(attempt.planned_at))
    after = attempt.planned_at + timedelta(minutes=30)
    case.record_outcome(attempt.number, "no_answer", "call_task", ctx(after))
    assert case.closed and case.resolution == "escalated"
    assert not [a for a in case.attempts if a.purpose == "follow_up"]  # no ordinary step


def test_the_age_is_taken_on_the_day_of_the_missed_visit() -> None:
    eighteenth_birthday = date(VISIT.year - 18, VISIT.month, VISIT.day)
    turned_adult = opened(no_show(), ctx(birth_date=eighteenth_birthday, missed_visits=2))
    assert not turned_adult.child and turned_adult.safeguarding_at is None
    day_before = eighteenth_birthday + timedelta(days=1)
    still_child = opened(no_show(), ctx(birth_date=day_before, missed_visits=2))
    assert still_child.child and still_child.safeguarding_at is not None


def test_other_reasons_of_a_child_address_the_guardian_but_never_safeguard() -> None:
    trigger = no_show().model_copy(update={"kind": "late_cancellation"})
    case = opened(trigger, ctx(birth_date=CHILD, missed_visits=4))
    assert case.child and case.safeguarding_at is None


def test_the_rule_is_off_without_an_age_and_a_rule_needs_its_lead() -> None:
    text = DEFAULT_POLICY_PATH.read_text().replace("under_age: 18", "under_age: null")
    off = CadencePolicy.from_text(text)
    case = Case.open(no_show(), replace(ctx(birth_date=CHILD, missed_visits=9), policy=off))
    assert not case.child and case.safeguarding_at is None
    with pytest.raises(PolicyError) as failed:
        CadencePolicy.from_text(
            DEFAULT_POLICY_PATH.read_text().replace("lead_id: safeguarding_lead", "lead_id: null")
        )
    assert "lead_id" in str(failed.value)
