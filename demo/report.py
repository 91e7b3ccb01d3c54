"""The demo's report, computed from what really happened: topics read back, the stand-ins'
captures and the services' metrics; never from what the scenario intended.

The ground-truth checks (``check``) compare those observations with the scenario: they are
what the end-to-end test asserts and what the report prints under "checks".
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from common.recovery import CLOSED_METRIC, NOT_COUNTED, RECOVERED, recovery_rate
from demo.bounds import allowed, earliest_allowed, wall_add
from demo.observe import Metrics
from demo.scenario import Patient, Scenario, e164
from schemas.base import Channel
from schemas.events import (
    AppointmentEvent,
    CallTaskEvent,
    NotificationCommand,
    OutcomeEvent,
    TriggerEvent,
)
from services.notifier.sms_text import segment_count
from services.scheduler.policy import CadencePolicy, CadenceRules
from standins.calltasks import ReceivedTask
from standins.mailbox import MailRecord
from standins.twilio import ReplyRecord, SmsRecord

E = TypeVar("E", TriggerEvent, NotificationCommand, OutcomeEvent, AppointmentEvent)
# The notifier's outcomes that stamp the moment it decided to send (sms, email, call task).
SEND_DECISIONS = frozenset({"sent", "delivered", "task_created"})

_LT = set("ąčęėįšųūžĄČĘĖĮŠŲŪŽ")
_RU_ONLY = set("ыэёЫЭЁ")
_BG_HINTS = ("ъ", "ще", " на ", " за ", "Здравейте", "час ", "Вашия", "вашия")


def detect_language(text: str) -> str:
    """A small script-and-letter test: enough to tell our four template languages apart."""
    if any(c in _LT for c in text):
        return "lt"
    cyrillic = sum(1 for c in text if "\u0400" <= c <= "\u04ff")
    if cyrillic > 3:
        if any(c in _RU_ONLY for c in text):
            return "ru"
        if any(hint in text for hint in _BG_HINTS):
            return "bg"
        return "ru"
    if re.search(r"[A-Za-z]{3,}", text):
        return "en"
    return "unknown"


@dataclass
class Observed:
    appointments: list[AppointmentEvent] = field(default_factory=list)
    # When the tracker wrote each appointment event (virtual time; by event id), if known.
    appointments_received: dict[str, datetime] = field(default_factory=dict)
    triggers: list[TriggerEvent] = field(default_factory=list)
    notifications: list[NotificationCommand] = field(default_factory=list)
    outcomes: list[OutcomeEvent] = field(default_factory=list)
    dead_letters: int = 0
    sms: list[SmsRecord] = field(default_factory=list)
    replies: list[ReplyRecord] = field(default_factory=list)
    mail: list[MailRecord] = field(default_factory=list)
    call_tasks: list[ReceivedTask] = field(default_factory=list)
    call_tasks_refused: int = 0
    # The calltasks topic read back (the kafka sink), and the sinks the notifier was given.
    topic_call_tasks: list[CallTaskEvent] = field(default_factory=list)
    sinks: tuple[str, ...] = ("webhook",)
    metrics: dict[str, Metrics] = field(default_factory=dict)
    cases: list[dict[str, Any]] | None = None
    # GET /cases/{id} per case (attempts and history), where the scheduler answered.
    case_details: dict[str, dict[str, Any]] = field(default_factory=dict)


def within(observed: Observed, end: datetime) -> Observed:
    """What happened up to the end of the scenario's time. The services keep running while
    the last messages settle and are read back; what they do after the clinic closed (a
    rebooked visit after the last day counted as a no-show) is not part of the run."""

    def opened_in_time(case: dict[str, Any]) -> bool:
        opened = case.get("opened_at")
        try:
            return opened is None or datetime.fromisoformat(str(opened)) <= end
        except ValueError:
            return True

    return Observed(
        appointments=[a for a in observed.appointments if a.occurred_at <= end],
        triggers=[t for t in observed.triggers if t.detected_at <= end],
        notifications=[n for n in observed.notifications if n.occurred_at <= end],
        outcomes=[o for o in observed.outcomes if o.occurred_at <= end],
        dead_letters=observed.dead_letters,
        sms=[m for m in observed.sms if m.at <= end],
        replies=[r for r in observed.replies if r.at <= end],
        # A withdrawal commanded in time counts wherever it lands, even after the last day.
        mail=[m for m in observed.mail if m.at <= end or m.calendar_method == "CANCEL"],
        call_tasks=[t for t in observed.call_tasks if t.at <= end or t.action == "withdraw"],
        call_tasks_refused=observed.call_tasks_refused,
        topic_call_tasks=[
            t for t in observed.topic_call_tasks if t.occurred_at <= end or t.action == "withdraw"
        ],
        sinks=observed.sinks,
        metrics=observed.metrics,
        cases=None if observed.cases is None else [c for c in observed.cases if opened_in_time(c)],
        case_details=observed.case_details,
    )


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str


# --- small views over the observations ---------------------------------------------------


def unique_by_id(events: list[E]) -> list[E]:
    seen: dict[str, E] = {}
    for e in events:
        seen.setdefault(e.event_id, e)
    return list(seen.values())


def follow_ups(observed: Observed) -> list[NotificationCommand]:
    return [n for n in unique_by_id(observed.notifications) if n.purpose == "follow_up"]


def case_patients(observed: Observed) -> dict[str, str]:
    """case_id -> patient_id, from what the scheduler commanded and the API listed."""
    out = {n.case_id: n.patient_id for n in unique_by_id(observed.notifications)}
    for case in observed.cases or []:
        cid, pid = case.get("case_id"), case.get("patient_id")
        if isinstance(cid, str) and isinstance(pid, str):
            out.setdefault(cid, pid)
    return out


def closed_by_resolution(observed: Observed) -> dict[str, float]:
    """How many cases closed with each resolution: from the scheduler's database (GET
    /cases), else from its counter (which restarts with it), as the dashboard reads it."""
    if observed.cases is None:
        metrics = observed.metrics.get("scheduler", Metrics())
        return metrics.by_label(CLOSED_METRIC, "resolution")
    return dict(Counter(str(c["resolution"]) for c in observed.cases if c.get("resolution")))


def case_state(case: dict[str, Any]) -> str:
    # GET /cases: a closed case carries its resolution; an open one only its state.
    return str(case.get("resolution") or case.get("state") or "unknown")


def phone_owner(scenario: Scenario) -> dict[str, str]:
    # A shared phone counts for the family member who slipped (the one followup reaches).
    ordered = sorted(scenario.patients, key=lambda p: p.slips)
    return {e164(p.phone): p.patient_id for p in ordered}


def email_owner(scenario: Scenario) -> dict[str, str]:
    return {p.email.lower(): p.patient_id for p in scenario.patients}


def mail_patient(record: MailRecord, owners: dict[str, str]) -> str | None:
    for rcpt in record.rcpt_to:
        if rcpt.lower() in owners:
            return owners[rcpt.lower()]
    return None


def patient_mail(observed: Observed, scenario: Scenario) -> list[MailRecord]:
    """Mail to patients (the front desk's call-task mails are a sink, not a message)."""
    owners = email_owner(scenario)
    return [m for m in observed.mail if mail_patient(m, owners) is not None]


def commands_by_key(observed: Observed) -> dict[str, NotificationCommand]:
    return {n.idempotency_key: n for n in unique_by_id(observed.notifications)}


def patient_texts(observed: Observed, scenario: Scenario) -> list[tuple[str, str, str]]:
    """(channel, language, text) of every SMS and mail that reached a patient: the language
    of the patient the scheduler commanded it for (its key), else of the number's or
    address's owner in the scenario."""
    commands = commands_by_key(observed)
    by_id = {p.patient_id: p for p in scenario.patients}
    phones, emails = phone_owner(scenario), email_owner(scenario)

    def language(key: str | None, owner: str | None) -> str:
        pid = commands[key].patient_id if key and key in commands else owner
        return by_id[pid].language if pid in by_id else "unknown"

    out = []
    for sms in observed.sms:
        out.append(("sms", language(sms.key, phones.get(e164(sms.to))), sms.body))
    for mail in patient_mail(observed, scenario):
        key = mail.headers.get("X-Followup-Key")
        out.append(
            ("email", language(key, mail_patient(mail, emails)), mail.subject + "\n" + mail.text)
        )
    return out


def sms_segments(observed: Observed, scenario: Scenario) -> dict[str, dict[str, int]]:
    """Texts and billed segments per language, counted as the notifier counts them."""
    out: dict[str, dict[str, int]] = {}
    for channel, language, text in patient_texts(observed, scenario):
        if channel != "sms":
            continue
        row = out.setdefault(language, {"texts": 0, "segments": 0})
        row["texts"] += 1
        row["segments"] += segment_count(text)[1]
    return out


def sms_triage(observed: Observed) -> dict[str, int]:
    """What the notifier made of the carriers' answers: refusals and failures by the reason
    it stamped, and opt-outs (a STOP reply or the carrier's 21610) by theirs."""
    out: Counter[str] = Counter()
    for o in unique_by_id(observed.outcomes):
        if o.channel != "sms":
            continue
        if o.outcome in ("channel_impossible", "failed", "opt_out"):
            out[f"{o.outcome} {o.detail or '-'}"] += 1
    return dict(out)


def withdrawals(observed: Observed) -> tuple[dict[str, Any], list[str]]:
    """The scheduler's withdrawals and where each reached: (counts, problems).

    The task a withdrawal withdraws is the call task of the same case and attempt; the
    notifier's own outcome for the withdrawal says whether that task had gone out
    (``never_sent``, ``no_task``: nothing to withdraw at a sink, counted apart)."""
    notes = unique_by_id(observed.notifications)
    commanded = [n for n in notes if n.purpose == "withdrawal"]
    tasks = {
        (n.case_id, n.attempt_number): n.idempotency_key
        for n in notes
        if n.channel == "call_task" and n.purpose != "withdrawal"
    }
    created = {
        o.idempotency_key for o in unique_by_id(observed.outcomes) if o.outcome == "task_created"
    }
    verdict = {
        o.idempotency_key: o.detail or "withdrawn"
        for o in unique_by_id(observed.outcomes)
        if o.outcome == "withdrawn"
    }
    received: dict[str, set[str]] = {
        "webhook": {
            str(t.task.get("task_id")) for t in observed.call_tasks if t.action == "withdraw"
        },
        "email": {
            key.split(":", 1)[1].rsplit(":", 1)[0]
            for m in observed.mail
            if (key := m.headers.get("X-Followup-Key", "")).startswith("calltask:")
            and key.endswith(":withdraw")
            and m.calendar_method == "CANCEL"
        },
        "kafka": {t.task_id for t in observed.topic_call_tasks if t.action == "withdraw"},
    }
    apart: Counter[str] = Counter()
    problems: list[str] = []
    sent, lost = 0, 0
    for w in commanded:
        task_id = tasks.get((w.case_id, w.attempt_number))
        said = verdict.get(w.idempotency_key)
        if said in ("never_sent", "no_task"):
            apart[said] += 1
            continue
        if task_id is None or task_id not in created:
            apart["task_not_created"] += 1
            continue
        sent += 1
        missing = [sink for sink in observed.sinks if task_id not in received.get(sink, set())]
        if said is None:
            problems.append(f"{w.idempotency_key}: no withdrawn outcome")
        if missing:
            problems.append(f"{w.idempotency_key}: not at {', '.join(missing)}")
        lost += bool(missing) or said is None
    counts = {
        "commanded": len(commanded),
        "of_created_tasks": sent,
        "lost": lost,
        "apart": dict(apart),
        "received": {sink: len(received.get(sink, set())) for sink in observed.sinks},
    }
    return counts, problems


# --- the report --------------------------------------------------------------------------


def compute(observed: Observed, scenario: Scenario) -> dict[str, Any]:
    triggers = unique_by_id(observed.triggers)
    outcomes = unique_by_id(observed.outcomes)
    steps = follow_ups(observed)
    escalations = [n for n in unique_by_id(observed.notifications) if n.purpose == "escalation"]
    sched = observed.metrics.get("scheduler", Metrics())
    notifier = observed.metrics.get("notifier", Metrics())

    cases = case_patients(observed)
    if observed.cases is not None:  # the scheduler's database is the record of cases
        cases = {str(c.get("case_id")): str(c.get("patient_id")) for c in observed.cases}
    patients_with_case = set(cases.values())
    case_states: Counter[str] = Counter()
    if observed.cases is not None:
        case_states.update(case_state(case) for case in observed.cases)
    closed = closed_by_resolution(observed)
    rate = recovery_rate(closed)

    opt_out_patients = {o.patient_id for o in outcomes if o.outcome == "opt_out"}
    violations = opt_out_violations(observed, scenario, timedelta(0))
    languages: Counter[str] = Counter()
    for sms in observed.sms:
        languages[detect_language(sms.body)] += 1
    for mail in patient_mail(observed, scenario):
        languages[detect_language(mail.subject + "\n" + mail.text)] += 1
    for task in observed.call_tasks:
        if language := task.task.get("language"):
            languages[str(language)] += 1

    held: dict[str, dict[str, float]] = {
        "scheduler": sched.by_label("followup_scheduler_held_total", "rule"),
        "notifier": notifier.by_label("followup_notifier_held_total", "rule"),
    }
    return {
        "scenario": {
            "patients": len(scenario.patients),
            "days": scenario.days,
            "seed": scenario.seed,
            "start": scenario.start.isoformat(),
        },
        "appointments": len({a.appointment_id for a in observed.appointments}),
        "appointment_events": len(observed.appointments),
        "triggers": dict(Counter(t.kind for t in triggers)),
        "no_shows_detected": sum(1 for t in triggers if t.kind == "no_show"),
        # From the scheduler's database (GET /cases), not a counter that restarts with it.
        "cases_opened": None if observed.cases is None else len(observed.cases),
        "case_states": dict(case_states),
        "attempts_by_channel": dict(Counter(n.channel for n in steps)),
        "deliveries": {
            "sms": len(observed.sms),
            "email": len(patient_mail(observed, scenario)),
            "call_task": sum(1 for t in observed.call_tasks if t.action == "create"),
        },
        "patients_with_case": len(patients_with_case),
        # common/recovery.py: cases, as the clinic dashboard counts them.
        "cases_recovered": int(closed.get(RECOVERED, 0)),
        "cases_closed_counted": int(
            sum(n for resolution, n in closed.items() if resolution not in NOT_COUNTED)
        ),
        "recovery_rate": None if rate is None else round(rate, 3),
        "escalations_before_deadline": sum(
            1 for n in escalations if n.stage_deadline is None or n.window_start <= n.stage_deadline
        ),
        "escalations": len(escalations),
        "deadlines_missed": int(sched.total("followup_scheduler_deadline_misses_total")),
        "opt_outs": len(opt_out_patients),
        "opt_outs_honoured": len(opt_out_patients - {v.split()[0] for v in violations}),
        "messages_per_language": dict(languages),
        "sms_segments_per_language": sms_segments(observed, scenario),
        "sms_triage": sms_triage(observed),
        "withdrawals": withdrawals(observed)[0],
        "held_by_rule": held,
        "outcomes": dict(Counter(o.outcome for o in outcomes)),
        "dead_letters": observed.dead_letters,
        "call_tasks_refused_bad_signature": observed.call_tasks_refused,
    }


# --- ground truth checks -----------------------------------------------------------------
#
# Verdicts go by the times the services stamped (the scheduler's opened_at and planned
# window, the notifier's send decisions), not by when something reached a stand-in: on a
# scaled clock a busy CPU turns milliseconds of latency into virtual minutes. Where a fact
# has to cross services (a death reported to the tracker, learned by the notifier), the
# allowance is the pipeline delay measured in this very run (``hop_delay``).


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def send_decisions(observed: Observed) -> dict[str, datetime]:
    """idempotency key -> when the notifier decided to send it (its outcome's stamp)."""
    out: dict[str, datetime] = {}
    for o in unique_by_id(observed.outcomes):
        if o.outcome in SEND_DECISIONS and o.idempotency_key:
            out[o.idempotency_key] = min(o.occurred_at, out.get(o.idempotency_key, o.occurred_at))
    return out


@dataclass(frozen=True)
class Contact:
    """One contact that reached the outside world, with when the notifier decided it."""

    patient_id: str
    channel: Channel
    key: str | None
    decided_at: datetime | None  # None: no stamped decision found; judge by arrival
    arrived_at: datetime
    what: str

    def latest_decision(self) -> datetime:
        return self.decided_at or self.arrived_at


def contacts(observed: Observed, scenario: Scenario) -> list[Contact]:
    decided = send_decisions(observed)
    phones, emails = phone_owner(scenario), email_owner(scenario)
    out: list[Contact] = []
    for sms in observed.sms:
        if pid := phones.get(e164(sms.to)):
            when = decided.get(sms.key) if sms.key else None
            out.append(Contact(pid, "sms", sms.key, when, sms.at, "sms"))
    for mail in observed.mail:
        if pid := mail_patient(mail, emails):
            key = mail.headers.get("X-Followup-Key")
            when = decided.get(key) if key else None
            out.append(Contact(pid, "email", key, when, mail.at, "email"))
    for task in observed.call_tasks:
        pid = task.task.get("patient_id")
        if task.action == "create" and task.purpose == "follow_up" and isinstance(pid, str):
            key = str(task.task.get("task_id") or "") or None
            when = decided.get(key) if key else None
            out.append(Contact(pid, "call_task", key, when, task.at, "call task"))
    return out


def hop_delay(observed: Observed) -> timedelta:
    """The longest virtual time a trigger took from the tracker's detection to the case the
    scheduler opened for it: one hop of the pipeline under this run's load."""
    detected = {t.event_id: t.detected_at for t in unique_by_id(observed.triggers)}
    longest = timedelta(0)
    for case in observed.cases or []:
        opened, at = _moment(case.get("opened_at")), detected.get(str(case.get("trigger_event_id")))
        if opened is not None and at is not None:
            longest = max(longest, opened - at)
    return longest


def rules_of(policy: CadencePolicy, observed: Observed) -> dict[str, CadenceRules]:
    """idempotency key -> the rules the scheduler planned that command with."""
    return {
        n.idempotency_key: policy.rules_for(n.department, n.reason)
        for n in unique_by_id(observed.notifications)
    }


def opt_out_violations(observed: Observed, scenario: Scenario, tolerance: timedelta) -> list[str]:
    """SMS the notifier decided to send after it recorded that patient's opt-out.

    Both moments are the notifier's own stamps; ``tolerance`` covers only the instant
    between the STOP's stamp and its commit."""
    opted: dict[str, datetime] = {}
    for o in unique_by_id(observed.outcomes):
        if o.outcome == "opt_out" and o.channel in ("sms",):
            opted[o.patient_id] = min(o.occurred_at, opted.get(o.patient_id, o.occurred_at))
    return [
        f"{c.patient_id} sms decided at {c.latest_decision().isoformat()} after opt-out"
        for c in contacts(observed, scenario)
        if c.channel == "sms"
        and c.patient_id in opted
        and c.latest_decision() > opted[c.patient_id] + tolerance
    ]


def quiet_hour_violations(
    observed: Observed, scenario: Scenario, policy: CadencePolicy, tolerance: timedelta
) -> list[str]:
    """Messages sent in the patient's quiet hours (the policy's, in the patient's zone)."""
    zones = {p.patient_id: p.timezone for p in scenario.patients}
    rules = rules_of(policy, observed)
    general = policy.rules_for("", "no_show")
    out = []
    for c in contacts(observed, scenario):
        if c.channel == "call_task":
            continue
        r, zone = rules.get(c.key or "", general), zones[c.patient_id]
        if c.decided_at is not None:
            quiet = not allowed(r, c.channel, c.decided_at, zone)
        else:  # no stamp found: it was decided at most ``tolerance`` before it arrived
            quiet = not allowed(r, c.channel, c.arrived_at, zone) and not allowed(
                r, c.channel, c.arrived_at - tolerance, zone
            )
        if quiet:
            local = c.latest_decision().astimezone(ZoneInfo(zone))
            out.append(f"{c.patient_id} {c.what} at {local.isoformat()}")
    return out


def first_contact_problems(
    observed: Observed, policy: CadencePolicy, planned_tolerance: timedelta
) -> tuple[int, list[str]]:
    """Each case's first follow-up is planned at the first moment the policy allows after
    the first step's delay: from the fact that opened the case (the missed visit, else the
    detection), not before the scheduler had the case (its opened_at), nor before a hold
    the case recorded; and it starts where its channel is allowed."""
    first_by_case: dict[str, NotificationCommand] = {}
    for n in follow_ups(observed):
        if (
            n.case_id not in first_by_case
            or n.attempt_number < first_by_case[n.case_id].attempt_number
        ):
            first_by_case[n.case_id] = n
    cases = {str(c.get("case_id")): c for c in observed.cases or []}
    triggers = unique_by_id(observed.triggers)
    by_id = {t.event_id: t for t in triggers}
    problems = []
    for n in first_by_case.values():
        case = cases.get(n.case_id, {})
        trigger = by_id.get(str(case.get("trigger_event_id"))) or next(
            (
                t
                for t in triggers
                if t.patient_id == n.patient_id
                and t.kind == n.reason
                and (n.appointment_id is None or t.appointment_id == n.appointment_id)
            ),
            None,
        )
        if trigger is None:
            continue
        rules = policy.rules_for(n.department, n.reason)
        fact = trigger.detected_at
        if trigger.kind == "no_show" and trigger.appointment_start is not None:
            fact = trigger.appointment_start
        earliest = wall_add(fact, rules.steps[0].delay, n.timezone)
        # Schedule churn: the first contact waits the reason's settle window after the fact.
        earliest = max(earliest, fact + rules.settle_window)
        for known in (_moment(case.get("opened_at")), held_until(observed, n.case_id)):
            if known is not None:
                earliest = max(earliest, known)
        bound = earliest_allowed(rules, n.channel, earliest, n.timezone) or earliest
        zone = ZoneInfo(n.timezone)
        start = n.window_start.astimezone(zone).isoformat()
        if n.window_start > bound + planned_tolerance:
            due = bound.astimezone(zone).isoformat()
            problems.append(f"{n.case_id}: first contact {start} > {due}")
        elif not allowed(rules, n.channel, n.window_start, n.timezone):
            problems.append(f"{n.case_id}: first contact {start} outside {n.channel} hours")
    return len(first_by_case), problems


def held_until(observed: Observed, case_id: str) -> datetime | None:
    """The latest moment the case's history says its first step was planned afresh from,
    before the first contact fired: a hold's end (frequency cap, conversation) or the
    moment the scheduler found the step's window over (it was away longer than it)."""
    latest = None
    for entry in observed.case_details.get(case_id, {}).get("history") or []:
        if not isinstance(entry, dict):
            continue
        event, detail = entry.get("event"), entry.get("detail")
        if event == "fired":
            break
        moment = None
        if event == "held" and isinstance(detail, dict):
            moment = _moment(detail.get("until"))
        elif event == "expired":
            moment = _moment(entry.get("at"))
        if moment is not None and (latest is None or moment > latest):
            latest = moment
    return latest


def arrivals_reported_late(observed: Observed, triggers: list[TriggerEvent]) -> set[str]:
    """The no-show triggers whose visit the clinic's feed said was attended only with a
    stamp after the no-show moment (the start plus the grace), or which reached the tracker
    only after it (the tracker's own stamp on the record): the tracker, which judges by what
    it has read, was right to fire. The clinic simulator stamps what it sends when it sends
    it, and a machine starved of CPU delivers an attendee's arrival late; the verdict must
    not depend on that (an arrival received in time and a case all the same still fails)."""
    arrived: dict[str, datetime] = {}
    for a in observed.appointments:
        if a.status in ("arrived", "fulfilled"):
            stamp = a.status_at or a.occurred_at
            # The tracker knew it only once it received it (its own stamp on the record).
            received = observed.appointments_received.get(a.event_id)
            stamp = stamp if received is None else max(stamp, received)
            known = arrived.get(a.appointment_id)
            arrived[a.appointment_id] = stamp if known is None else min(known, stamp)
    return {
        t.event_id
        for t in triggers
        if t.kind == "no_show"
        and t.appointment_id is not None
        and t.appointment_id in arrived
        and arrived[t.appointment_id] > t.occurred_at
    }


def _all_reported_late(triggers: list[TriggerEvent], reported_late: set[str]) -> bool:
    return bool(triggers) and all(t.event_id in reported_late for t in triggers)


def check(
    observed: Observed,
    scenario: Scenario,
    policy: CadencePolicy,
    tolerance: timedelta,
    planned_tolerance: timedelta = timedelta(minutes=1),
) -> list[Finding]:
    """``tolerance`` is the virtual time of the instant a service takes between stamping a
    fact and acting on it; planned moments, which carry no latency, get only
    ``planned_tolerance``."""
    findings: list[Finding] = []
    triggers = unique_by_id(observed.triggers)
    notes = unique_by_id(observed.notifications)
    steps = follow_ups(observed)
    by_patient_trigger: dict[str, list[TriggerEvent]] = defaultdict(list)
    for t in triggers:
        by_patient_trigger[t.patient_id].append(t)
    case_pids = set(case_patients(observed).values())

    # 1. every expected slip produces its trigger and a case
    missing = []
    for p in scenario.patients:
        if p.expected_trigger is None:
            continue
        kinds = {t.kind for t in by_patient_trigger[p.patient_id]}
        if p.expected_trigger not in kinds:
            missing.append(f"{p.patient_id}: no {p.expected_trigger} trigger")
        elif p.patient_id not in case_pids:
            missing.append(f"{p.patient_id}: {p.expected_trigger} but no case")
    expected = sum(1 for p in scenario.patients if p.expected_trigger)
    findings.append(
        Finding(
            "every_slip_opens_a_case",
            not missing,
            f"{expected - len(missing)}/{expected} expected cases found; " + "; ".join(missing),
        )
    )
    reported_late = arrivals_reported_late(observed, triggers)
    unexpected = [
        p.patient_id
        for p in scenario.patients
        if p.behaviour == "attends"
        and p.patient_id in case_pids
        and not _all_reported_late(by_patient_trigger[p.patient_id], reported_late)
    ]
    excused = sorted(
        p.patient_id
        for p in scenario.patients
        if p.behaviour == "attends" and p.patient_id in case_pids and p.patient_id not in unexpected
    )
    findings.append(
        Finding(
            "no_case_for_attendees",
            not unexpected,
            f"{len(unexpected)} attending patients got a case: {', '.join(unexpected)}"
            + (
                f"; arrival stamped after the no-show moment: {', '.join(excused)}"
                if excused
                else ""
            ),
        )
    )

    # 2. the first contact of every case comes when the policy first allows it
    checked, late = first_contact_problems(observed, policy, planned_tolerance)
    findings.append(
        Finding(
            "first_contact_within_first_step",
            bool(checked) and not late,
            f"{checked - len(late)}/{checked} cases in time; " + "; ".join(late),
        )
    )

    # 3. nobody is texted after opting out, nor in quiet hours
    violations = opt_out_violations(observed, scenario, tolerance)
    findings.append(
        Finding("no_contact_after_opt_out", not violations, "; ".join(violations) or "none")
    )
    quiet = quiet_hour_violations(observed, scenario, policy, tolerance)
    findings.append(Finding("nothing_in_quiet_hours", not quiet, "; ".join(quiet) or "none"))

    # 4. every recovered patient's case is closed
    rebooked = {
        o.patient_id for o in unique_by_id(observed.outcomes) if o.outcome == "answered_rebooked"
    }
    open_after: list[str] = []
    if observed.cases is not None:
        for case in observed.cases:
            pid = case.get("patient_id")
            if pid in rebooked and case.get("state") != "closed":
                open_after.append(f"{pid}: case {case.get('case_id')} is {case_state(case)}")
    else:
        open_after.append("the scheduler's GET /cases was not available")
    findings.append(
        Finding(
            "recovered_cases_closed",
            bool(rebooked) and not open_after,
            f"{len(rebooked)} rebooked; " + ("; ".join(open_after) or "all closed"),
        )
    )

    # 4b. nobody is contacted after their death is known, and their cases close
    findings.append(after_death(observed, scenario, tolerance + 2 * hop_delay(observed)))
    # 4c. a shared phone hears no patient's name or visit
    findings.append(shared_numbers(observed, scenario))

    # 5. no message delivered twice
    dupes = duplicate_deliveries(observed, scenario, notes)
    findings.append(Finding("no_message_delivered_twice", not dupes, "; ".join(dupes) or "none"))

    # 6. no follow-up scheduled after its stage deadline
    after = after_deadline(steps)
    findings.append(Finding("no_follow_up_after_deadline", not after, "; ".join(after) or "none"))

    # 7. every withdrawal of a task that went out reaches every sink the task went to
    counts, lost = withdrawals(observed)
    apart = ", ".join(f"{k} {v}" for k, v in sorted(counts["apart"].items())) or "none"
    findings.append(
        Finding(
            "withdrawals_reach_every_sink",
            not lost,
            f"{counts['of_created_tasks'] - counts['lost']}"
            f"/{counts['of_created_tasks']} withdrawals of sent tasks at all of "
            f"{', '.join(observed.sinks)}; apart: {apart}; " + ("; ".join(lost) or "none lost"),
        )
    )

    # 8. a patient who reads lt, ru or bg reads no English template words nor ISO dates
    english = english_in_other_languages(observed, scenario)
    findings.append(
        Finding("no_english_in_other_languages", not english, "; ".join(english) or "none")
    )
    return findings


def after_deadline(steps: list[NotificationCommand]) -> list[str]:
    """Follow-ups planned to start after their stage deadline."""
    return [
        f"{n.idempotency_key}: {n.window_start.isoformat()} > {n.stage_deadline.isoformat()}"
        for n in steps
        if n.stage_deadline is not None and n.window_start > n.stage_deadline
    ]


# Words only the English templates use (services/notifier/templates/en.yaml), and the
# default clinic name: any of them in an lt/ru/bg text is English left inside it.
ENGLISH_WORDS = (
    "the clinic",
    "we missed you",
    "your visit",
    "your treatment",
    "please call",
    "reply stop",
    "opt out",
    "dear",
    "hello",
    "to rebook",
    "unsubscribe link",
)
_URL = re.compile(r"(?:https?://|mailto:)\S+|\S+@\S+")
_ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_ENGLISH = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in ENGLISH_WORDS) + r")\b", re.I)


