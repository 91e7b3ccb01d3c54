"""The clinic's own workflow (issue 18) in the demo: the deployment's part of it (a desk at
capacity, the department that expects a next visit), what the report counts of each rule,
and the checks of its safety rules.

The population's part is ``demo.scenario.workflow_population``. The holiday is the shipped
policy's: its ``country: LT`` closes 11 March (Restoration of Independence Day), inside the
demo's two weeks from Monday 2 March 2026. Counts come from what really happened (the case
API, the topics read back, the stand-ins' captures, the scheduler's metrics); the checks
judge by the times the scheduler planned, never by when something arrived.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from demo.observe import Metrics
from demo.report import Finding, Observed, case_state, unique_by_id
from demo.scenario import (
    CALLS_PER_DAY,
    CAPACITY_DEPARTMENT,
    CLINIC_ZONE,
    NEXT_VISIT_DAYS,
    NEXT_VISIT_DEPARTMENT,
    Patient,
    Scenario,
)
from schemas.events import NotificationCommand
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy

# --- the deployment -----------------------------------------------------------------------


def demo_policy(directory: Path, base: Path = DEFAULT_POLICY_PATH) -> Path:
    """The shipped policy with one front desk at capacity (CAPACITY_DEPARTMENT makes
    CALLS_PER_DAY calls a day), written where the run keeps its files; read back with the
    scheduler's own parser, so a file it would refuse stops the demo here."""
    data: dict[str, Any] = yaml.safe_load(base.read_text(encoding="utf-8"))
    departments = data.get("departments") or {}
    desk = departments.get(CAPACITY_DEPARTMENT) or {}
    desk["capacity"] = {"calls_per_day": CALLS_PER_DAY}
    departments[CAPACITY_DEPARTMENT] = desk
    data["departments"] = departments
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "policy.yaml"
    header = (
        f"# {base.name} as shipped, with the {CAPACITY_DEPARTMENT} desk at"
        f" {CALLS_PER_DAY} calls a day (demo.workflow.demo_policy).\n"
    )
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    CadencePolicy.load(path)
    return path


def deployment_env() -> dict[str, str]:
    """The tracker's next-visit rule for one department (attended, nothing booked)."""
    return {"FOLLOWUP_NEXT_VISIT_DAYS": f"{NEXT_VISIT_DEPARTMENT}={NEXT_VISIT_DAYS}"}


# --- what the report counts ---------------------------------------------------------------


def closure_days(scenario: Scenario, policy: CadencePolicy) -> list[date]:
    """The run's days on which the clinic is closed (a public holiday or its own date)."""
    rules = policy.rules_for(CAPACITY_DEPARTMENT, "no_show")
    first = scenario.start.astimezone(ZoneInfo(CLINIC_ZONE)).date()
    days = (first + timedelta(days=n) for n in range(scenario.days))
    return [d for d in days if rules.closed_on(d)]


# After the visit that makes a safeguarding case, room for its escalation to be planned in
# business hours (a weekend between) before the run ends.
LEAD_TIME = timedelta(days=3)


def children(scenario: Scenario, policy: CadencePolicy) -> list[Patient]:
    """The scenario's children whose missed visits reach the policy's safeguarding count
    early enough in the run for the lead's escalation to be planned inside it."""
    found = []
    for p in scenario.patients:
        if p.birth_date is None or not p.misses_visit or not p.appointments:
            continue
        rule = policy.rules_for(p.department, "no_show").safeguarding
        day = p.appointments[0].start.date()
        if not rule.is_child(p.birth_date, day) or len(p.appointments) < rule.missed_visits:
            continue
        if p.appointments[rule.missed_visits - 1].start + LEAD_TIME <= scenario.end:
            found.append(p)
    return found


def counts(observed: Observed, scenario: Scenario, policy: CadencePolicy) -> dict[str, Any]:
    """One figure (or a few) per rule of issue 18, from what happened."""
    cases = observed.cases or []
    triggers: Counter[str] = Counter(t.kind for t in unique_by_id(observed.triggers))
    commands = unique_by_id(observed.notifications)
    escalations = [n for n in commands if n.purpose == "escalation"]
    held = observed.metrics.get("scheduler", Metrics()).by_label(
        "followup_scheduler_held_total", "rule"
    )

    def of_reason(reason: str) -> dict[str, int]:
        mine = [c for c in cases if c.get("reason") == reason]
        return {
            "triggers": triggers[reason],
            "cases": len(mine),
            "recovered": sum(1 for c in mine if case_state(c) == "recovered"),
        }

    concern_template = policy.rules_for(CAPACITY_DEPARTMENT, "no_show").escalation.concern_template
    closed = closure_days(scenario, policy)
    return {
        "clinic_cancellations": of_reason("clinic_cancellation"),
        "attended_without_booking": of_reason("next_visit_due"),
        "closure_days": {
            "days": [d.isoformat() for d in closed],
            "call_tasks_on_them": len(on_closure_days(commands, policy)),
        },
        "desk_at_capacity": {
            "department": CAPACITY_DEPARTMENT,
            "calls_per_day": policy.rules_for(
                CAPACITY_DEPARTMENT, "no_show"
            ).capacity.calls_per_day,
            "held": int(held.get("desk_capacity", 0)),
        },
        "clinical_concerns": {
            "reported": sum(
                1 for o in unique_by_id(observed.outcomes) if o.outcome == "clinical_concern"
            ),
            "escalated": sum(1 for n in escalations if n.template == concern_template),
        },
        "children_not_brought": {
            "children": len(children(scenario, policy)),
            "safeguarding_cases": sum(1 for c in cases if c.get("safeguarding_at")),
            "to_the_lead": sum(
                1
                for n in escalations
                if n.safeguarding
                and n.escalate_to == policy.rules_for(n.department, n.reason).safeguarding.lead_id
            ),
        },
    }


