"""What one policy achieved, computed from what really happened in its run: the topics read
back, the stand-ins' captures and the scheduler's cases (``demo.report``'s views), and the
ground truth's reachable maximum. Safety verdicts go by the services' own stamps."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from demo import report
from demo.report import Observed
from demo.scenario import REBOOKS, Scenario
from services.notifier.sms_text import segment_count
from services.scheduler.policy import CadencePolicy


@dataclass
class PolicyOutcome:
    policy: str
    seed: int
    patients: int
    slipped: int  # patients with a follow-up case
    recovered_before_deadline: int
    reachable_maximum: int
    median_days_to_rebooking: float | None
    call_tasks: int
    staff_minutes: float
    messages: int
    sms: int
    sms_segments: int
    emails: int
    escalations: int
    contacts_per_recovered: float | None
    safety: dict[str, int]
    recoveries_by_week: list[int] = field(default_factory=list)  # cumulative, per week
    transfers: int = 0  # transfers the hospital's feed reported during the run
    # How much the machine's load bent the run: call tasks the notifier dropped because their
    # window had passed before it got them, and cases the clinic's own input cleared (an
    # arrival that reached the tracker after its no-show timer).
    calls_window_passed: int = 0
    cases_cleared: int = 0
    real_seconds: float = 0.0
    cpu_seconds: float = 0.0  # the run's own processes (lab.run_one)
    pipeline_hop_virtual_minutes: float = 0.0
    # The longest a timer the tracker keeps (a no-show, an unanswered call, a stage at risk)
    # fired after its moment, in virtual minutes: how far the clock ran ahead of the tracker.
    timer_late_virtual_minutes: float = 0.0
    # How the pacer held the clock back (pacer.PacerStats.as_dict()).
    pacer: dict[str, Any] = field(default_factory=dict)

    @property
    def share_of_maximum(self) -> float:
        return (
            self.recovered_before_deadline / self.reachable_maximum
            if self.reachable_maximum
            else 0.0
        )

    @property
    def staff_minutes_per_recovered(self) -> float | None:
        n = self.recovered_before_deadline
        return round(self.staff_minutes / n, 1) if n else None

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {
            "share_of_maximum": round(self.share_of_maximum, 3),
            "staff_minutes_per_recovered": self.staff_minutes_per_recovered,
        }


def reachable_maximum(scenario: Scenario) -> int:
    """Everyone who would rebook if reached at all (the ground truth), reached in time."""
    return sum(1 for p in scenario.patients if p.behaviour in REBOOKS)


def contacts_after_transfer(
    observed: Observed,
    scenario: Scenario,
    transfers: dict[str, datetime] | None,
    allowance: timedelta,
) -> list[str]:
    """Contacts decided after a transfer was reported (``allowance`` after the feed's
    report): a patient who moved to another provider is not chased."""
    known = transfers or {}
    return [
        f"{c.patient_id}: {c.what} after transfer"
        for c in report.contacts(observed, scenario)
        if c.patient_id in known and c.latest_decision() > known[c.patient_id] + allowance
    ]


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def measure(
    name: str,
    observed: Observed,
    scenario: Scenario,
    policy: CadencePolicy,
    *,
    minutes_per_call: float,
    tolerance: timedelta,
    transfers: dict[str, datetime] | None = None,
) -> PolicyOutcome:
    cases = observed.cases or []
    # A case the clinic's own later input contradicted (an arrival reported late) or a
    # booking made before anyone reached out is not a patient who slipped.
    slipped = {
        str(c["patient_id"])
        for c in cases
        if c.get("patient_id") and report.case_state(c) not in ("cleared", "superseded")
    }
    recovered: dict[str, datetime] = {}  # patient -> when the case closed as recovered
    days_to_rebook: dict[str, float] = {}
    for case in cases:
        closed = _moment(case.get("closed_at"))
        deadline = _moment(case.get("stage_deadline"))
        if report.case_state(case) != "recovered" or closed is None:
            continue
        if deadline is not None and closed > deadline:
            continue
        pid = str(case["patient_id"])
        if pid in recovered and recovered[pid] <= closed:
            continue
        recovered[pid] = closed
        slip = _moment(case.get("appointment_start")) or _moment(case.get("opened_at")) or closed
        days_to_rebook[pid] = max(0.0, (closed - slip).total_seconds() / 86400)
    tasks = [t for t in observed.call_tasks if t.action == "create" and t.purpose == "follow_up"]
    # The feedback question after a recovered visit is no contact made to bring anyone back.
    texts = [m for m in observed.sms if not (m.key or "").endswith(":feedback")]
    segments = sum(segment_count(m.body)[1] for m in texts)
    notes = report.unique_by_id(observed.notifications)
    escalations = sum(1 for n in notes if n.purpose == "escalation")
    # Mail to patients only: the front desk's call-task mails are a sink, not a message.
    mails = report.patient_mail(observed, scenario)
    contacts = len(tasks) + len(texts) + len(mails)
    allowance = tolerance + 2 * report.hop_delay(observed)
    safety = {
        "after_opt_out": len(report.opt_out_violations(observed, scenario, tolerance)),
        "in_quiet_hours": len(report.quiet_hour_violations(observed, scenario, policy, tolerance)),
        "after_death": len(report.contacts_after_death(observed, scenario, allowance)),
        "after_transfer": len(contacts_after_transfer(observed, scenario, transfers, allowance)),
        "after_deadline": len(report.after_deadline(report.follow_ups(observed))),
    }
    weeks = max(1, -(-scenario.days // 7))
    by_week = [
        sum(1 for at in recovered.values() if at < scenario.start + timedelta(weeks=w + 1))
        for w in range(weeks)
    ]
    n = len(recovered)
    return PolicyOutcome(
        policy=name,
        seed=scenario.seed,
        patients=len(scenario.patients),
        slipped=len(slipped),
        recovered_before_deadline=n,
        reachable_maximum=reachable_maximum(scenario),
        median_days_to_rebooking=round(statistics.median(days_to_rebook.values()), 1)
        if days_to_rebook
        else None,
        call_tasks=len(tasks),
        staff_minutes=len(tasks) * minutes_per_call,
        messages=len(texts) + len(mails),
        sms=len(texts),
        sms_segments=segments,
        emails=len(mails),
        escalations=escalations,
        contacts_per_recovered=round(contacts / n, 1) if n else None,
        safety=safety,
        transfers=len(transfers or {}),
        recoveries_by_week=by_week,
        calls_window_passed=sum(
            1
            for o in report.unique_by_id(observed.outcomes)
            if o.channel == "call_task" and o.outcome == "failed" and o.detail == "window_passed"
        ),
        cases_cleared=sum(1 for c in cases if report.case_state(c) == "cleared"),
        pipeline_hop_virtual_minutes=round(report.hop_delay(observed).total_seconds() / 60, 1),
        timer_late_virtual_minutes=timer_lateness(observed),
    )


# The tracker's triggers whose occurred_at is the moment its timer was due.
TIMER_KINDS = frozenset({"no_show", "unanswered_call", "stage_window_at_risk", "next_visit_due"})


def timer_lateness(observed: Observed) -> float:
    """Virtual minutes from a timer's moment to the tracker's detection, the longest."""
    late = [
        (t.detected_at - t.occurred_at).total_seconds() / 60
        for t in report.unique_by_id(observed.triggers)
        if t.kind in TIMER_KINDS
    ]
    return round(max(late, default=0.0), 1)