def english_in_other_languages(observed: Observed, scenario: Scenario) -> list[str]:
    """Per channel and language, how many texts carry an English word or an ISO date (the
    words found, never the text: it is the patient's message)."""
    found: Counter[tuple[str, str]] = Counter()
    words: dict[tuple[str, str], set[str]] = defaultdict(set)
    for channel, language, text in patient_texts(observed, scenario):
        if language not in ("lt", "ru", "bg"):
            continue
        plain = _URL.sub(" ", text)  # links and addresses are not words the patient reads
        hits = {m.group(0).lower() for m in _ENGLISH.finditer(plain)}
        if _ISO_DATE.search(plain):
            hits.add("YYYY-MM-DD")
        if hits:
            found[(channel, language)] += 1
            words[(channel, language)] |= hits
    return [
        f"{n} {channel} in {language} ({', '.join(sorted(words[(channel, language)]))})"
        for (channel, language), n in sorted(found.items())
    ]


def after_death(observed: Observed, scenario: Scenario, allowance: timedelta) -> Finding:
    """No contact decided after the clinic reported the death, once the fact has had
    ``allowance`` (two hops of the pipeline, as measured in the run) to reach the notifier."""
    dead = {p.patient_id for p in scenario.patients if p.behaviour == "dies"}
    problems = contacts_after_death(observed, scenario, allowance)
    for case in observed.cases or []:
        if case.get("patient_id") in dead and case_state(case) != "deceased":
            problems.append(f"{case.get('patient_id')}: case {case_state(case)}, not deceased")
    if observed.cases is None:
        problems.append("the scheduler's GET /cases was not available")
    return Finding(
        "no_contact_after_death",
        not problems,
        f"{len(dead)} deceased; " + ("; ".join(problems) or "none contacted, cases closed"),
    )


