"""A clinic's population with its ground truth: who slips, who answers, who opts out.

Pure and seeded: the same seed gives the same clinic, so the report can be checked against
what the scenario says should happen. The scenario says what the clinic does on its own
(register, plan, book, check in, cancel, make its own invitation calls); what happens in
reaction to followup (answering a call task, rebooking, replying STOP) is decided at run
time from each patient's behaviour (``demo.simulator.patients``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import phonenumbers

from schemas.base import TriggerKind

Behaviour = Literal[
    "attends",  # comes to every visit: no follow-up expected
    "recovers",  # misses a visit, answers the call task number `answers_on` and rebooks
    "declines",  # misses a visit, answers and declines
    "never_answers",  # misses a visit and never answers: escalation or unreachable
    "opts_out",  # misses a visit and replies STOP to the first SMS
    "late_cancels",  # cancels the visit a few hours before it; answers the first call
    "misses_invitation",  # does not answer the clinic's own invitation call; then answers
    "drifts",  # finished a stage, never booked the next; answers when followup calls
    "dies",  # misses a visit and dies the next day: no contact after that, case closed
    # The clinic's own workflow (issue 18, ``workflow_population``; no share by default):
    "clinic_cancelled",  # the clinic cancels the visit the day before; answers, rebooks
    "attends_no_booking",  # attends a visit without a plan, books nothing; answers, rebooks
]
IngestPath = Literal["hl7", "fhir", "json"]
Messenger = Literal["whatsapp", "telegram", "viber"]
# How a patient uses the rebooking link in their messages (issue 20, ``demo.rebooking``):
# opens it only, picks a slot from the first text, picks one the hospital gives away while the
# page is open (a conflict: the next slots), picks while the desk's call task is out (it is
# withdrawn), or asks to be called back.
LinkUse = Literal["opens", "picks", "picks_taken", "picks_while_called", "calls_back"]
# What the carrier knows of a patient's number: the SMS stand-in answers with Twilio's code.
PhoneLine = Literal["mobile", "landline", "invalid", "switched_off"]
TWILIO_CODE: dict[PhoneLine, int] = {"landline": 21614, "invalid": 21211, "switched_off": 30003}

CLINIC_ZONE = "Europe/Vilnius"
DEPARTMENTS = ("dental", "orthopaedics", "physio")
LANGUAGES = ("lt", "en", "ru", "bg")
NAMES = {
    "lt": [("Ona", "Kazlauskienė"), ("Jonas", "Petraitis"), ("Rūta", "Jankauskaitė")],
    "en": [("Mary", "Smith"), ("John", "Brown"), ("Alice", "Taylor")],
    "ru": [("Ольга", "Иванова"), ("Сергей", "Смирнов"), ("Анна", "Кузнецова")],
    "bg": [("Мария", "Петрова"), ("Георги", "Иванов"), ("Елена", "Димитрова")],
}
# Plausible mobile numbers per country (national significant number lengths included).
PHONE_PREFIX = {"lt": ("+3706", 7), "en": ("+447700", 6), "ru": ("+7916", 7), "bg": ("+35988", 7)}
# Where patients live: an English-speaking patient living in London shows the notifier
# holding a text that would land before 08:00 in the patient's own zone.
PATIENT_ZONE = {"lt": CLINIC_ZONE, "en": "Europe/London", "ru": CLINIC_ZONE, "bg": "Europe/Sofia"}
SHARES: tuple[tuple[Behaviour, float], ...] = (
    ("attends", 0.30),
    ("recovers", 0.24),
    ("declines", 0.06),
    ("never_answers", 0.09),
    ("opts_out", 0.07),
    ("late_cancels", 0.08),
    ("misses_invitation", 0.08),
    ("drifts", 0.08),
    ("dies", 0.03),
)
EXPECTED_TRIGGER: dict[Behaviour, TriggerKind | None] = {
    "attends": None,
    "recovers": "no_show",
    "declines": "no_show",
    "never_answers": "no_show",
    "opts_out": "no_show",
    "late_cancels": "late_cancellation",
    "misses_invitation": "unanswered_call",
    "drifts": "stage_window_at_risk",
    "dies": "no_show",
    "clinic_cancelled": "clinic_cancellation",
    "attends_no_booking": "next_visit_due",
}
REBOOKS: frozenset[Behaviour] = frozenset(
    {
        "recovers",
        "late_cancels",
        "misses_invitation",
        "drifts",
        "clinic_cancelled",
        "attends_no_booking",
    }
)
# The department whose visits the tracker expects to be followed by another within
# NEXT_VISIT_DAYS (FOLLOWUP_NEXT_VISIT_DAYS in the demo), and a desk at its capacity.
NEXT_VISIT_DEPARTMENT, NEXT_VISIT_DAYS = "physio", 10
CAPACITY_DEPARTMENT, CALLS_PER_DAY = "dental", 2
# A child (issue 18): born this day, seven or eight on the scenario's visits.
CHILD_BIRTH_DATE = date(2018, 9, 14)


def e164(raw: str) -> str:
    """A phone number as providers write it, to match what reached a phone to its patient."""
    try:
        return phonenumbers.format_number(
            phonenumbers.parse(raw, None), phonenumbers.PhoneNumberFormat.E164
        )
    except phonenumbers.NumberParseException:
        return raw


@dataclass(frozen=True)
class Education:
    """A stage explained to the patient in one language (issue 21, ``demo.chat``)."""

    language: str
    text: str
    url: str | None = None


@dataclass(frozen=True)
class Stage:
    stage_id: str
    sequence: int
    name: str
    max_interval_days: int | None
    completed_at: datetime | None
    notes: str | None = None
    education: tuple[Education, ...] = ()  # carried by the plan (JSON, FHIR CarePlan)


@dataclass(frozen=True)
class Appointment:
    appointment_id: str
    patient_id: str
    start: datetime
    minutes: int
    stage_id: str
    department: str
    practitioner_id: str

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.minutes)


@dataclass(frozen=True)
class Patient:
    patient_id: str
    given_name: str
    family_name: str
    phone: str
    email: str
    language: str
    timezone: str
    department: str
    practitioner_id: str
    supervisor_id: str
    path: IngestPath
    behaviour: Behaviour
    answers_on: int  # the call task that is answered (1, 2 or 3) by those who answer
    plan_id: str
    stages: tuple[Stage, ...]
    appointments: tuple[Appointment, ...]  # booked from the start, in order
    phone_shared_with: str | None = None  # a family member's patient id: one phone for both
    phone_line: PhoneLine = "mobile"
    # Of those who recover: phones the clinic and books by themselves while followup's call
    # task is still out, so the scheduler withdraws it (the front desk never reports it).
    books_first: bool = False
    # Issue 18: a child's birth date (sent by every feed; None for adults, whose feeds send
    # none); a patient who reports a symptom on the answered call (a clinical concern).
    birth_date: date | None = None
    reports_concern: bool = False
    # Issue 22: the clinic of a chain the patient is treated at (``demo.sites``); None: the
    # deployment's one clinic, whose feeds name no site.
    site: str | None = None
    # Issue 21 (``demo.chat``): the chat messenger the patient prefers and agreed to, and
    # their id on it (Telegram chat id, Viber user id; WhatsApp writes to the phone).
    chat: Messenger | None = None
    chat_id: str | None = None
    # Issue 20: what the patient does with the rebooking link (None: ignores it).
    link_use: LinkUse | None = None

    @property
    def slips(self) -> bool:
        return self.behaviour != "attends"

    @property
    def misses_visit(self) -> bool:
        return self.behaviour in ("recovers", "declines", "never_answers", "opts_out", "dies")

    @property
    def expected_trigger(self) -> TriggerKind | None:
        return EXPECTED_TRIGGER[self.behaviour]

    @property
    def rebooks(self) -> bool:
        return self.behaviour in REBOOKS

    @property
    def first_appointment(self) -> Appointment | None:
        return self.appointments[0] if self.appointments else None

    @property
    def death_at(self) -> datetime:
        """For "dies": the morning after the missed visit, when the clinic learns of it."""
        appt = self.first_appointment
        assert appt is not None
        return datetime.combine(
            appt.start.date() + timedelta(days=1), time(10, 0), tzinfo=appt.start.tzinfo
        )

    @property
    def shares_phone(self) -> bool:
        return self.phone_shared_with is not None

    @property
    def next_stage(self) -> Stage:
        return self.stages[1]

    @property
    def stage_deadline_day(self) -> datetime:
        first = self.stages[0].completed_at
        assert first is not None and self.next_stage.max_interval_days is not None
        return first + timedelta(days=self.next_stage.max_interval_days)


# --- what the clinic does on its own, at planned moments ---------------------------------

ActionKind = Literal[
    "register",
    "plan",
    "book",
    "check_in",
    "fulfil",
    "cancel",
    "clinic_cancel",
    "invite_call",
    "death",
]


@dataclass(frozen=True)
class ClinicAction:
    at: datetime
    kind: ActionKind
    patient: Patient
    appointment: Appointment | None = None


@dataclass(frozen=True)
class ScenarioConfig:
    patients: int = 60
    days: int = 21
    seed: int = 7
    start: datetime | None = None
    shares: tuple[tuple[Behaviour, float], ...] = SHARES
    # Share of call tasks of never-answering patients that the front desk never reports,
    # so the task window expires and the tracker sees an unanswered call.
    unreported_call_share: float = 0.3
    shared_phone_share: float = 0.05
    # When the slipping visits fall: from day ``first_visit_day`` over ``visit_days`` days
    # (None: the first third of the run, at most five days), in these departments.
    first_visit_day: int = 1
    visit_days: int | None = None
    departments: tuple[str, ...] = DEPARTMENTS
    # The clinic registers and books each patient this long before the first visit (None:
    # everyone on the first morning). A large clinic spreads its load over the run.
    book_ahead: timedelta | None = None
    # The clinic's own workflow of issue 18 in the population (``workflow_population``).
    workflow: bool = False


@dataclass
class Scenario:
    start: datetime
    days: int
    patients: list[Patient] = field(default_factory=list)
    seed: int = 7
    unreported_call_share: float = 0.3
    book_ahead: timedelta | None = None

    def booked_at(self, patient: Patient) -> datetime:
        first = patient.first_appointment
        if self.book_ahead is None or first is None:
            return self.start
        return max(self.start, first.start - self.book_ahead)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    def count(self, behaviour: Behaviour) -> int:
        return sum(1 for p in self.patients if p.behaviour == behaviour)

    def actions(self) -> list[ClinicAction]:
        """What the clinic does by itself, in time order (reactions come at run time)."""
        out: list[ClinicAction] = []
        for p in self.patients:
            booked = self.booked_at(p)
            out.append(ClinicAction(booked, "register", p))
            if p.behaviour != "attends_no_booking":  # a visit without a treatment plan
                out.append(ClinicAction(booked, "plan", p))
            for appt in p.appointments:
                out.append(ClinicAction(booked, "book", p, appt))
            for i, appt in enumerate(p.appointments):
                if i == 0 and p.misses_visit:
                    continue  # a no-show: the clinic records nothing
                if i == 0 and p.behaviour == "late_cancels":
                    out.append(ClinicAction(appt.start - timedelta(hours=3), "cancel", p, appt))
                    continue
                if i == 0 and p.behaviour == "clinic_cancelled":
                    moment = appt.start - timedelta(days=1)
                    out.append(ClinicAction(moment, "clinic_cancel", p, appt))
                    continue
                if i > 0 and p.slips:
                    continue  # later visits of a patient who slipped are moved at run time
                out.append(ClinicAction(appt.start - timedelta(minutes=5), "check_in", p, appt))
                out.append(ClinicAction(appt.end, "fulfil", p, appt))
            if p.behaviour == "dies" and p.first_appointment is not None:
                out.append(ClinicAction(p.death_at, "death", p))
            if p.behaviour == "misses_invitation":
                out.append(ClinicAction(_invitation_moment(self.start), "invite_call", p))
        order = {"register": 0, "plan": 1, "book": 2}
        return sorted(out, key=lambda a: (a.at, order.get(a.kind, 9), a.patient.patient_id))


def _invitation_moment(start: datetime) -> datetime:
    # The front desk calls on the first working morning of the scenario.
    return start + timedelta(hours=3)


def _behaviours(
    n: int, shares: tuple[tuple[Behaviour, float], ...], rng: random.Random
) -> list[Behaviour]:
    # Exact shares (rounded), then shuffled: a small clinic still shows every behaviour.
    chosen: list[Behaviour] = []
    for behaviour, share in shares:
        if share > 0:
            chosen += [behaviour] * max(1, round(share * n))
    # Too many after rounding: take from the largest groups, so no behaviour disappears.
    while len(chosen) > n:
        counts = Counter(chosen)
        largest = max(counts, key=lambda b: (counts[b], b))
        if counts[largest] == 1:
            break
        chosen.remove(largest)
    chosen = chosen[:n] + ["attends"] * (n - len(chosen))
    rng.shuffle(chosen)
    return chosen


def _phone(language: str, rng: random.Random) -> str:
    """A number the numbering plan accepts (not every number in a mobile range is valid)."""
    prefix, digits = PHONE_PREFIX[language]
    while True:
        candidate = f"{prefix}{rng.randrange(10 ** (digits - 1), 10**digits)}"
        if phonenumbers.is_valid_number(phonenumbers.parse(candidate, None)):
            return candidate


def _working_day(day: datetime, zone: ZoneInfo, rng: random.Random) -> datetime:
    d = day.date()
    while d.weekday() >= 5:
        d += timedelta(days=1)
    slot = time(8 + rng.randrange(8), rng.choice((0, 30)))
    return datetime.combine(d, slot, tzinfo=zone)


def build(
    patients: int = 60,
    days: int = 21,
    seed: int = 7,
    start: datetime | None = None,
    config: ScenarioConfig | None = None,
) -> Scenario:
    config = config or ScenarioConfig(patients=patients, days=days, seed=seed, start=start)
    rng = random.Random(config.seed)
    zone = ZoneInfo(CLINIC_ZONE)
    begin = config.start or datetime(2026, 3, 2, 7, 0, tzinfo=zone)
    scenario = Scenario(
        start=begin,
        days=config.days,
        seed=config.seed,
        unreported_call_share=config.unreported_call_share,
        book_ahead=config.book_ahead,
    )
    paths: tuple[IngestPath, ...] = ("hl7", "fhir", "json")
    # No-shows happen in the first part of the run, so their follow-up fits inside it.
    visit_days = config.visit_days or max(1, min(5, config.days // 3))
    # Languages and ingest paths rotate within those who attend and those who slip apart,
    # so even a small clinic has slipping patients in every language and on every path.
    rotation = {True: 0, False: 0}
    for i, behaviour in enumerate(_behaviours(config.patients, config.shares, rng)):
        turn = rotation[behaviour == "attends"]
        rotation[behaviour == "attends"] += 1
        language = LANGUAGES[turn % len(LANGUAGES)]
        given, family = rng.choice(NAMES[language])
        patient_id = f"pat-{config.seed}-{i:04d}"
        department = config.departments[i % len(config.departments)]
        practitioner = f"dr-{1 + i % 4}"
        first_visit = begin + timedelta(days=config.first_visit_day + rng.randrange(visit_days))
        visit = _working_day(first_visit, zone, rng)
        if behaviour == "never_answers":
            # A tight deadline: the cadence cannot finish before it, so the case escalates.
            first_done = visit - timedelta(days=rng.randrange(14, 17))
            interval = 21
        elif behaviour == "drifts":
            # Stage 1 done long ago, nothing booked: the deadline comes within the run.
            first_done = begin - timedelta(days=rng.randrange(14, 18))
            interval = 28
        else:
            first_done = visit - timedelta(days=rng.randrange(7, 14))
            interval = rng.choice((21, 28, 35))
        stages = (
            Stage(f"{patient_id}-s1", 1, "Consultation", None, first_done),
            Stage(
                f"{patient_id}-s2",
                2,
                "Treatment",
                interval,
                None,
                notes="Continue as planned; check tolerance of the medication.",
            ),
            Stage(f"{patient_id}-s3", 3, "Control visit", 42, None),
        )
        appointments: list[Appointment] = []
        if behaviour not in ("drifts", "misses_invitation"):  # nothing booked yet
            appointments.append(
                Appointment(
                    f"appt-{patient_id}-1",
                    patient_id,
                    visit,
                    30,
                    stages[1].stage_id,
                    department,
                    practitioner,
                )
            )
            control = visit + timedelta(days=7 + rng.randrange(max(1, config.days - 8)))
            # Attendees come back for the control visit weeks later (when it falls in the run).
            if behaviour == "attends" and control < begin + timedelta(days=config.days):
                appointments.append(
                    Appointment(
                        f"appt-{patient_id}-2",
                        patient_id,
                        _working_day(control, zone, rng),
                        20,
                        stages[2].stage_id,
                        department,
                        practitioner,
                    )
                )
        path = paths[(turn + turn // len(LANGUAGES)) % len(paths)]
        scenario.patients.append(
            Patient(
                patient_id=patient_id,
                given_name=given,
                family_name=family,
                phone=_phone(language, rng),
                email=f"patient{i}@example.org",
                language=language,
                # Only the canonical contact carries the patient's own zone; HL7 PID has
                # none and the tracker reads none from FHIR, so those live by the clinic.
                timezone=PATIENT_ZONE[language] if path == "json" else CLINIC_ZONE,
                department=department,
                practitioner_id=practitioner,
                supervisor_id="dr-chief",
                path=path,
                behaviour=behaviour,
                answers_on=1
                if behaviour in ("late_cancels", "misses_invitation", "declines")
                else 1 + rng.randrange(3),
                plan_id=f"plan-{patient_id}",
                stages=stages,
                appointments=tuple(appointments),
            )
        )
    share_phones(scenario, max(1, round(config.patients * config.shared_phone_share)))
    carrier_troubles(scenario)
    book_first(scenario, pairs=2)
    if config.workflow:
        workflow_population(scenario, rng)
    return scenario


def workflow_population(scenario: Scenario, rng: random.Random) -> None:
    """Issue 18's clinic in the population, each from a patient the build already made:
    a clinic cancellation (an attendee on the FHIR or JSON path, whose feeds say the
    clinic cancelled), a patient on the JSON path who attends a visit without a plan in
    NEXT_VISIT_DEPARTMENT and books nothing, a clinical concern (a recovering patient
    reports a symptom on the answered call), and a child not brought (a never-answering
    patient, with the birth date, misses a second visit the next working day). The holiday
    (LT's 11 March in the shipped policy) and the desk at capacity are the deployment's."""
    index = {p.patient_id: i for i, p in enumerate(scenario.patients)}

    def first(
        behaviour: Behaviour,
        *,
        path_not: str | None = None,
        path: str | None = None,
        any_line: bool = False,
    ) -> Patient | None:
        return next(
            (
                p
                for p in scenario.patients
                if p.behaviour == behaviour
                and not p.shares_phone
                and (any_line or p.phone_line == "mobile")
                and not p.books_first
                and p.path != path_not
                and (path is None or p.path == path)
                and p.first_appointment is not None
            ),
            None,
        )

    def put(patient: Patient) -> None:
        scenario.patients[index[patient.patient_id]] = patient

    if (p := first("attends", path_not="hl7")) is not None:
        # The tracker reads a clinic cancellation from FHIR's reason code and JSON's
        # cancelled_by; the simulator's HL7 S15 names no reason for the clinic.
        put(replace(p, behaviour="clinic_cancelled", answers_on=1, appointments=p.appointments[:1]))
    if (p := first("attends", path="json")) is not None:
        # JSON: its appointments may leave the plan out (HL7 SCH-26, FHIR basedOn name it).
        visit = replace(p.appointments[0], department=NEXT_VISIT_DEPARTMENT)
        put(
            replace(
                p,
                behaviour="attends_no_booking",
                answers_on=1,
                department=NEXT_VISIT_DEPARTMENT,
                appointments=(visit,),
            )
        )
    if (p := first("recovers")) is not None:
        put(replace(p, reports_concern=True, answers_on=1))
    # A small clinic's never-answering patients may all have carrier troubles; one who
    # declines on the first call misses the second visit all the same (a new case then).
    child = first("never_answers") or first("never_answers", any_line=True) or first("declines")
    if (p := child) is not None:
        missed = p.appointments[0]
        zone = ZoneInfo(CLINIC_ZONE)
        second = replace(
            missed,
            appointment_id=f"appt-{p.patient_id}-2",
            start=_working_day(missed.start + timedelta(days=1), zone, rng),
        )
        put(replace(p, birth_date=CHILD_BIRTH_DATE, appointments=(missed, second)))


def book_first(scenario: Scenario, pairs: int) -> None:
    """Two patients who recover book on their own while their call task is out."""
    index = {p.patient_id: i for i, p in enumerate(scenario.patients)}
    recovering = [p for p in scenario.patients if p.behaviour == "recovers" and not p.shares_phone]
    for p in recovering[:pairs]:
        scenario.patients[index[p.patient_id]] = replace(p, books_first=True)


def carrier_troubles(scenario: Scenario) -> None:
    """A landline, a number that does not exist and a phone switched off among those who
    never answer: their
    texts fail at the carrier, so the report shows what the notifier's triage did. Never
    a shared phone (its family member would inherit the fault)."""
    index = {p.patient_id: i for i, p in enumerate(scenario.patients)}
    silent = [p for p in scenario.patients if p.behaviour == "never_answers" and not p.shares_phone]
    lines: tuple[PhoneLine, ...] = ("landline", "invalid", "switched_off")
    for p, line in zip(silent, lines, strict=False):
        scenario.patients[index[p.patient_id]] = replace(p, phone_line=line)


def carrier_errors(scenario: Scenario) -> dict[str, int]:
    """E.164 number -> the Twilio error code the SMS stand-in answers for it."""
    return {
        e164(p.phone): TWILIO_CODE[p.phone_line]
        for p in scenario.patients
        if p.phone_line != "mobile"
    }


def share_phones(scenario: Scenario, pairs: int) -> None:
    """Families: a patient who slips shares a phone with one who attends (the attendee takes
    the other's number and zone), so followup must not name one to the other."""
    slipping = [p for p in scenario.patients if p.behaviour in ("recovers", "late_cancels")]
    attending = [p for p in scenario.patients if p.behaviour == "attends"]
    index = {p.patient_id: i for i, p in enumerate(scenario.patients)}
    for a, b in list(zip(slipping, attending, strict=False))[:pairs]:
        scenario.patients[index[a.patient_id]] = replace(a, phone_shared_with=b.patient_id)
        scenario.patients[index[b.patient_id]] = replace(
            b, phone=a.phone, timezone=a.timezone, phone_shared_with=a.patient_id
        )
