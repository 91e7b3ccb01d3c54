"""The demo as a chain of three clinics in two countries (issue 22).

Two clinics in Lithuania (Vilnius, Kaunas; Europe/Vilnius; Lithuanian holidays, 11 March
inside the demo's two weeks) and one in Bulgaria (Sofia; Europe/Sofia; Bulgarian holidays,
3 March; Bulgarian by default), one deployment for all three. Each clinic has its own names
per language, phone, hours, call slots, closure days, its own desk token and its own
call-task sinks: Vilnius its ticketing tool's webhook, Kaunas a second tool (its own webhook
receiver and secret) and its front desk's mailbox, Sofia the calltasks topic (read by its
desk's tool, here the front desk of the simulation) and its mailbox.

The population is spread over the three (every behaviour at every clinic, Bulgarian speakers
in Sofia), and each clinic's system names itself on every path the way such a system does:
HL7 MSH-4 (Vilnius, Sofia) or, behind an interface engine that leaves MSH-4 empty, PV1-3.4
(Kaunas); FHIR Appointment ``Location/<id>`` and CarePlan author ``Organization/<id>``;
the JSON contract's ``site``.

Every check of the demo is computed per site, on that site's patients alone and with the
rules the scheduler resolved for that site (``CadencePolicy.for_site``), and holds only when
it holds at each clinic. The checks of this module judge what keeps the clinics apart: the
sites stamped on every event, the sinks each site's tasks reached, the clinic each message
speaks as, each site's own days and zone, and a site's token against the APIs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import aiohttp
import holidays
import yaml

from common.clock import Clock
from common.kafka import decode_record, make_consumer
from common.sites import Sites
from demo import report, workflow
from demo.report import Finding, Observed, case_state, unique_by_id
from demo.scenario import CLINIC_ZONE, Appointment, Patient, Scenario, e164
from schemas.events import CallTaskEvent
from services.scheduler.policy import CadencePolicy
from standins.calltasks import CallTaskReceiver, ReceivedTask
from standins.mailbox import MailRecord

# --- the chain ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedNames:
    """How a clinic's own systems name it on each way in (the profile's ``facilities``)."""

    hl7_sending_facility: str  # MSH-4; "" when an interface engine leaves it empty
    hl7_point_of_care: str  # PV1-3.4
    fhir_location: str  # Appointment.participant Location/<id>
    fhir_organization: str  # CarePlan.author Organization/<id>


@dataclass(frozen=True)
class Clinic:
    site: str
    zone: str
    country: str
    default_language: str
    names: dict[str, str]  # per language, as its patients know it
    phone: str
    feeds: FeedNames
    sinks: tuple[str, ...]  # the kinds of its call-task sinks, in the profile's order
    desk_email: str | None = None
    closures: tuple[date, ...] = ()  # its own closed days, beside the public holidays
    business_hours: dict[str, str | None] | None = None
    call_slots: dict[str, str] | None = None
    sms_from: str | None = None  # its own SMS sender; None: the deployment's
    quiet_hours: str | None = None

    @property
    def token_env(self) -> str:
        return f"FOLLOWUP_{self.site.upper()}_API_TOKEN"

    @property
    def secret_env(self) -> str:
        return f"FOLLOWUP_{self.site.upper()}_WEBHOOK_SECRET"


_WEEK = ("mon", "tue", "wed", "thu", "fri")
CHAIN: tuple[Clinic, ...] = (
    Clinic(
        site="vilnius",
        zone="Europe/Vilnius",
        country="LT",
        default_language="lt",
        names={
            "lt": "Vilniaus šeimos klinika",
            "en": "Vilnius Family Clinic",
            "ru": "Вильнюсская семейная клиника",
            "bg": "Вилнюска семейна клиника",
        },
        phone="+37052000000",
        feeds=FeedNames("VLN", "VLN", "vilnius-1", "vilnius-family"),
        sinks=("webhook",),
    ),
    Clinic(
        site="kaunas",
        zone="Europe/Vilnius",
        country="LT",
        default_language="lt",
        names={
            "lt": "Kauno šeimos klinika",
            "en": "Kaunas Family Clinic",
            "ru": "Каунасская семейная клиника",
            "bg": "Каунаска семейна клиника",
        },
        phone="+37037000000",
        # Kaunas's scheduling system talks through the chain's interface engine, which
        # leaves MSH-4 empty: the visit's facility (PV1-3.4) names the clinic.
        feeds=FeedNames("", "KNS", "kaunas-1", "kaunas-family"),
        sinks=("webhook", "email"),
        desk_email="registratura@kaunas.example",
        closures=(date(2026, 3, 13),),  # a staff training day
        business_hours={**dict.fromkeys(_WEEK, "08:00-17:00"), "sat": None, "sun": None},
    ),
    Clinic(
        site="sofia",
        zone="Europe/Sofia",
        country="BG",
        default_language="bg",
        names={
            "bg": "Семейна клиника София",
            "en": "Sofia Family Clinic",
            "ru": "Софийская семейная клиника",
            "lt": "Sofijos šeimos klinika",
        },
        phone="+35929000000",
        sms_from="+35924100000",  # texts from a Bulgarian number, registered for Bulgaria
        feeds=FeedNames("SOF", "SOF", "sofia-1", "sofia-family"),
        sinks=("kafka", "email"),
        desk_email="registratura@sofia.example",
        business_hours={
            **dict.fromkeys(_WEEK, "09:00-19:00"),
            "fri": "09:00-18:00",
            "sat": "10:00-14:00",
            "sun": None,
        },
        call_slots={"morning": "09:00-12:00", "afternoon": "12:00-16:00", "evening": "16:00-19:00"},
        quiet_hours="20:00-09:00",
    ),
)
BY_SITE: dict[str, Clinic] = {c.site: c for c in CHAIN}
SITES = tuple(BY_SITE)
# The messengers' quiet hours too: a profile's quiet_hours names only sms and email, so
# the site's cadence override keeps the policy's full list (issue 19's chat patients).
QUIET_CHANNELS = ["sms", "email", "whatsapp", "telegram", "viber"]


def feed_names(site: str) -> FeedNames:
    return BY_SITE[site].feeds


def clinic_zone(site: str | None) -> str:
    """The zone the clinic's feeds write local times in (the deployment's without a site)."""
    return BY_SITE[site].zone if site is not None else CLINIC_ZONE


def profile(clinic: Clinic, webhook_url: str | None) -> dict[str, Any]:
    """One site of the sites file (``common/sites.py`` validates it)."""
    sinks: list[dict[str, Any]] = []
    for kind in clinic.sinks:
        if kind == "webhook":
            sinks.append({"kind": "webhook", "url": webhook_url, "secret_env": clinic.secret_env})
        elif kind == "email":
            sinks.append({"kind": "email", "to": clinic.desk_email})
        else:
            sinks.append({"kind": kind})
    f = clinic.feeds
    facilities = [n for n in (f.hl7_sending_facility, f.hl7_point_of_care) if n]
    facilities += [f"Location/{f.fhir_location}", f"Organization/{f.fhir_organization}"]
    body: dict[str, Any] = {
        "facilities": sorted(set(facilities)),
        "timezone": clinic.zone,
        "default_language": clinic.default_language,
        "names": clinic.names,
        "phone": clinic.phone,
        "holidays_country": clinic.country,
        "call_task_sinks": sinks,
        "api_token_env": clinic.token_env,
    }
    if clinic.sms_from is not None:
        body["sms_from"] = clinic.sms_from
    if clinic.closures:
        body["closures"] = [d.isoformat() for d in clinic.closures]
    if clinic.business_hours is not None:
        body["business_hours"] = clinic.business_hours
    if clinic.call_slots is not None:
        body["call_slots"] = clinic.call_slots
    if clinic.quiet_hours is not None:
        body["quiet_hours"] = {"hours": clinic.quiet_hours}
        body["cadence"] = {
            "defaults": {"quiet_hours": {"hours": clinic.quiet_hours, "channels": QUIET_CHANNELS}}
        }
    return body


def sites_file(
    directory: Path, webhooks: dict[str, str], environ: dict[str, str] | None = None
) -> Path:
    """The chain's sites file where the run keeps its files, read back with the services'
    own parser (and the run's Secrets), so a file they would refuse stops the demo here."""
    data = {"sites": {c.site: profile(c, webhooks.get(c.site)) for c in CHAIN}}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sites.yaml"
    header = "# The demo's chain of three clinics in two countries (demo.sites.sites_file).\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    Sites.load(path, environ)
    return path


# --- the population -----------------------------------------------------------------------


def assign(patients: list[Patient]) -> dict[str, str]:
    """patient id -> site: each behaviour shared out over the three clinics in turn (so every
    clinic meets every behaviour a population has enough of), Bulgarian speakers first to
    Sofia; a family sharing a phone is treated at one clinic."""
    groups: dict[str, list[Patient]] = {}
    for p in patients:
        groups.setdefault(p.behaviour, []).append(p)
    out: dict[str, str] = {}
    turn = 0
    for members in groups.values():
        quota: Counter[str] = Counter()
        for _ in members:
            quota[SITES[turn % len(SITES)]] += 1
            turn += 1
        # Sofia first takes its Bulgarian speakers, the Lithuanian clinics the others.
        ordered = sorted(members, key=lambda p: p.language != "bg")
        for p in ordered:
            if p.language == "bg" and quota["sofia"] > 0:
                site = "sofia"
            else:
                site = next(
                    (s for s in SITES if s != "sofia" and quota[s] > 0),
                    next(s for s in SITES if quota[s] > 0),
                )
            quota[site] -= 1
            out[p.patient_id] = site
    for p in patients:
        if p.phone_shared_with is not None and p.behaviour == "attends":
            out[p.patient_id] = out.get(p.phone_shared_with, out[p.patient_id])
    return out


def closed_on(clinic: Clinic, day: date) -> bool:
    """A weekend, the clinic's country's public holiday or its own closed day (the
    package the scheduler's policy reads holidays from)."""
    return (
        day.weekday() >= 5
        or day in holidays.country_holidays(clinic.country, years=day.year)
        or (day in clinic.closures)
    )


def at_the_clinic(appt: Appointment, clinic: Clinic) -> Appointment:
    """The visit in its clinic's zone, moved (same local time) off a day the clinic is shut:
    a clinic books no visit on its own holiday."""
    zone = ZoneInfo(clinic.zone)
    local = appt.start.astimezone(zone)
    day = local.date()
    while closed_on(clinic, day):
        day += timedelta(days=1)
    return replace(appt, start=datetime.combine(day, local.timetz().replace(tzinfo=None), zone))


def population(scenario: Scenario) -> Scenario:
    """The scenario's patients spread over the chain (``Patient.site``), their visits at
    their clinic; everything else of the ground truth as built."""
    sites = assign(scenario.patients)
    patients = []
    for p in scenario.patients:
        clinic = BY_SITE[sites[p.patient_id]]
        visits = tuple(at_the_clinic(a, clinic) for a in p.appointments)
        patients.append(replace(p, site=clinic.site, appointments=visits))
    return replace(scenario, patients=patients)


def sites_of(scenario: Scenario) -> dict[str, str]:
    return {p.patient_id: p.site for p in scenario.patients if p.site is not None}


# --- one site's share of what happened -----------------------------------------------------


def task_key(mail_key: str) -> str | None:
    """The call task's id in a desk mail's X-Followup-Key (``calltask:<task>:<action>``)."""
    if not mail_key.startswith("calltask:"):
        return None
    return mail_key.split(":", 1)[1].rsplit(":", 1)[0]


def split(observed: Observed, scenario: Scenario, site: str) -> tuple[Observed, Scenario]:
    """What happened to ``site``'s patients alone (by the ground truth, not by the sites the
    services stamped: ``attribution_problems`` judges those), and the scenario of them."""
    mine = {p.patient_id for p in scenario.patients if p.site == site}
    commands = report.commands_by_key(observed)
    phones, emails = report.phone_owner(scenario), report.email_owner(scenario)

    def of_key(key: str | None) -> str | None:
        return commands[key].patient_id if key and key in commands else None

    def mail_owner(m: MailRecord) -> str | None:
        key = m.headers.get("X-Followup-Key", "")
        return report.mail_patient(m, emails) or of_key(task_key(key)) or of_key(key)

    cases = None
    if observed.cases is not None:
        cases = [c for c in observed.cases if c.get("patient_id") in mine]
    case_ids = {str(c.get("case_id")) for c in cases or []}
    part = Observed(
        appointments=[a for a in observed.appointments if a.patient_id in mine],
        triggers=[t for t in observed.triggers if t.patient_id in mine],
        notifications=[n for n in observed.notifications if n.patient_id in mine],
        outcomes=[o for o in observed.outcomes if o.patient_id in mine],
        dead_letters=observed.dead_letters,
        sms=[m for m in observed.sms if (of_key(m.key) or phones.get(e164(m.to))) in mine],
        replies=[r for r in observed.replies if phones.get(e164(r.from_)) in mine],
        mail=[m for m in observed.mail if mail_owner(m) in mine],
        call_tasks=[t for t in observed.call_tasks if t.task.get("patient_id") in mine],
        call_tasks_refused=observed.call_tasks_refused,
        topic_call_tasks=[t for t in observed.topic_call_tasks if t.patient_id in mine],
        sinks=BY_SITE[site].sinks,
        metrics=observed.metrics,
        cases=cases,
        case_details={k: v for k, v in observed.case_details.items() if k in case_ids},
    )
    return part, replace(scenario, patients=[p for p in scenario.patients if p.site == site])


def site_policy(policy: CadencePolicy, sites_path: Path) -> CadencePolicy:
    """The policy with each site's rules resolved as the scheduler resolves them."""
    policy.adopt_sites(Sites.load(sites_path))  # no Secrets needed for the rules
    return policy


def per_site_findings(
    observed: Observed,
    scenario: Scenario,
    policy: CadencePolicy,
    tolerance: timedelta,
    *,
    with_workflow: bool,
) -> dict[str, list[Finding]]:
    """Every check of the demo (``report.check``, and issue 18's) per site: on the site's
    patients alone, with the rules the scheduler resolved for the site."""
    out: dict[str, list[Finding]] = {}
    for site in SITES:
        part, people = split(observed, scenario, site)
        rules = policy.for_site(site)
        found = report.check(part, people, rules, tolerance)
        if with_workflow:
            found += workflow.check(part, people, rules)
        out[site] = found
    return out


def combine(per_site: dict[str, list[Finding]]) -> list[Finding]:
    """One finding per check: ok when it holds at every site; the failing sites first."""
    names: list[str] = []
    for findings in per_site.values():
        names += [f.check for f in findings if f.check not in names]
    combined = []
    for name in names:
        at = {site: next((f for f in fs if f.check == name), None) for site, fs in per_site.items()}
        missing = [site for site, f in at.items() if f is None]
        failing = [(site, f) for site, f in at.items() if f is not None and not f.ok]
        passing = [site for site, f in at.items() if f is not None and f.ok]
        parts = [f"{site} FAIL: {f.detail}" for site, f in failing]
        parts += [f"{site}: no such check" for site in missing]
        if passing:
            first = next(f for s, f in at.items() if s == passing[0] and f is not None)
            parts.append(f"ok at {', '.join(passing)} ({passing[0]}: {first.detail})")
        combined.append(Finding(name, not failing and not missing, "; ".join(parts)))
    return combined


# --- the checks of the chain ----------------------------------------------------------------


def attribution_problems(
    observed: Observed, scenario: Scenario
) -> tuple[dict[str, int], list[str]]:
    """Every appointment, trigger, command, call task and case names its patient's site."""
    truth = sites_of(scenario)
    seen: Counter[str] = Counter()
    problems: list[str] = []

    def judge(what: str, pid: str | None, site: str | None, ident: str) -> None:
        if pid not in truth:
            return
        seen[what] += 1
        if site != truth[pid]:
            problems.append(f"{what} {ident}: site {site or 'none'}, not {truth[pid]}")

    for a in unique_by_id(observed.appointments):
        judge("appointments", a.patient_id, a.site, a.appointment_id)
    for t in unique_by_id(observed.triggers):
        judge("triggers", t.patient_id, t.site, t.event_id)
    for n in unique_by_id(observed.notifications):
        judge("commands", n.patient_id, n.site, n.idempotency_key)
    for task in observed.call_tasks:
        inner = task.task
        pid = inner.get("patient_id")
        judge(
            "call tasks",
            pid if isinstance(pid, str) else None,
            inner.get("site"),
            str(inner.get("task_id")),
        )
    for c in observed.cases or []:
        pid = c.get("patient_id")
        judge("cases", pid if isinstance(pid, str) else None, c.get("site"), str(c.get("case_id")))
    return dict(seen), problems


@dataclass(frozen=True)
class Desks:
    """What each desk's tool received, by the sink it came through."""

    webhooks: dict[str, list[ReceivedTask]]  # site -> its webhook receiver's captures
    topic: list[CallTaskEvent]  # the calltasks topic (the deployment's kafka sink)
    mail: list[MailRecord]  # every mail the mailbox took (desks' and patients')
    front_desk: str  # the deployment's own desk address (escalations)


def sink_problems(
    observed: Observed, scenario: Scenario, desks: Desks
) -> tuple[dict[str, int], list[str]]:
    """Each site's call tasks reached its own sinks, all of them, and nobody else's; each
    names the site's clinic (in the task's language) and phone, no other clinic's. The
    doctors' escalations go to the deployment's sinks (FOLLOWUP_CALL_TASK_SINKS)."""
    truth = sites_of(scenario)
    commands = report.commands_by_key(observed)
    problems: list[str] = []
    at: dict[tuple[str, str], set[str]] = {}  # (task id, sink) -> where it arrived
    counts: Counter[str] = Counter()

    def arrived(
        task_id: str, site_of_task: str | None, where: str, kind: str, desk_site: str | None
    ) -> None:
        owner = truth.get(commands[task_id].patient_id) if task_id in commands else site_of_task
        counts[f"{where}"] += 1
        if desk_site is not None and owner != desk_site:
            problems.append(f"task {task_id} of {owner} at {where}")
        at.setdefault((task_id, kind), set()).add(desk_site or where)

    for site, tasks in desks.webhooks.items():
        for t in tasks:
            if t.purpose == "escalation":
                continue
            arrived(
                str(t.task.get("task_id")), t.task.get("site"), f"{site} webhook", "webhook", site
            )
    kafka_sites = [c.site for c in CHAIN if "kafka" in c.sinks]
    for e in desks.topic:
        if e.purpose == "escalation":
            continue
        desk = kafka_sites[0] if len(kafka_sites) == 1 else None
        arrived(e.task_id, e.site, "calltasks topic", "kafka", desk)
    by_address = {c.desk_email: c.site for c in CHAIN if c.desk_email}
    for m in desks.mail:
        key = task_key(m.headers.get("X-Followup-Key", ""))
        if key is None:
            continue
        for rcpt in m.rcpt_to:
            if rcpt.lower() in by_address:
                arrived(
                    key,
                    None,
                    f"{by_address[rcpt.lower()]} mailbox",
                    "email",
                    by_address[rcpt.lower()],
                )
            elif (
                rcpt.lower() == desks.front_desk.lower()
                and key in commands
                and commands[key].purpose != "escalation"
            ):
                problems.append(f"task {key} at the deployment's front desk")
    # Every created follow-up task at every sink of its site.
    created = {
        o.idempotency_key
        for o in unique_by_id(observed.outcomes)
        if o.outcome == "task_created" and o.idempotency_key
    }
    for key in sorted(created):
        n = commands.get(key)
        if n is None or n.purpose != "follow_up" or n.patient_id not in truth:
            continue
        site = truth[n.patient_id]
        for kind in BY_SITE[site].sinks:
            reached = at.get((key, kind), set())
            if not reached or (kind != "kafka" and site not in reached):
                problems.append(f"task {key} of {site} not at its {kind}")
    # The words the desk reads to the patient: its own clinic, no other.
    for t in [*(x for ts in desks.webhooks.values() for x in ts)]:
        if t.action == "create" and t.purpose == "follow_up":
            problems += script_problems(t.task, truth)
    for e in desks.topic:
        if e.action == "create" and e.purpose == "follow_up":
            problems += script_problems(e.model_dump(mode="json"), truth)
    return dict(counts), problems


def script_problems(task: dict[str, Any], truth: dict[str, str]) -> list[str]:
    pid = task.get("patient_id")
    if not isinstance(pid, str) or pid not in truth:
        return []
    clinic = BY_SITE[truth[pid]]
    script = str(task.get("script") or "")
    language = str(task.get("language") or clinic.default_language)
    name = clinic.names.get(language.split("-")[0], clinic.names[clinic.default_language])
    out = []
    if name not in script or clinic.phone not in script:
        out.append(f"task {task.get('task_id')}: script without {clinic.site}'s name or phone")
    others = [c.site for c in CHAIN if c is not clinic and _names_clinic(script, c)]
    if others:
        out.append(f"task {task.get('task_id')} of {clinic.site} names {', '.join(others)}")
    return out


def _names_clinic(text: str, clinic: Clinic) -> bool:
    return clinic.phone in text or any(name in text for name in clinic.names.values())


def voice_problems(observed: Observed, scenario: Scenario) -> tuple[int, list[str]]:
    """Every text and mail a patient got speaks as the patient's clinic: another clinic's
    name or phone is never in it, a follow-up names the patient's own clinic, and a text
    comes from the clinic's own SMS sender where it has one (never another clinic's)."""
    by_id = {p.patient_id: p for p in scenario.patients}
    commands = report.commands_by_key(observed)
    phones, emails = report.phone_owner(scenario), report.email_owner(scenario)
    checked, problems = 0, []
    items: list[tuple[str, str | None, str | None, str]] = [
        ("sms", s.key, phones.get(e164(s.to)), s.body) for s in observed.sms
    ]
    for m in observed.mail:
        if (pid := report.mail_patient(m, emails)) is not None:
            key = m.headers.get("X-Followup-Key")
            items.append(("email", key, pid, m.subject + "\n" + m.text))
    senders = {s.key: s.from_ for s in observed.sms if s.key}
    own_senders = {c.sms_from: c.site for c in CHAIN if c.sms_from}
    for channel, key, owner, text in items:
        command = commands.get(key or "")
        pid = command.patient_id if command is not None else owner
        patient = by_id.get(pid or "")
        if patient is None or patient.site is None:
            continue
        checked += 1
        clinic = BY_SITE[patient.site]
        sender = senders.get(key or "") if channel == "sms" else None
        if sender is not None and own_senders.get(sender, clinic.site) != clinic.site:
            problems.append(
                f"sms {key} to {patient.patient_id} from {own_senders[sender]}'s number"
            )
        if sender is not None and clinic.sms_from and sender != clinic.sms_from:
            problems.append(f"sms {key} to {patient.patient_id} not from {clinic.site}'s number")
        others = [c.site for c in CHAIN if c is not clinic and _names_clinic(text, c)]
        if others:
            problems.append(
                f"{channel} to {patient.patient_id} ({clinic.site}) names {', '.join(others)}"
            )
        if (
            command is not None
            and command.purpose == "follow_up"
            and not _names_clinic(text, clinic)
        ):
            problems.append(f"{channel} {key} to {patient.patient_id} names not {clinic.site}")
    return checked, problems


def run_days(scenario: Scenario) -> list[date]:
    first = scenario.start.date()
    return [first + timedelta(days=n) for n in range(scenario.days)]


def calendar_problems(
    observed: Observed, scenario: Scenario, policy: CadencePolicy
) -> tuple[dict[str, list[str]], list[str]]:
    """Each site's own calendar and zone: the days it is closed in the run (its country's
    holidays, its own closures; not another country's), no call task of its desk planned on
    one, and every command of its patients planned in its zone."""
    truth = sites_of(scenario)
    closed: dict[str, list[str]] = {}
    problems: list[str] = []
    for clinic in CHAIN:
        rules = policy.for_site(clinic.site).rules_for("", "no_show")
        days = [d for d in run_days(scenario) if d.weekday() < 5 and rules.closed_on(d)]
        closed[clinic.site] = [d.isoformat() for d in days]
    shared = set.intersection(*(set(days) for days in closed.values()))
    if all(days == list(shared) for days in closed.values()):
        problems.append("every site has the same closed days: one calendar for the chain")
    for n in unique_by_id(observed.notifications):
        site = truth.get(n.patient_id)
        if site is None:
            continue
        clinic = BY_SITE[site]
        if n.timezone != clinic.zone:
            problems.append(f"{n.idempotency_key}: planned in {n.timezone}, not {clinic.zone}")
        if n.channel != "call_task" or n.purpose == "withdrawal":
            continue
        rules = policy.for_site(site).rules_for(n.department, n.reason)
        if n.purpose == "escalation" and n.template == rules.escalation.concern_template:
            continue  # a clinical concern goes day or night
        day = n.window_start.astimezone(ZoneInfo(clinic.zone)).date()
        if day.isoformat() in closed[site] or rules.closed_on(day):
            problems.append(f"{n.idempotency_key} of {site}: starts on closed {day.isoformat()}")
    return closed, problems


def open_while_others_close(
    observed: Observed, scenario: Scenario, closed: dict[str, list[str]]
) -> dict[str, int]:
    """Per site, its desk's call tasks planned on a day another site of the chain is closed
    and it is open: work one calendar for the whole chain would have moved."""
    truth = sites_of(scenario)
    out: Counter[str] = Counter()
    for n in unique_by_id(observed.notifications):
        site = truth.get(n.patient_id)
        if site is None or n.channel != "call_task" or n.purpose == "withdrawal":
            continue
        day = n.window_start.astimezone(ZoneInfo(BY_SITE[site].zone)).date().isoformat()
        if day not in closed[site] and any(day in d for s, d in closed.items() if s != site):
            out[site] += 1
    return dict(out)


# --- a site's token against the APIs ----------------------------------------------------------


@dataclass(frozen=True)
class TokenProbe:
    """What one site's token was answered: the worklist, another site's case and call task,
    and one of its own cases."""

    site: str
    listed: list[str]  # the sites of the cases GET /cases listed for it
    own_case: int | None  # GET /cases/{one of its own}
    other_case: int | None  # GET /cases/{another site's}
    other_task: int | None  # POST /calltasks/{another site's task}/result


def token_problems(probes: list[TokenProbe], observed: Observed, scenario: Scenario) -> list[str]:
    truth = sites_of(scenario)
    expected = Counter(truth.get(str(c.get("patient_id"))) for c in observed.cases or [])
    problems = []
    if not probes:
        problems.append("no site's token was tried")
    for p in probes:
        others = sorted({s for s in p.listed if s != p.site})
        if others:
            problems.append(f"{p.site}'s token listed cases of {', '.join(others)}")
        if len(p.listed) < expected[p.site]:
            problems.append(
                f"{p.site}'s token listed {len(p.listed)} of its {expected[p.site]} cases"
            )
        if p.own_case != 200:
            problems.append(f"{p.site}'s token: its own case answered {p.own_case}")
        if p.other_case != 404:
            problems.append(f"{p.site}'s token: another site's case answered {p.other_case}")
        if p.other_task != 404:
            problems.append(f"{p.site}'s token: another site's call task answered {p.other_task}")
    return problems


# --- the run's part ---------------------------------------------------------------------------


class ChainRun:
    """The chain's part of one run: the second clinic's ticketing tool (its own webhook
    receiver and secret), Sofia's desk reading the calltasks topic, the sites file and the
    Secrets, the desks' captures for the report, and the tokens' probe."""

    def __init__(
        self, clock: Clock, run_dir: Path, vilnius: CallTaskReceiver, vilnius_secret: str
    ) -> None:
        self.clock = clock
        self.run_dir = run_dir
        self.receivers: dict[str, CallTaskReceiver] = {"vilnius": vilnius}
        self.secrets: dict[str, str] = {"vilnius": vilnius_secret}
        for clinic in CHAIN:
            if "webhook" in clinic.sinks and clinic.site not in self.receivers:
                secret = secrets.token_urlsafe(24)
                self.secrets[clinic.site] = secret
                self.receivers[clinic.site] = CallTaskReceiver(
                    secret=secret,
                    clock=clock,
                    capture_file=run_dir / f"call-tasks-{clinic.site}.jsonl",
                )
        self.tokens = {c.site: secrets.token_urlsafe(24) for c in CHAIN}
        self.topic_desk: list[ReceivedTask] = []  # what the topic's desks took
        self.sites_path: Path | None = None
        self._desk: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for site, receiver in self.receivers.items():
            if site != "vilnius":  # the run's own stand-in, started with the others
                await receiver.start()

    def env(self) -> dict[str, str]:
        secrets_env = {BY_SITE[s].secret_env: v for s, v in self.secrets.items()}
        tokens_env = {BY_SITE[s].token_env: v for s, v in self.tokens.items()}
        environ = {**secrets_env, **tokens_env}
        webhooks = {s: r.url for s, r in self.receivers.items()}
        self.sites_path = sites_file(self.run_dir, webhooks, environ)
        return {"FOLLOWUP_SITES_PATH": str(self.sites_path), **environ}

    def where(self) -> dict[str, str]:
        """The chain's files among the report's "where to look"."""
        out = {"sites file": str(self.sites_path)}
        for site, receiver in self.receivers.items():
            if site != "vilnius" and receiver.capture_file is not None:
                out[f"call tasks at {site}'s webhook"] = str(receiver.capture_file)
        return out

    def attach(
        self, on_task: Callable[[ReceivedTask], Awaitable[None]], kafka: str, topic: str
    ) -> None:
        """The desks answer their tasks as the clinic's front desk (the simulation)."""
        for site, receiver in self.receivers.items():
            if site != "vilnius":  # the rig wires the run's own stand-in
                receiver.on_task = on_task
        desks = {c.site for c in CHAIN if "kafka" in c.sinks and "webhook" not in c.sinks}
        self._desk = asyncio.create_task(self._topic_desk(kafka, topic, desks, on_task))

    async def _topic_desk(
        self,
        kafka: str,
        topic: str,
        sites: set[str],
        on_task: Callable[[ReceivedTask], Awaitable[None]],
    ) -> None:
        """A desk tool reading the calltasks topic: its sites' tasks, each event once."""
        consumer = make_consumer(
            kafka, topic, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        seen: set[str] = set()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        try:
                            event = decode_record(CallTaskEvent, record)
                        except Exception:  # not a task: the tool skips it
                            continue
                        if event.site not in sites or event.purpose == "escalation":
                            continue
                        if event.event_id in seen:
                            continue
                        seen.add(event.event_id)
                        task = ReceivedTask(
                            {"task": event.model_dump(mode="json")}, self.clock.now(), "kafka"
                        )
                        self.topic_desk.append(task)
                        await on_task(task)
        finally:
            await consumer.stop()

    def observed(self, observed: Observed) -> Observed:
        """The run's observations with every desk's tasks among the call tasks."""
        extra = [t for s, r in self.receivers.items() if s != "vilnius" for t in r.captured]
        return replace(observed, call_tasks=[*observed.call_tasks, *extra, *self.topic_desk])

    def desks(self, observed: Observed, front_desk: str) -> Desks:
        """Each webhook's tasks, straight from its receiver (not through ``observed``)."""
        end_filtered = {id(t) for t in observed.call_tasks}
        return Desks(
            webhooks={
                s: [t for t in r.captured if id(t) in end_filtered]
                for s, r in self.receivers.items()
            },
            topic=observed.topic_call_tasks,
            mail=observed.mail,
            front_desk=front_desk,
        )

    async def probe(
        self,
        session: aiohttp.ClientSession,
        scheduler: str,
        notifier: str,
        observed: Observed,
        scenario: Scenario,
    ) -> list[TokenProbe]:
        """Each site's token against the case API and the call-task results."""
        truth = sites_of(scenario)
        cases_by_site: dict[str, list[str]] = {}
        for c in observed.cases or []:
            site = truth.get(str(c.get("patient_id")))
            if site is not None:
                cases_by_site.setdefault(site, []).append(str(c.get("case_id")))
        tasks_by_site: dict[str, list[str]] = {}
        for n in unique_by_id(observed.notifications):
            if n.channel == "call_task" and n.purpose == "follow_up" and n.patient_id in truth:
                tasks_by_site.setdefault(truth[n.patient_id], []).append(n.idempotency_key)
        probes = []
        for i, clinic in enumerate(CHAIN):
            other = CHAIN[(i + 1) % len(CHAIN)].site
            headers = {"Authorization": f"Bearer {self.tokens[clinic.site]}"}
            listed = await _listed_sites(session, scheduler, headers)
            own = next(iter(cases_by_site.get(clinic.site, [])), None)
            theirs = next(iter(cases_by_site.get(other, [])), None)
            task = next(iter(tasks_by_site.get(other, [])), None)
            probes.append(
                TokenProbe(
                    clinic.site,
                    listed,
                    await _status(
                        session, "GET", f"{scheduler}/cases/{quote(own, safe='')}", headers
                    )
                    if own
                    else None,
                    await _status(
                        session, "GET", f"{scheduler}/cases/{quote(theirs, safe='')}", headers
                    )
                    if theirs
                    else None,
                    await _status(
                        session,
                        "POST",
                        f"{notifier}/calltasks/{quote(task, safe=':')}/result",
                        headers,
                        {
                            "report_id": f"probe:{clinic.site}:{task}",
                            "idempotency_key": task,
                            "outcome": "no_answer",
                            "reported_at": self.clock.now().isoformat(),
                            "reported_by": "front-desk",
                        },
                    )
                    if task
                    else None,
                )
            )
        return probes

    async def stop(self) -> None:
        if self._desk is not None:
            self._desk.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._desk
        for site, receiver in self.receivers.items():
            if site != "vilnius":
                await receiver.stop()


async def _listed_sites(
    session: aiohttp.ClientSession, scheduler: str, headers: dict[str, str]
) -> list[str]:
    sites: list[str] = []
    after: str | None = None
    for _page in range(100):
        params = {"limit": "500"} | ({"after": after} if after else {})
        async with session.get(f"{scheduler}/cases", params=params, headers=headers) as resp:
            if resp.status != 200:
                return sites
            body = json.loads(await resp.text())
        page = body.get("cases") or []
        sites += [str(c.get("site")) for c in page if isinstance(c, dict)]
        after = body.get("next")
        if not after or not page:
            break
    return sites


async def _status(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any] | None = None,
) -> int | None:
    try:
        async with session.request(method, url, headers=headers, json=body) as resp:
            return resp.status
    except aiohttp.ClientError:
        return None


# --- the report -------------------------------------------------------------------------------


def check(
    observed: Observed,
    scenario: Scenario,
    policy: CadencePolicy,
    desks: Desks,
    probes: list[TokenProbe],
) -> list[Finding]:
    """The chain's own checks (``policy`` with the sites adopted)."""
    seen, wrong = attribution_problems(observed, scenario)
    counts = ", ".join(f"{k} {v}" for k, v in seen.items())
    findings = [
        Finding(
            "every_event_names_its_site",
            bool(seen) and not wrong,
            f"{counts}; " + ("; ".join(wrong) or "each names its patient's clinic"),
        )
    ]
    at, astray = sink_problems(observed, scenario, desks)
    findings.append(
        Finding(
            "call_tasks_at_their_sites_sinks_only",
            bool(at) and not astray,
            ", ".join(f"{k} {v}" for k, v in sorted(at.items()))
            + "; "
            + ("; ".join(astray) or "each at all of its site's sinks, with its clinic's script"),
        )
    )
    checked, voice = voice_problems(observed, scenario)
    findings.append(
        Finding(
            "messages_speak_as_their_clinic",
            bool(checked) and not voice,
            f"{checked} texts and mails; "
            + ("; ".join(voice) or "each names its own clinic, none another"),
        )
    )
    closed, off = calendar_problems(observed, scenario, policy)
    days = "; ".join(f"{s} closed {', '.join(d) or 'no weekday'}" for s, d in closed.items())
    meanwhile = open_while_others_close(observed, scenario, closed)
    if meanwhile:
        days += "; call tasks on another site's closed day: " + ", ".join(
            f"{s} {n}" for s, n in sorted(meanwhile.items())
        )
    findings.append(
        Finding(
            "each_site_keeps_its_days_and_zone",
            not off,
            f"{days}; "
            + ("; ".join(off) or "no call task on a site's closed day, each in its zone"),
        )
    )
    refused = token_problems(probes, observed, scenario)
    findings.append(
        Finding(
            "site_token_sees_only_its_site",
            not refused,
            "; ".join(refused)
            or ", ".join(f"{p.site} {len(p.listed)} cases listed" for p in probes)
            + "; another site's case and call task: 404",
        )
    )
    return findings


def counts(
    observed: Observed,
    scenario: Scenario,
    per_site: dict[str, list[Finding]],
    policy: CadencePolicy,
) -> dict[str, Any]:
    """The per-site table: who each clinic treats, what followup did there, its checks."""
    out: dict[str, Any] = {}
    closed, _ = calendar_problems(observed, scenario, policy)
    for clinic in CHAIN:
        part, people = split(observed, scenario, clinic.site)
        cases = part.cases or []
        findings = per_site.get(clinic.site, [])
        out[clinic.site] = {
            "zone": clinic.zone,
            "language": clinic.default_language,
            "sinks": list(clinic.sinks),
            "patients": len(people.patients),
            "slipping": sum(1 for p in people.patients if p.slips),
            "paths": dict(Counter(p.path for p in people.patients)),
            "cases": len(cases),
            "recovered": sum(1 for c in cases if case_state(c) == "recovered"),
            "sms": len(part.sms),
            "email": len(report.patient_mail(part, people)),
            "call_tasks": sum(
                1 for t in part.call_tasks if t.action == "create" and t.purpose == "follow_up"
            ),
            "closed_days": closed.get(clinic.site, []),
            "checks_ok": sum(1 for f in findings if f.ok),
            "checks": len(findings),
            "failing": [f.check for f in findings if not f.ok],
        }
    return out


def summary(values: dict[str, Any]) -> list[tuple[str, str]]:
    """The report table's rows: one per clinic."""
    rows = []
    for site, v in values.items():
        paths = "/".join(f"{k} {n}" for k, n in sorted(v["paths"].items()))
        rows.append(
            (
                f"site {site}",
                f"{v['zone']} {v['language']}; {v['patients']} patients ({paths}), "
                f"{v['cases']} cases, {v['recovered']} recovered; sms {v['sms']}, "
                f"mail {v['email']}, call tasks {v['call_tasks']} at {'+'.join(v['sinks'])}; "
                f"closed {', '.join(d[5:] for d in v['closed_days']) or '-'}; "
                f"checks {v['checks_ok']}/{v['checks']}"
                + (f" FAIL {', '.join(v['failing'])}" if v["failing"] else ""),
            )
        )
    return rows


async def report_part(
    chain: ChainRun,
    session: aiohttp.ClientSession,
    urls: tuple[str, str],
    observed: Observed,
    scenario: Scenario,
    policy: CadencePolicy,
    tolerance: timedelta,
    *,
    with_workflow: bool,
    front_desk: str,
) -> tuple[list[Finding], dict[str, Any]]:
    """The run's findings (every check per site, then the chain's own) and the per-site
    table; ``urls``: the scheduler's and the notifier's."""
    assert chain.sites_path is not None
    policy = site_policy(policy, chain.sites_path)
    per_site = per_site_findings(observed, scenario, policy, tolerance, with_workflow=with_workflow)
    probes = await chain.probe(session, urls[0], urls[1], observed, scenario)
    findings = combine(per_site)
    findings += check(observed, scenario, policy, chain.desks(observed, front_desk), probes)
    table = counts(observed, scenario, per_site, policy)
    details = {
        site: [{"check": f.check, "ok": f.ok, "detail": f.detail} for f in found]
        for site, found in per_site.items()
    }
    return findings, {"per_site": table, "checks": details}
