"""Issue 21 in the demo: patients who prefer a chat messenger, feedback after a rebooked
visit, the stages explained (education), and the breach protocol's audit query.

- **Population** (``population``): a few patients on the JSON path (whose contracts carry
  it: ``ContactEvent.consent`` and ``messengers``, ``PatientStatusEvent.preferred_channel``)
  prefer WhatsApp, Telegram or Viber and agreed to it; every plan explains its treatment
  stage in the four languages (``TreatmentStage.education``, on FHIR as the CarePlan
  activity detail's ``patient-education`` extension), and each department explains itself
  in configuration (``FOLLOWUP_EDUCATION``) for what no plan explains.
- **Deployment** (``deployment_env``, ``demo_policy``): the notifier gets the three
  stand-ins' settings; the cadence policy names the messengers in its fallback, so a
  patient's preferred messenger opens their cadence (``services.scheduler.cadence``); the
  run's audit log is its own schema.
- **Counts and checks** from what happened: the stand-ins' captures (``ChatRecord``), the
  topics read back, the case API and the audit query's answer, never from the scenario's
  intentions. The checks judge by the services' own stamps where time matters.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from demo.report import Finding, Observed, case_state, patient_mail, unique_by_id
from demo.scenario import (
    PATIENT_ZONE,
    Behaviour,
    Education,
    Messenger,
    Patient,
    Scenario,
    e164,
)
from demo.simulator.messengers import WHATSAPP_TEMPLATES, ChatRecord, address_of
from schemas.base import MESSENGERS
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy

REPO = Path(__file__).resolve().parent.parent

# --- the population -----------------------------------------------------------------------

# Who prefers which messenger: the first suitable patient of each behaviour. Those who
# recover book by phone when the first call task is out (a rebooked visit, then the
# feedback question on their messenger, inside the run); the one who opts out says STOP
# on Telegram.
CHAT_PATIENTS: tuple[tuple[Behaviour, Messenger], ...] = (
    ("recovers", "whatsapp"),
    ("recovers", "viber"),
    ("opts_out", "telegram"),
    ("recovers", "telegram"),
)
EDUCATION_URL = "https://clinic.example/care/treatment"
# The treatment stage explained (the plan's own), one entry per language.
STAGE_EDUCATION: tuple[Education, ...] = (
    Education(
        "lt",
        "Kiekvienas gydymo seansas tęsia ankstesnį; ilga pertrauka gali sunaikinti pažangą"
        " ir prailginti sveikimą.",
        EDUCATION_URL,
    ),
    Education(
        "en",
        "Each treatment session builds on the last; a long gap can undo the progress and"
        " prolong recovery.",
        EDUCATION_URL,
    ),
    Education(
        "ru",
        "Каждый сеанс лечения продолжает предыдущий; долгий перерыв может свести успехи на"
        " нет и затянуть выздоровление.",
        EDUCATION_URL,
    ),
    Education(
        "bg",
        "Всеки сеанс на лечението продължава предишния; дълга пауза може да заличи"
        " напредъка и да удължи възстановяването.",
        EDUCATION_URL,
    ),
)
# Each department's own words (FOLLOWUP_EDUCATION), for a visit no plan explains.
DEPARTMENT_EDUCATION: tuple[Education, ...] = (
    Education(
        "lt",
        "Reguliarūs vizitai leidžia gydytojui laiku pastebėti pokyčius; praleidus vizitą"
        " gydymas gali užtrukti.",
        "https://clinic.example/care/visits",
    ),
    Education(
        "en",
        "Regular visits let the doctor notice changes in time; a missed visit can make the"
        " treatment take longer.",
        "https://clinic.example/care/visits",
    ),
    Education(
        "ru",
        "Регулярные визиты позволяют врачу вовремя заметить изменения; пропущенный визит"
        " может затянуть лечение.",
        "https://clinic.example/care/visits",
    ),
    Education(
        "bg",
        "Редовните посещения позволяват на лекаря навреме да забележи промените; пропуснато"
        " посещение може да удължи лечението.",
        "https://clinic.example/care/visits",
    ),
)


def _suitable(p: Patient, behaviour: Behaviour) -> bool:
    return (
        p.behaviour == behaviour
        and p.chat is None
        and p.phone_line == "mobile"
        and not p.shares_phone
        and not p.books_first
        and not p.reports_concern
        and p.birth_date is None
        and p.first_appointment is not None
    )


def population(scenario: Scenario) -> None:
    """Chat-preferring patients (moved to the JSON path when needed, which carries the
    patient's zone as well) and the stages explained in every plan."""
    index = {p.patient_id: i for i, p in enumerate(scenario.patients)}
    for behaviour, messenger in CHAT_PATIENTS:
        found = [p for p in scenario.patients if _suitable(p, behaviour)]
        # The JSON path first; then languages not yet among the chat patients.
        spoken = {p.language for p in scenario.patients if p.chat}
        found.sort(key=lambda p: (p.path != "json", p.language in spoken))
        if not found:
            continue
        p = found[0]
        chat_id = None
        if messenger == "telegram":
            chat_id = str(5_100_000_000 + index[p.patient_id] * 7919)
        elif messenger == "viber":
            chat_id = f"vb{index[p.patient_id]:04d}Kq7wQ=="
        scenario.patients[index[p.patient_id]] = replace(
            p,
            path="json",
            timezone=PATIENT_ZONE[p.language],
            chat=messenger,
            chat_id=chat_id,
            answers_on=1 if p.behaviour == "recovers" else p.answers_on,
            # Books by phone while the first call task is out: the booking closes the case
            # as recovered, so the rebooked visit's feedback question is asked (on the
            # messenger). The scheduler asks none after a case the front desk's report
            # closed (services/scheduler/ledger.py, _await_feedback on open cases only).
            books_first=p.behaviour == "recovers",
        )
    for i, p in enumerate(scenario.patients):
        stages = tuple(
            replace(s, education=STAGE_EDUCATION) if s.sequence == 2 else s for s in p.stages
        )
        scenario.patients[i] = replace(p, stages=stages)


def chat_patients(scenario: Scenario) -> list[Patient]:
    return [p for p in scenario.patients if p.chat is not None]


# --- the deployment -----------------------------------------------------------------------


def demo_policy(directory: Path, base: Path | None = None) -> Path:
    """``base`` (the shipped policy when None) with the messengers at the end of the
    fallback: a patient's preferred messenger opens the cadence (the policy allows it),
    and nobody else is written to on one. Read back with the scheduler's own parser."""
    base = base or DEFAULT_POLICY_PATH
    data: dict[str, Any] = yaml.safe_load(base.read_text(encoding="utf-8"))
    defaults = data.setdefault("defaults", {})
    fallback = list(defaults.get("fallback") or ["call_task", "sms", "email"])
    defaults["fallback"] = fallback + [m for m in MESSENGERS if m not in fallback]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "policy-chat.yaml"
    header = f"# {base.name} with the messengers in the fallback (demo.chat.demo_policy).\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    CadencePolicy.load(path)
    return path


@dataclass(frozen=True)
class ChatEndpoints:
    """The messengers' stand-ins as the notifier reaches them."""

    whatsapp_url: str
    whatsapp_phone_number_id: str
    whatsapp_token: str
    whatsapp_app_secret: str
    whatsapp_verify_token: str
    telegram_url: str
    telegram_bot_token: str
    telegram_secret: str
    viber_url: str
    viber_token: str


def _education_json(entries: tuple[Education, ...]) -> list[dict[str, str]]:
    return [
        {"language": e.language, "text": e.text} | ({"url": e.url} if e.url else {})
        for e in entries
    ]


def deployment_env(
    chat: ChatEndpoints, audit_schema: str, departments: tuple[str, ...], sender: str
) -> dict[str, str]:
    """The notifier's messenger settings, each department's education, the run's own
    audit schema (dropped with the run's other schemas)."""
    return {
        "FOLLOWUP_WHATSAPP_URL": chat.whatsapp_url,
        "FOLLOWUP_WHATSAPP_PHONE_NUMBER_ID": chat.whatsapp_phone_number_id,
        "FOLLOWUP_WHATSAPP_ACCESS_TOKEN": chat.whatsapp_token,
        "FOLLOWUP_WHATSAPP_APP_SECRET": chat.whatsapp_app_secret,
        "FOLLOWUP_WHATSAPP_VERIFY_TOKEN": chat.whatsapp_verify_token,
        "FOLLOWUP_WHATSAPP_TEMPLATES": json.dumps({"feedback": WHATSAPP_TEMPLATES[1]}),
        "FOLLOWUP_WHATSAPP_TEMPLATE_DEFAULT": WHATSAPP_TEMPLATES[0],
        "FOLLOWUP_TELEGRAM_URL": chat.telegram_url,
        "FOLLOWUP_TELEGRAM_BOT_TOKEN": chat.telegram_bot_token,
        "FOLLOWUP_TELEGRAM_WEBHOOK_SECRET": chat.telegram_secret,
        "FOLLOWUP_VIBER_URL": chat.viber_url,
        "FOLLOWUP_VIBER_AUTH_TOKEN": chat.viber_token,
        "FOLLOWUP_VIBER_SENDER_NAME": sender[:28],
        "FOLLOWUP_EDUCATION": json.dumps(
            {d: _education_json(DEPARTMENT_EDUCATION) for d in departments}, ensure_ascii=False
        ),
        "FOLLOWUP_AUDIT_SCHEMA": audit_schema,
    }


# --- the audit query, as an operator asks it ------------------------------------------------


@dataclass(frozen=True)
class AuditAnswer:
    exit_code: int
    answer: dict[str, Any] | None  # ``followup_admin audit --json``'s output
    error: str = ""


async def ask_audit(database_url: str, schema: str, token: str, since: datetime) -> AuditAnswer:
    """``python -m followup_admin audit --secret-stdin --since ... --json`` with the demo's
    API token on standard input (never on the command line), as the runbook says."""
    env = {
        **os.environ,
        "FOLLOWUP_DATABASE_URL": database_url,
        "FOLLOWUP_AUDIT_SCHEMA": schema,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "followup_admin",
        "audit",
        "--secret-stdin",
        "--kind",
        "api_token",
        "--since",
        since.isoformat(),
        "--json",
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(token.encode() + b"\n"), timeout=60)
    code = process.returncode if process.returncode is not None else -1
    try:
        answer = json.loads(out) if code == 0 else None
    except ValueError:
        answer = None
    return AuditAnswer(code, answer, err.decode(errors="replace")[-300:])


def save_audit(directory: Path, found: AuditAnswer) -> Path:
    """The answer as the operator got it (ids only), kept with the run."""
    path = directory / "audit.json"
    body = found.answer if found.answer is not None else {"exit_code": found.exit_code}
    path.write_text(json.dumps(body, indent=1) + "\n")
    return path


def audit_summary(found: AuditAnswer) -> dict[str, Any]:
    """What the report shows of the answer: reads, patients, fields, routes (ids only)."""
    answer = found.answer or {}
    reads = answer.get("reads") or []
    return {
        "exit_code": found.exit_code,
        "credential_id": answer.get("credential_id"),
        "since": answer.get("since"),
        "patients": answer.get("patients", 0),
        "reads": sum(int(r.get("reads", 0)) for r in reads),
        "fields": sorted({f for r in reads for f in r.get("fields", [])}),
        "routes": sorted({x for r in reads for x in r.get("routes", [])}),
    }


def personal_data(scenario: Scenario) -> list[str]:
    """Every name, phone number, email address and messenger id of the scenario."""
    values: set[str] = set()
    for p in scenario.patients:
        values |= {p.given_name, p.family_name, p.phone, e164(p.phone), p.email}
        values |= {e164(p.phone).lstrip("+")}
        if p.chat_id:
            values.add(p.chat_id)
    return sorted(v for v in values if len(v) >= 3)


def audit_problems(found: AuditAnswer, scenario: Scenario) -> list[str]:
    """Why the answer does not do: no answer, an empty one, personal data in it."""
    if found.exit_code != 0 or found.answer is None:
        return [f"the audit query failed (exit {found.exit_code}): {found.error.strip()[:200]}"]
    problems = []
    if not found.answer.get("reads"):
        problems.append("no read recorded for the demo's API token")
    text = json.dumps(found.answer, ensure_ascii=False)
    leaked = [v for v in personal_data(scenario) if v in text]
    problems += [f"personal data in the answer ({len(leaked)} values)"] if leaked else []
    known = {p.patient_id for p in scenario.patients}
    strangers = [
        r.get("patient_id")
        for r in found.answer.get("reads", [])
        if r.get("patient_id") not in known
    ]
    if strangers:
        problems.append(f"{len(strangers)} patient ids not of this run")
    return problems


# --- what the report counts ---------------------------------------------------------------


def _cadence_out(records: list[ChatRecord]) -> list[ChatRecord]:
    """The bot's messages of the cadence (not its confirmations of what a patient wrote)."""
    return [r for r in records if r.direction == "out" and not r.answer]


def owners(scenario: Scenario) -> dict[tuple[str, str], Patient]:
    found = {}
    for p in chat_patients(scenario):
        address = address_of(p)
        if p.chat is not None and address is not None:
            found[(str(p.chat), address)] = p
    return found


def chat_counts(records: list[ChatRecord], scenario: Scenario) -> dict[str, Any]:
    by_channel: dict[str, dict[str, int]] = {}
    for channel in MESSENGERS:
        mine = [r for r in records if r.channel == channel]
        out = _cadence_out(mine)
        by_channel[channel] = {
            "patients": sum(1 for p in chat_patients(scenario) if p.chat == channel),
            "messages": len(out),
            "templates": sum(1 for r in out if r.kind == "template"),
            "confirmations": sum(1 for r in mine if r.direction == "out" and r.answer),
            "patient_wrote": sum(1 for r in mine if r.direction == "in"),
            "stops": sum(1 for r in mine if r.direction == "in" and r.kind == "stop"),
            "receipts": sum(1 for r in mine if r.direction == "receipt"),
        }
    return by_channel


def education_texts() -> dict[str, set[str]]:
    """language -> the education texts in it (the plans' and the departments')."""
    texts: dict[str, set[str]] = defaultdict(set)
    for e in (*STAGE_EDUCATION, *DEPARTMENT_EDUCATION):
        texts[e.language].add(e.text)
    return texts


def _messages(
    observed: Observed, scenario: Scenario, records: list[ChatRecord]
) -> list[tuple[str, Patient, str]]:
    """(channel, patient, text) of every email and messenger message to a patient."""
    by_email = {p.email.lower(): p for p in scenario.patients}
    out: list[tuple[str, Patient, str]] = []
    for m in patient_mail(observed, scenario):
        patient = next((by_email[r.lower()] for r in m.rcpt_to if r.lower() in by_email), None)
        if patient is not None:
            out.append(("email", patient, m.subject + "\n" + m.text))
    chat_owners = owners(scenario)
    for r in _cadence_out(records):
        patient = chat_owners.get((r.channel, r.address))
        if patient is not None:
            out.append((r.channel, patient, r.text))
    return out


def education_view(
    observed: Observed, scenario: Scenario, records: list[ChatRecord]
) -> tuple[dict[str, Any], list[str]]:
    """Messages carrying the stage explained (by channel and language), and the problems:
    another language's explanation, or a follow-up email to an adult without one."""
    texts = education_texts()
    carrying: Counter[str] = Counter()
    languages: Counter[str] = Counter()
    problems = []
    total = 0
    for channel, patient, text in _messages(observed, scenario, records):
        total += 1
        own = any(t in text for t in texts.get(patient.language, ()))
        foreign = [
            lang
            for lang, ts in texts.items()
            if lang != patient.language and any(t in text for t in ts)
        ]
        if own:
            carrying[channel] += 1
            languages[patient.language] += 1
        if foreign:
            problems.append(f"{patient.patient_id} {channel}: explanation in {','.join(foreign)}")
        # An email to an adult is never redacted: it explains the stage (the plan's or the
        # department's) in the patient's language.
        if channel == "email" and patient.birth_date is None and not own:
            problems.append(f"{patient.patient_id} email without the stage explained")
    view = {
        "messages": total,
        "carrying": sum(carrying.values()),
        "by_channel": dict(carrying),
        "by_language": dict(languages),
    }
    return view, problems


def feedback_view(observed: Observed) -> tuple[dict[str, Any], list[str]]:
    """Questions asked, answers, the mean rating (overall, per department), and what is
    wrong: a patient asked twice, a question not after an attended visit of a recovered
    case, an answer the scheduler never got."""
    questions = {
        n.idempotency_key: n
        for n in unique_by_id(observed.notifications)
        if n.purpose == "feedback"
    }
    answers = {
        o.idempotency_key: o
        for o in unique_by_id(observed.outcomes)
        if o.outcome == "feedback" and o.rating is not None and o.idempotency_key in questions
    }
    cases = {str(c.get("case_id")): c for c in observed.cases or []}
    attended: dict[str, datetime] = {}
    for a in observed.appointments:
        if a.status in ("arrived", "fulfilled"):
            at = a.status_at or a.occurred_at
            attended[a.appointment_id] = min(at, attended.get(a.appointment_id, at))
    problems = []
    per_patient = Counter(n.patient_id for n in questions.values())
    problems += [f"{pid} asked {k} times" for pid, k in sorted(per_patient.items()) if k > 1]
    for n in questions.values():
        case = cases.get(n.case_id, {})
        if case and case_state(case) != "recovered":
            problems.append(f"{n.case_id}: asked, but the case is {case_state(case)}")
        seen = attended.get(n.appointment_id or "")
        if seen is None or seen > n.occurred_at:
            problems.append(f"{n.case_id}: asked before its visit {n.appointment_id} was attended")
    ratings: dict[str, list[int]] = defaultdict(list)
    for key, o in answers.items():
        assert o.rating is not None
        ratings[questions[key].department].append(o.rating)
    every = [r for rs in ratings.values() for r in rs]

    def mean(values: list[int]) -> float | None:
        return round(sum(values) / len(values), 2) if values else None

    view = {
        "asked": len(questions),
        "asked_by_channel": dict(Counter(n.channel for n in questions.values())),
        "answered": len(answers),
        "with_comment": sum(1 for o in answers.values() if o.note),
        "mean_rating": mean(every),
        "by_department": {
            d: {
                "asked": sum(1 for n in questions.values() if n.department == d),
                "answered": len(rs),
                "mean_rating": mean(rs),
            }
            for d, rs in sorted(ratings.items())
        },
    }
    return view, problems


def counts(
    observed: Observed, scenario: Scenario, records: list[ChatRecord], audit: AuditAnswer | None
) -> dict[str, Any]:
    education, _ = education_view(observed, scenario, records)
    feedback, _ = feedback_view(observed)
    return {
        "messengers": chat_counts(records, scenario),
        "feedback": feedback,
        "education": education,
        "audit": audit_summary(audit) if audit is not None else None,
    }


# --- the checks ---------------------------------------------------------------------------


def not_reached_on_chat(
    observed: Observed, scenario: Scenario, records: list[ChatRecord]
) -> tuple[int, list[str]]:
    """Chat-preferring patients with a case: their first follow-up was planned on their
    messenger and its message reached their app there."""
    firsts: dict[str, Any] = {}
    for n in sorted(
        (n for n in unique_by_id(observed.notifications) if n.purpose == "follow_up"),
        key=lambda n: (n.occurred_at, n.attempt_number),
    ):
        firsts.setdefault(n.patient_id, n)
    reached = {(r.channel, r.address) for r in _cadence_out(records)}
    with_case = {str(c.get("patient_id")) for c in observed.cases or []}
    problems = []
    checked = 0
    for p in chat_patients(scenario):
        if p.patient_id not in with_case:
            continue
        checked += 1
        first = firsts.get(p.patient_id)
        if first is None or first.channel != p.chat:
            problems.append(
                f"{p.patient_id}: first follow-up on {first.channel if first else 'none'}"
            )
        if (str(p.chat), address_of(p) or "") not in reached:
            problems.append(f"{p.patient_id}: nothing reached them on {p.chat}")
    return checked, problems


WINDOW = timedelta(hours=24)


def whatsapp_window_problems(records: list[ChatRecord]) -> list[str]:
    """Free-form WhatsApp texts to someone who had not written within 24 hours (the
    platform's own stamps: its message's arrival, the patient's last signed message)."""
    wrote: dict[str, list[datetime]] = defaultdict(list)
    for r in records:
        if r.channel == "whatsapp" and r.direction == "in" and r.status == 200:
            wrote[r.address].append(r.at)
    problems = []
    for r in records:
        if r.channel != "whatsapp" or r.direction != "out" or r.kind == "template":
            continue
        last = max((t for t in wrote[r.address] if t <= r.at), default=None)
        if last is None or r.at - last >= WINDOW:
            problems.append(f"text {r.message_id} outside the 24-hour window")
    return problems


def after_chat_stop(
    observed: Observed, scenario: Scenario, records: list[ChatRecord], tolerance: timedelta
) -> tuple[int, list[str]]:
    """Messages of the cadence on a messenger after its STOP: by the notifier's stamps
    (its opt-out, its ``sent`` outcomes), and by what reached the app after the STOP."""
    stops: dict[tuple[str, str], datetime] = {}
    for o in unique_by_id(observed.outcomes):
        if o.outcome == "opt_out" and o.channel in MESSENGERS:
            key = (str(o.channel), o.patient_id)
            stops[key] = min(o.occurred_at, stops.get(key, o.occurred_at))
    problems = []
    for o in unique_by_id(observed.outcomes):
        stop = stops.get((str(o.channel), o.patient_id))
        if stop is not None and o.outcome == "sent" and o.occurred_at > stop + tolerance:
            problems.append(
                f"{o.patient_id} {o.channel} sent {o.occurred_at.isoformat()} after STOP"
            )
    chat_owners = owners(scenario)
    written = [r for r in records if r.direction == "in" and r.kind == "stop" and r.status == 200]
    for r in written:
        later = [
            m
            for m in _cadence_out(records)
            if m.channel == r.channel and m.address == r.address and m.at > r.at + tolerance
        ]
        patient = chat_owners.get((r.channel, r.address))
        who = patient.patient_id if patient else r.address
        problems += [f"{who} {m.channel} message at {m.at.isoformat()} after STOP" for m in later]
    return len(written), problems


def receipt_problems(observed: Observed, records: list[ChatRecord]) -> tuple[int, list[str]]:
    """Every receipt the platforms posted for a message of the cadence (delivered, read /
    seen) is one outcome of its command on the topic; the bot's confirmations have none."""
    cadence = {(r.channel, r.message_id) for r in _cadence_out(records)}
    posted: Counter[str] = Counter()
    for r in records:
        if r.direction == "receipt" and r.status == 200 and (r.channel, r.message_id) in cadence:
            posted[f"{r.channel} {'read' if r.kind in ('read', 'seen') else r.kind}"] += 1
    counted: Counter[str] = Counter(
        f"{o.channel} {o.outcome}"
        for o in unique_by_id(observed.outcomes)
        if o.channel in MESSENGERS and o.outcome in ("delivered", "read", "failed")
    )
    problems = [
        f"{kind}: {posted[kind]} posted, {counted[kind]} counted"
        for kind in sorted(set(posted) | set(counted))
        if posted[kind] != counted[kind]
    ]
    refused = [r for r in records if r.direction in ("in", "receipt") and r.status != 200]
    problems += [f"{len(refused)} signed webhooks refused"] if refused else []
    return sum(posted.values()), problems


def check(
    observed: Observed,
    scenario: Scenario,
    records: list[ChatRecord],
    audit: AuditAnswer | None,
    tolerance: timedelta,
) -> list[Finding]:
    findings = []
    checked, missed = not_reached_on_chat(observed, scenario, records)
    channels = sorted({str(p.chat) for p in chat_patients(scenario)})
    findings.append(
        Finding(
            "chat_patients_reached_on_their_messenger",
            checked > 0 and not missed,
            f"{checked - len({m.split(':')[0] for m in missed})}/{checked} patients"
            f" ({', '.join(channels)}); " + ("; ".join(missed) or "each on theirs first"),
        )
    )
    window = whatsapp_window_problems(records)
    texts = sum(1 for r in _cadence_out(records) if r.channel == "whatsapp")
    findings.append(
        Finding(
            "whatsapp_outside_window_only_templates",
            texts > 0 and not window,
            f"{texts} WhatsApp messages; "
            + ("; ".join(window) or "outside the window templates only"),
        )
    )
    stops, late = after_chat_stop(observed, scenario, records, tolerance)
    findings.append(
        Finding(
            "nobody_written_to_after_chat_stop",
            stops > 0 and not late,
            f"{stops} STOP on a messenger; " + ("; ".join(late) or "nothing after it there"),
        )
    )
    receipts, wrong = receipt_problems(observed, records)
    findings.append(
        Finding(
            "chat_receipts_counted",
            receipts > 0 and not wrong,
            f"{receipts} receipts posted; " + ("; ".join(wrong) or "each counted once"),
        )
    )
    feedback, problems = feedback_view(observed)
    findings.append(
        Finding(
            "feedback_once_after_an_attended_rebooked_visit",
            feedback["asked"] > 0 and feedback["answered"] > 0 and not problems,
            f"{feedback['asked']} asked, {feedback['answered']} answered; "
            + ("; ".join(problems) or "each once, after the attended visit"),
        )
    )
    education, wrong_language = education_view(observed, scenario, records)
    findings.append(
        Finding(
            "stage_explained_in_the_patients_language",
            education["carrying"] > 0 and not wrong_language,
            f"{education['carrying']}/{education['messages']} emails and chat messages; "
            + ("; ".join(wrong_language) or "every email to an adult, none in another language"),
        )
    )
    if audit is not None:
        trouble = audit_problems(audit, scenario)
        summary = audit_summary(audit)
        findings.append(
            Finding(
                "audit_query_answers_with_ids_only",
                not trouble,
                f"{summary['reads']} reads of {summary['patients']} patients; "
                + ("; ".join(trouble) or "no name, phone, email or messenger id in it"),
            )
        )
    return findings


def _pairs(values: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "-"


def summary(values: dict[str, Any]) -> list[tuple[str, str]]:
    """The report table's rows for ``counts``."""
    if not values:
        return []
    m, f, e, a = values["messengers"], values["feedback"], values["education"], values["audit"]
    rows = [
        (
            f"chat: {channel}",
            f"{row['patients']} patients, {row['messages']} messages"
            + (f" ({row['templates']} templates)" if channel == "whatsapp" else "")
            + f", {row['patient_wrote']} from patients ({row['stops']} STOP),"
            f" {row['receipts']} receipts",
        )
        for channel, row in m.items()
    ]
    mean = "-" if f["mean_rating"] is None else f"{f['mean_rating']:.2f}"
    departments = ", ".join(
        f"{d} {row['mean_rating']:.2f} ({row['answered']})"
        for d, row in f["by_department"].items()
        if row["mean_rating"] is not None
    )
    rows.append(
        (
            "feedback",
            f"{f['asked']} asked ({_pairs(f['asked_by_channel'])}), {f['answered']} answered"
            f" ({f['with_comment']} with a comment),"
            f" mean {mean}" + (f"; {departments}" if departments else ""),
        )
    )
    rows.append(
        (
            "stage explained",
            f"{e['carrying']} of {e['messages']} emails and chat messages"
            + (
                f" ({', '.join(f'{k} {v}' for k, v in sorted(e['by_channel'].items()))})"
                if e["by_channel"]
                else ""
            ),
        )
    )
    if a is not None:
        rows.append(
            (
                "audit: demo's API token",
                f"{a['reads']} reads of {a['patients']} patients since the run began;"
                f" fields {', '.join(a['fields']) or '-'}",
            )
        )
    return rows