def contacts_after_death(observed: Observed, scenario: Scenario, allowance: timedelta) -> list[str]:
    """Contacts decided after a death was known (``allowance`` after the clinic reported it)."""
    dead = {p.patient_id: p for p in scenario.patients if p.behaviour == "dies"}
    return [
        f"{c.patient_id}: {c.what} after death"
        for c in contacts(observed, scenario)
        if c.patient_id in dead and c.latest_decision() > dead[c.patient_id].death_at + allowance
    ]


def shared_numbers(observed: Observed, scenario: Scenario) -> Finding:
    """A text to a phone several patients share names none of them and none of their visits;
    a call task to such a phone says the number is shared."""
    families: dict[str, list[Patient]] = defaultdict(list)
    for p in scenario.patients:
        if p.shares_phone:
            families[e164(p.phone)].append(p)
    problems = []
    texts = 0
    for sms in observed.sms:
        family = families.get(e164(sms.to))
        if not family:
            continue
        texts += 1
        for p in family:
            words = [p.given_name, p.family_name]
            days = [a.start.date().isoformat() for a in p.appointments]
            if any(w in sms.body for w in words + days):
                problems.append(f"sms to {p.patient_id}'s shared phone names a patient or visit")
    for task in observed.call_tasks:
        inner = task.task
        if task.action != "create":
            continue
        if e164(str(inner.get("phone") or "")) in families and inner.get("phone_shared") is False:
            problems.append(f"call task {inner.get('task_id')} does not say the phone is shared")
    return Finding(
        "shared_phone_names_no_one",
        not problems,
        f"{texts} texts to {len(families)} shared phones; " + ("; ".join(problems) or "none named"),
    )


