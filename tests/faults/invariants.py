"""After a run under a fault: what the sinks and ledgers hold, compared with the scenario's
ground truth. Every broken invariant names the patient (by id) and the event.

The per-contact judgements (opt-out, quiet hours) are the demo report's own
(``demo.report``), so the demo and the fault suite judge alike."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from demo import report
from demo.report import Observed
from demo.scenario import Patient, Scenario
from schemas.events import TriggerEvent
from services.scheduler.policy import CadencePolicy
from tests.faults import chain

FIGURES = (
    "no_shows_detected",
    "no_shows_expected",
    "false_no_show_cases",
    "cases",
    "cases_cleared",
    "max_deliveries_per_key",
    "contacts_after_opt_out",
    "contacts_in_quiet_hours",
    "contacts_after_stage_deadline",
    "lost_triggers",
)


@dataclass
class Verdict:
    figures: dict[str, Any] = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)  # "<invariant>: <patient> <event>"

    @property
    def held(self) -> bool:
        return not self.broken


# The tracker's default warning lead before a stage deadline (services/tracker/app.py).
STAGE_LEAD = timedelta(days=7)


def expected_in_run(patient: Patient, scenario: Scenario) -> bool:
    """Whether the patient's expected trigger falls inside the run: a short run ends before
    a drifting patient's stage warning is due, which is no loss."""
    if patient.expected_trigger != "stage_window_at_risk":
        return patient.expected_trigger is not None
    done, nxt = patient.stages[0].completed_at, patient.stages[1].max_interval_days
    if done is None or nxt is None:
        return True
    return done + timedelta(days=nxt) - STAGE_LEAD + timedelta(days=1) <= scenario.end


def death_known_first(patient: Patient, triggers: list[TriggerEvent]) -> bool:
    """A patient who died, whose trigger was detected after the clinic reported the death:
    the scheduler rightly opens no case (an outage can delay the trigger that long)."""
    if patient.behaviour != "dies":
        return False
    return all(
        t.detected_at > patient.death_at for t in triggers if t.patient_id == patient.patient_id
    )


def delivery_keys(observed: Observed) -> dict[str, tuple[int, str | None]]:
    """idempotency key -> (deliveries seen at the receivers, patient id)."""
    counts: Counter[str] = Counter()
    owner: dict[str, str | None] = {}
    for sms in observed.sms:
        if sms.key:
            counts[sms.key] += 1
    for mail in observed.mail:
        if key := mail.headers.get("X-Followup-Key"):
            counts[key] += 1
    for task in observed.call_tasks:
        if task.action == "create" and (key := task.task.get("task_id")):
            counts[str(key)] += 1
            pid = task.task.get("patient_id")
            owner[str(key)] = pid if isinstance(pid, str) else None
    for n in report.unique_by_id(observed.notifications):
        owner.setdefault(n.idempotency_key, n.patient_id)
    return {k: (n, owner.get(k)) for k, n in counts.items()}


