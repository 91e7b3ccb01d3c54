"""Issue 18's clinic in the demo, without I/O: the population (``workflow_population``),
what the feeds send of a child, the front desk's answers, the report's counts and the checks
of the safety rules (``demo.workflow``), the policy the demo runs with, and the bounds on a
closure day and a settle window."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from demo import workflow
from demo.bounds import allowed, earliest_allowed, load_policy
from demo.report import Observed, first_contact_problems
from demo.scenario import (
    CALLS_PER_DAY,
    CAPACITY_DEPARTMENT,
    CHILD_BIRTH_DATE,
    NEXT_VISIT_DEPARTMENT,
    Patient,
    ScenarioConfig,
    build,
)
from demo.simulator import canonical, fhir, hl7v2
from demo.simulator.patients import decide_call
from schemas.events import NotificationCommand, TriggerEvent
from services.tracker.fhir_mapping import patient_events
from services.tracker.hl7_siu import read
from standins.twilio import SmsRecord

VILNIUS = ZoneInfo("Europe/Vilnius")
POLICY = load_policy()
CONFIG = ScenarioConfig(patients=40, days=14, seed=7, workflow=True)  # the demo's defaults
SCENARIO = build(config=CONFIG)
PLAIN = build(config=ScenarioConfig(patients=40, days=14, seed=7))


def one(check: object) -> Patient:
    found = [p for p in SCENARIO.patients if check(p)]  # type: ignore[operator]
    assert len(found) == 1
    return found[0]


CHILD = one(lambda p: p.birth_date is not None)
CANCELLED = one(lambda p: p.behaviour == "clinic_cancelled")
UNBOOKED = one(lambda p: p.behaviour == "attends_no_booking")
CONCERNED = one(lambda p: p.reports_concern)


# --- the population -------------------------------------------------------------------------


def test_the_demo_population_has_each_rule_and_the_harnesses_do_not() -> None:
    assert not any(
        p.birth_date
        or p.reports_concern
        or p.behaviour in ("clinic_cancelled", "attends_no_booking")
        for p in PLAIN.patients
    )
    # The others are the same patients (the workflow draws after everything else).
    changed = {CHILD.patient_id, CANCELLED.patient_id, UNBOOKED.patient_id, CONCERNED.patient_id}
    same = [p for p in SCENARIO.patients if p.patient_id not in changed]
    assert same == [p for p in PLAIN.patients if p.patient_id not in changed]


def test_a_child_not_brought_twice() -> None:
    assert CHILD.behaviour == "never_answers" and CHILD.birth_date == CHILD_BIRTH_DATE
    first, second = CHILD.appointments
    assert first.start < second.start and second.start.weekday() < 5
    assert (second.start.date() - first.start.date()).days <= 3  # the next working day
    kinds = [(a.kind, a.appointment) for a in SCENARIO.actions() if a.patient == CHILD]
    assert ("check_in", first) not in kinds and ("check_in", second) not in kinds
    assert workflow.children(SCENARIO, POLICY) == [CHILD]


def test_a_small_clinic_has_its_child_too_and_a_short_run_expects_no_lead() -> None:
    small = build(config=ScenarioConfig(patients=14, days=7, seed=11, workflow=True))
    (child,) = [p for p in small.patients if p.birth_date is not None]
    assert child.misses_visit and len(child.appointments) == 2
    assert workflow.children(small, POLICY) == [child]
    short = build(config=ScenarioConfig(patients=14, days=2, seed=11, workflow=True))
    assert workflow.children(short, POLICY) == []  # the second visit is after the run


def test_a_clinic_cancellation_the_day_before_on_a_path_that_names_the_clinic() -> None:
    assert (
        CANCELLED.path in ("fhir", "json") and CANCELLED.expected_trigger == "clinic_cancellation"
    )
    (visit,) = CANCELLED.appointments
    actions = [a for a in SCENARIO.actions() if a.patient == CANCELLED and a.appointment == visit]
    assert [a.kind for a in actions] == ["book", "clinic_cancel"]
    assert actions[1].at == visit.start - timedelta(days=1)
    resource = fhir.appointment_resource(CANCELLED, visit, "cancelled", by_patient=False)
    codes = [c["code"] for c in resource["cancelationReason"]["coding"]]
    assert codes == ["prov"]  # a provider's reason: the tracker's clinic cancellation
    event = canonical.appointment(
        CANCELLED, visit, change="cancelled", status="cancelled", now=visit.start
    )
    assert event.cancelled_by == "clinic"


def test_attended_without_a_plan_in_the_next_visit_department() -> None:
    assert (UNBOOKED.path, UNBOOKED.department) == ("json", NEXT_VISIT_DEPARTMENT)
    kinds = [a.kind for a in SCENARIO.actions() if a.patient == UNBOOKED]
    assert "plan" not in kinds and {"check_in", "fulfil"} <= set(kinds)
    (visit,) = UNBOOKED.appointments
    event = canonical.appointment(
        UNBOOKED, visit, change="booked", status="booked", now=visit.start
    )
    assert (event.plan_id, event.stage_id, event.department) == (None, None, NEXT_VISIT_DEPARTMENT)
    assert workflow.deployment_env() == {"FOLLOWUP_NEXT_VISIT_DAYS": f"{NEXT_VISIT_DEPARTMENT}=10"}


def test_the_front_desk_hears_a_concern_and_the_rebookings() -> None:
    rng = random.Random(1)
    assert decide_call(CONCERNED, 1, rng, 0.0).result == "clinical_concern"
    assert decide_call(CANCELLED, 1, rng, 0.0).result == "answered_rebooked"
    assert decide_call(UNBOOKED, 1, rng, 0.0).result == "answered_rebooked"


# --- what the feeds send of a child, read by the tracker's own mapping -------------------


def test_every_feed_sends_the_childs_birth_date_and_no_adults() -> None:
    now = SCENARIO.start
    adult = next(p for p in SCENARIO.patients if p.birth_date is None)
    for p, born in ((CHILD, CHILD_BIRTH_DATE), (adult, None)):
        message = hl7v2.adt_register(p, sent_at=now, control_id="c-1")
        result = read(message.text.encode(), zone=VILNIUS, now=now, department="general")
        assert result.contact is not None and result.contact.birth_date == born
        status = result.patient_status
        assert (status.birth_date if status else None) == born
        contact, from_fhir = patient_events(
            fhir.patient_resource(p), path_id=None, zone="Europe/Vilnius", now=now
        )
        assert contact.birth_date == born and (from_fhir.birth_date if from_fhir else None) == born
        assert canonical.contact(p, now).birth_date == born
        child = canonical.child_status(p, now)
        assert (child.birth_date if child else None) == born


# --- the deployment's policy, the bounds ---------------------------------------------------


def test_the_demo_policy_is_the_shipped_one_with_one_desk_at_capacity(tmp_path: Path) -> None:
    policy = load_policy(workflow.demo_policy(tmp_path))
    assert policy.rules_for(CAPACITY_DEPARTMENT, "no_show").capacity.calls_per_day == CALLS_PER_DAY
    assert policy.rules_for("physio", "no_show").capacity.calls_per_day is None
    shipped = POLICY.rules_for(CAPACITY_DEPARTMENT, "no_show")
    assert policy.rules_for(CAPACITY_DEPARTMENT, "no_show").steps == shipped.steps
    assert policy.rules_for(CAPACITY_DEPARTMENT, "no_show").safeguarding == shipped.safeguarding


def test_the_holiday_is_in_the_run_and_no_call_task_may_start_on_it() -> None:
    holiday = date(2026, 3, 11)  # LT: Restoration of Independence Day
    assert workflow.closure_days(SCENARIO, POLICY) == [holiday]
    rules = POLICY.rules_for("dental", "no_show")
    morning = datetime(2026, 3, 11, 9, 0, tzinfo=VILNIUS)
    assert not allowed(rules, "call_task", morning, "Europe/Vilnius")
    assert allowed(rules, "sms", morning, "Europe/Vilnius")  # messages are not closed
    found = earliest_allowed(rules, "call_task", morning, "Europe/Vilnius")
    assert found == datetime(2026, 3, 12, 8, 0, tzinfo=VILNIUS).astimezone(UTC)


def command(
    p: Patient, n: int, start: datetime, *, purpose: str = "follow_up", **extra: object
) -> NotificationCommand:
    values: dict[str, object] = {
        "event_id": f"case-{p.patient_id}:{n}",
        "occurred_at": start,
        "source": "scheduler",
        "idempotency_key": f"case-{p.patient_id}:{n}",
        "case_id": f"case-{p.patient_id}",
        "attempt_number": n,
        "patient_id": p.patient_id,
        "purpose": purpose,
        "channel": "call_task",
        "template": "no_show_call",
        "reason": "no_show",
        "department": p.department,
        "timezone": "Europe/Vilnius",
        "window_start": start,
        "window_end": start + timedelta(hours=3),
    }
    return NotificationCommand.model_validate(values | extra)


def test_the_first_contact_of_a_clinic_cancellation_waits_the_settle_window() -> None:
    cancelled_at = datetime(2026, 3, 4, 9, 0, tzinfo=VILNIUS)
    trigger = TriggerEvent(
        event_id="clinic_cancellation:x",
        occurred_at=cancelled_at,
        source="tracker",
        kind="clinic_cancellation",
        patient_id=CANCELLED.patient_id,
        department=CANCELLED.department,
        timezone="Europe/Vilnius",
        detected_at=cancelled_at,
    )
    case = {
        "case_id": f"case-{CANCELLED.patient_id}",
        "trigger_event_id": trigger.event_id,
        "opened_at": cancelled_at.isoformat(),
    }
    settled = cancelled_at + timedelta(minutes=10)  # the shipped PT10M
    for start, late in ((settled, False), (settled + timedelta(minutes=30), True)):
        first = command(CANCELLED, 1, start, reason="clinic_cancellation")
        observed = Observed(triggers=[trigger], notifications=[first], cases=[case])
        checked, problems = first_contact_problems(observed, POLICY, timedelta(minutes=1))
        assert checked == 1 and bool(problems) == late


# --- the report's counts and the checks -----------------------------------------------------


def healthy() -> Observed:
    first = CHILD.appointments[0].start + timedelta(hours=1)
    lead = "safeguarding_lead"
    commands = [
        command(CHILD, 1, first, audience="guardian"),
        command(
            CHILD,
            2,
            first + timedelta(days=1),
            purpose="escalation",
            audience="guardian",
            safeguarding=True,
            escalate_to=lead,
            owner=lead,
            template="safeguarding_escalation",
        ),
    ]
    cases: list[dict[str, Any]] = [
        {
            "case_id": f"case-{CHILD.patient_id}",
            "patient_id": CHILD.patient_id,
            "reason": "no_show",
            "state": "escalating",
            "child": True,
            "safeguarding_at": first.isoformat(),
        },
        {"case_id": "c2", "patient_id": "p", "reason": "clinic_cancellation", "state": "closed",
         "resolution": "recovered"},
    ]  # fmt: skip
    return Observed(notifications=commands, cases=cases)


def verdicts(observed: Observed) -> dict[str, bool]:
    return {f.check: f.ok for f in workflow.check(observed, SCENARIO, POLICY)}


def test_a_healthy_run_passes_every_workflow_check_and_is_counted() -> None:
    observed = healthy()
    assert verdicts(observed) == {
        "no_call_task_on_a_closure_day": True,
        "children_not_brought_reach_the_lead": True,
        "child_messages_address_the_guardian": True,
        "no_birth_date_in_messages_or_tasks": True,
    }
    counts = workflow.counts(observed, SCENARIO, POLICY)
    assert counts["children_not_brought"] == {
        "children": 1,
        "safeguarding_cases": 1,
        "to_the_lead": 1,
    }
    assert counts["clinic_cancellations"] == {"triggers": 0, "cases": 1, "recovered": 1}
    assert counts["closure_days"] == {"days": ["2026-03-11"], "call_tasks_on_them": 0}
    rows = dict(workflow.summary(counts))
    assert rows["children not brought"].startswith("1 children, 1 safeguarding cases")


@pytest.mark.parametrize("where", ["holiday", "no_lead", "not_guardian", "birth_date"])
def test_each_workflow_check_can_fail(where: str) -> None:
    observed = healthy()
    if where == "holiday":
        on = datetime(2026, 3, 11, 9, 0, tzinfo=VILNIUS)
        observed.notifications.append(command(CHILD, 3, on, audience="guardian"))
        # A clinical concern's escalation goes day or night: not a violation.
        concern = command(
            CHILD, 4, on, purpose="escalation", audience="guardian",
            template="clinical_concern_escalation",
        )  # fmt: skip
        observed.notifications.append(concern)
        failed = "no_call_task_on_a_closure_day"
    elif where == "no_lead":
        observed.notifications.pop()
        failed = "children_not_brought_reach_the_lead"
    elif where == "not_guardian":
        observed.notifications.append(command(CHILD, 3, SCENARIO.start + timedelta(days=3)))
        failed = "child_messages_address_the_guardian"
    else:
        at = SCENARIO.start + timedelta(days=3)
        observed.sms.append(
            SmsRecord(
                sid="SM1",
                from_="+1",
                to=CHILD.phone,
                body=f"Born {CHILD_BIRTH_DATE}",
                at=at,
                segments=1,
            )
        )
        failed = "no_birth_date_in_messages_or_tasks"
    results = verdicts(observed)
    assert [name for name, ok in results.items() if not ok] == [failed]