def duplicate_deliveries(
    observed: Observed, scenario: Scenario, notes: list[NotificationCommand]
) -> list[str]:
    """More deliveries to a patient on a channel than the scheduler ever asked for: its
    follow-ups, and the one feedback question after a recovered visit."""
    asked: Counter[tuple[str, str]] = Counter()
    for n in notes:
        if n.purpose in ("follow_up", "feedback"):
            asked[(n.patient_id, n.channel)] += 1
    got: Counter[tuple[str, str]] = Counter()
    phones, emails = phone_owner(scenario), email_owner(scenario)
    for sms in observed.sms:
        if pid := phones.get(e164(sms.to)):
            got[(pid, "sms")] += 1
    for mail in observed.mail:
        if pid := mail_patient(mail, emails):
            got[(pid, "email")] += 1
    task_keys: Counter[str] = Counter()
    for task in observed.call_tasks:
        if task.action != "create":
            continue
        if key := task.task.get("task_id"):
            task_keys[str(key)] += 1
    out = [
        f"{pid} {ch}: {n} delivered, {asked[(pid, ch)]} asked"
        for (pid, ch), n in got.items()
        if n > asked[(pid, ch)]
    ]
    out += [f"call task {k} delivered {n} times" for k, n in task_keys.items() if n > 1]
    return out