def check(
    observed: Observed, scenario: Scenario, policy: CadencePolicy, tolerance: timedelta
) -> Verdict:
    verdict = Verdict()
    broken = verdict.broken
    by_id = {p.patient_id: p for p in scenario.patients}
    triggers = report.unique_by_id(observed.triggers)
    kinds: dict[str, set[str]] = defaultdict(set)
    for t in triggers:
        kinds[t.patient_id].add(t.kind)
    cases = observed.cases or []
    if observed.cases is None:
        broken.append("cases: the scheduler's GET /cases did not answer")
    case_pids = {str(c.get("patient_id")) for c in cases}

    expected_no_shows = [p for p in scenario.patients if p.expected_trigger == "no_show"]
    verdict.figures["no_shows_expected"] = len(expected_no_shows)
    verdict.figures["no_shows_detected"] = sum(
        1 for p in expected_no_shows if "no_show" in kinds[p.patient_id]
    )

    # A false case: a patient who attended (or did not miss this way) kept a case that was
    # not cleared, or was contacted about it.
    false_cases = 0
    contacted = {c.patient_id for c in report.contacts(observed, scenario)}
    for case in cases:
        pid = str(case.get("patient_id"))
        patient = by_id.get(pid)
        if patient is None or report.case_state(case) == "cleared":
            continue
        wrong = patient.expected_trigger is None or (
            case.get("reason") == "no_show" and patient.expected_trigger != "no_show"
        )
        if wrong:
            false_cases += 1
            broken.append(
                f"false_no_show_case: {pid} case {case.get('case_id')} "
                f"({case.get('reason')}, {report.case_state(case)}; behaviour {patient.behaviour})"
            )
    for pid in sorted(contacted):
        patient = by_id.get(pid)
        if patient is not None and patient.expected_trigger is None:
            broken.append(f"contacted_by_mistake: {pid} attended and was contacted")
    verdict.figures["false_no_show_cases"] = false_cases
    verdict.figures["cases"] = len(cases)
    verdict.figures["cases_cleared"] = sum(1 for c in cases if report.case_state(c) == "cleared")

    keys = delivery_keys(observed)
    verdict.figures["max_deliveries_per_key"] = max((n for n, _ in keys.values()), default=0)
    verdict.figures["delivery_keys"] = len(keys)
    for key, (n, owner) in sorted(keys.items()):
        if n > 1:
            broken.append(f"delivered_more_than_once: {owner} {key} delivered {n} times")

    opt = report.opt_out_violations(observed, scenario, tolerance)
    quiet = report.quiet_hour_violations(observed, scenario, policy, tolerance)
    late = [
        f"{n.patient_id} {n.idempotency_key} planned {n.window_start.isoformat()} after "
        f"deadline {n.stage_deadline.isoformat()}"
        for n in report.follow_ups(observed)
        if n.stage_deadline is not None and n.window_start > n.stage_deadline
    ]
    verdict.figures["contacts_after_opt_out"] = len(opt)
    verdict.figures["contacts_in_quiet_hours"] = len(quiet)
    verdict.figures["contacts_after_stage_deadline"] = len(late)
    broken += [f"contact_after_opt_out: {v}" for v in opt]
    broken += [f"contact_in_quiet_hours: {v}" for v in quiet]
    broken += [f"contact_after_stage_deadline: {v}" for v in late]

    lost = []
    for p in scenario.patients:
        if not expected_in_run(p, scenario):
            continue
        if p.expected_trigger not in kinds[p.patient_id]:
            lost.append(f"lost_trigger: {p.patient_id} no {p.expected_trigger} trigger")
        elif p.patient_id not in case_pids and not death_known_first(p, triggers):
            lost.append(f"lost_trigger: {p.patient_id} {p.expected_trigger} opened no case")
    verdict.figures["lost_triggers"] = len(lost)
    # Evidence that a provider fault bit: sends the notifier had to retry (its own counter,
    # so it restarts with the process: a floor, not a total, under kill -9).
    notifier = observed.metrics.get("notifier")
    verdict.figures["notifier_retries"] = (
        int(notifier.total("followup_notifier_retries_total")) if notifier else 0
    )
    broken += lost
    return verdict


def check_sites(
    verdict: Verdict, observed: Observed, scenario: Scenario, scopes: chain.SiteScopes | None
) -> None:
    """The chain's invariants per site (``tests/faults/chain.py``): attribution, each
    patient contacted only in its site's voice and through its site's sinks, no site's
    token shown another site's cases."""
    broken = chain.check(observed, scenario, scopes)
    per_site: Counter[str] = Counter(
        str(c.get("site")) for c in observed.cases or [] if c.get("site") is not None
    )
    verdict.figures["site_breaches"] = len(broken)
    verdict.figures["cases_per_site"] = dict(sorted(per_site.items()))
    verdict.broken += broken