# --- the checks ---------------------------------------------------------------------------


def on_closure_days(commands: list[NotificationCommand], policy: CadencePolicy) -> list[str]:
    """Call tasks (follow-ups and escalations) the scheduler planned to start on a day the
    clinic is closed; a clinical concern's escalation goes day or night and is not one."""
    found = []
    for n in commands:
        if n.channel != "call_task" or n.purpose == "withdrawal":
            continue
        rules = policy.rules_for(n.department, n.reason)
        if n.purpose == "escalation" and n.template == rules.escalation.concern_template:
            continue
        day = n.window_start.astimezone(ZoneInfo(n.timezone)).date()
        if rules.closed_on(day):
            found.append(f"{n.idempotency_key}: starts {day.isoformat()}")
    return found


def birth_dates_seen(observed: Observed, scenario: Scenario) -> list[str]:
    """Where a child's birth date (ISO or HL7 form) reached something that does not need it:
    a text, a mail, a call task at a sink, a command."""
    forms = {
        p.patient_id: (p.birth_date.isoformat(), p.birth_date.strftime("%Y%m%d"))
        for p in scenario.patients
        if p.birth_date is not None
    }
    places: list[tuple[str, str]] = [(f"sms to {m.to}", m.body) for m in observed.sms]
    places += [(f"mail {m.subject!r}", m.subject + "\n" + m.text) for m in observed.mail]
    places += [
        (f"call task at {t.path or 'webhook'}", json.dumps(t.payload)) for t in observed.call_tasks
    ]
    places += [(f"call task {t.task_id}", t.model_dump_json()) for t in observed.topic_call_tasks]
    places += [
        (f"command {n.idempotency_key}", n.model_dump_json()) for n in observed.notifications
    ]
    return [
        f"{pid} in {where}"
        for where, text in places
        for pid, (iso, hl7) in forms.items()
        if iso in text or hl7 in text
    ]


def check(observed: Observed, scenario: Scenario, policy: CadencePolicy) -> list[Finding]:
    commands = unique_by_id(observed.notifications)
    findings = []
    closed = on_closure_days(commands, policy)
    days = ", ".join(d.isoformat() for d in closure_days(scenario, policy)) or "none in the run"
    findings.append(
        Finding(
            "no_call_task_on_a_closure_day",
            not closed,
            f"closed: {days}; " + ("; ".join(closed) or "no call task planned on one"),
        )
    )
    # A child not brought again reaches the named safeguarding lead; a child's messages
    # address the parent or guardian; a birth date reaches no text, mail, task or command.
    cases = observed.cases or []
    missing = []
    for p in children(scenario, policy):
        lead = policy.rules_for(p.department, "no_show").safeguarding.lead_id
        if not any(c.get("patient_id") == p.patient_id and c.get("safeguarding_at") for c in cases):
            missing.append(f"{p.patient_id}: no safeguarding case")
        elif not any(
            n.patient_id == p.patient_id and n.safeguarding and n.escalate_to == lead
            for n in commands
        ):
            missing.append(f"{p.patient_id}: no escalation to {lead}")
    expected = len(children(scenario, policy))
    findings.append(
        Finding(
            "children_not_brought_reach_the_lead",
            not missing,
            f"{expected - len(missing)}/{expected} children; "
            + ("; ".join(missing) or ("all" if expected else "no child in this population")),
        )
    )
    young = {p.patient_id for p in scenario.patients if p.birth_date is not None}
    adult = [
        n.idempotency_key
        for n in commands
        if n.patient_id in young and n.purpose != "withdrawal" and n.audience != "guardian"
    ]
    findings.append(
        Finding(
            "child_messages_address_the_guardian",
            not adult,
            f"{sum(1 for n in commands if n.patient_id in young)} commands for children; "
            + ("; ".join(adult) or "every one addressed to the parent or guardian"),
        )
    )
    seen = birth_dates_seen(observed, scenario)
    findings.append(
        Finding("no_birth_date_in_messages_or_tasks", not seen, "; ".join(seen) or "none")
    )
    return findings


def summary(values: dict[str, Any]) -> list[tuple[str, str]]:
    """The report table's rows for ``counts``."""
    if not values:
        return []
    cc, aw = values["clinic_cancellations"], values["attended_without_booking"]
    cd, dc = values["closure_days"], values["desk_at_capacity"]
    cn, ch = values["clinical_concerns"], values["children_not_brought"]
    return [
        ("clinic cancellations", f"{cc['cases']} cases, {cc['recovered']} recovered"),
        ("attended, nothing booked", f"{aw['cases']} cases, {aw['recovered']} recovered"),
        (
            "closure days",
            f"{', '.join(cd['days']) or 'none'}; call tasks on them {cd['call_tasks_on_them']}",
        ),
        (
            "desk at capacity",
            f"{dc['department']} {dc['calls_per_day']}/day, {dc['held']} call tasks held",
        ),
        ("clinical concerns", f"{cn['reported']} reported, {cn['escalated']} escalated"),
        (
            "children not brought",
            f"{ch['children']} children, {ch['safeguarding_cases']} safeguarding cases,"
            f" {ch['to_the_lead']} to the lead",
        ),
    ]