# --- rendering ---------------------------------------------------------------------------


def table(report: dict[str, Any], findings: list[Finding], where: dict[str, str]) -> str:
    rows: list[tuple[str, str]] = [
        ("appointments", str(report["appointments"])),
        ("no-shows detected", str(report["no_shows_detected"])),
        ("triggers", _kv(report["triggers"])),
        (
            "cases opened",
            "unknown (the case API did not answer)"
            if report["cases_opened"] is None
            else str(report["cases_opened"]),
        ),
        ("case states", _kv(report["case_states"]) or "-"),
        ("attempts by channel", _kv(report["attempts_by_channel"])),
        ("delivered", _kv(report["deliveries"])),
        (
            "recovery rate (cases)",
            f"{report['cases_recovered']} recovered of {report['cases_closed_counted']} closed"
            + (f" ({report['recovery_rate']:.0%})" if report["recovery_rate"] is not None else ""),
        ),
        (
            "escalations before deadline",
            f"{report['escalations_before_deadline']} of {report['escalations']}",
        ),
        ("deadlines missed", str(report["deadlines_missed"])),
        ("opt-outs honoured", f"{report['opt_outs_honoured']} of {report['opt_outs']}"),
        ("messages per language", _kv(report["messages_per_language"])),
        (
            "sms segments per language",
            ", ".join(
                f"{lang} {row['segments']}/{row['texts']} texts"
                for lang, row in sorted(report["sms_segments_per_language"].items())
            )
            or "-",
        ),
        ("sms triage", _kv(report["sms_triage"]) or "none"),
        (
            "withdrawals",
            f"{report['withdrawals']['commanded']} commanded, "
            f"{report['withdrawals']['of_created_tasks']} of sent tasks; received: "
            + (_kv(report["withdrawals"]["received"]) or "-")
            + (
                f"; apart: {_kv(report['withdrawals']['apart'])}"
                if report["withdrawals"]["apart"]
                else ""
            ),
        ),
        ("held by scheduler rule", _kv(report["held_by_rule"]["scheduler"]) or "0"),
        ("held by notifier rule", _kv(report["held_by_rule"]["notifier"]) or "0"),
        *_workflow_rows(report),
        *_sites_rows(report),
        *_chat_rows(report),
        *_rebooking_rows(report),
        ("dead letters", str(report["dead_letters"])),
        ("clinic actions failed", str(report.get("run", {}).get("clinic_actions_failed", "-"))),
        ("services alive at the end", _kv(report.get("run", {}).get("services_alive", {})) or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["", "followup demo report", "=" * 60]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    lines += ["", "checks against the scenario's ground truth", "-" * 60]
    for f in findings:
        mark = "ok  " if f.ok else "FAIL"
        detail = f.detail if len(f.detail) < 160 else f.detail[:157] + "..."
        lines.append(f"{mark} {f.check}: {detail}")
    lines += ["", "where to look", "-" * 60]
    lines += [f"{k:<{width}}  {v}" for k, v in where.items()]
    return "\n".join(lines)


def _rebooking_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    # Imported here: demo.rebooking builds on this module's views.
    from demo.rebooking import summary

    return summary(report.get("rebooking") or {})


def _workflow_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    # Imported here: demo.workflow builds on this module's views.
    from demo.workflow import summary

    return summary(report.get("workflow") or {})


def _sites_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    # Imported here: demo.sites builds on this module's views.
    from demo.sites import summary

    return summary((report.get("sites") or {}).get("per_site") or {})


def _chat_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    # Imported here: demo.chat builds on this module's views.
    from demo.chat import summary

    return summary(report.get("chat") or {})


def _kv(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_num(v)}" for k, v in sorted(values.items()))


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def write_json(
    path: Path, report: dict[str, Any], findings: list[Finding], where: dict[str, str]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = report | {
        "checks": [{"check": f.check, "ok": f.ok, "detail": f.detail} for f in findings],
        "where": where,
    }
    path.write_text(json.dumps(body, indent=2, ensure_ascii=False, default=str) + "\n")
