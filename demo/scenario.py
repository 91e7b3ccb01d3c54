"""A clinic's population with its ground truth: who slips, who answers, who opts out.

Pure and seeded: the same seed gives the same clinic, so the report can be checked against
what the scenario says should happen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Behaviour = Literal[
    "attends",  # comes to every visit: no follow-up expected
    "recovers",  # misses a visit, answers the call task number `answers_on` and rebooks
    "declines",  # misses a visit, answers and declines
    "never_answers",  # misses a visit and never answers: escalation or unreachable
    "opts_out",  # misses a visit and replies STOP to the first SMS
    "late_cancels",  # cancels the visit a few hours before it; answers the first call
]
IngestPath = Literal["hl7", "fhir", "json"]

CLINIC_ZONE = "Europe/Vilnius"
DEPARTMENTS = ("dental", "orthopaedics", "physio")
LANGUAGES = ("lt", "en", "ru", "bg")
NAMES = {
    "lt": [("Ona", "Kazlauskienė"), ("Jonas", "Petraitis"), ("Rūta", "Jankauskaitė")],
    "en": [("Mary", "Smith"), ("John", "Brown"), ("Alice", "Taylor")],
    "ru": [("Ольга", "Иванова"), ("Сергей", "Смирнов"), ("Анна", "Кузнецова")],
    "bg": [("Мария", "Петрова"), ("Георги", "Иванов"), ("Елена", "Димитрова")],
}
PHONE_PREFIX = {"lt": "+3706", "en": "+44770", "ru": "+7916", "bg": "+35988"}
SHARES: tuple[tuple[Behaviour, float], ...] = (
    ("attends", 0.35),
    ("recovers", 0.30),
    ("declines", 0.08),
    ("never_answers", 0.10),
    ("opts_out", 0.07),
    ("late_cancels", 0.10),
)


@dataclass(frozen=True)
class Stage:
    stage_id: str
    sequence: int
    name: str
    max_interval_days: int | None
    completed_at: datetime | None
    notes: str | None = None


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
    path: IngestPath
    behaviour: Behaviour
    answers_on: int  # for "recovers": the call task that is answered (1, 2 or 3)
    plan_id: str
    stages: tuple[Stage, ...]
    appointment_id: str
    appointment_start: datetime

    @property
    def slips(self) -> bool:
        return self.behaviour != "attends"

    @property
    def misses_visit(self) -> bool:
        return self.behaviour in ("recovers", "declines", "never_answers", "opts_out")

    @property
    def next_stage(self) -> Stage:
        return self.stages[1]

    @property
    def stage_deadline_day(self) -> datetime:
        first = self.stages[0].completed_at
        assert first is not None and self.next_stage.max_interval_days is not None
        return first + timedelta(days=self.next_stage.max_interval_days)


@dataclass
class Scenario:
    start: datetime
    days: int
    patients: list[Patient] = field(default_factory=list)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    def count(self, behaviour: Behaviour) -> int:
        return sum(1 for p in self.patients if p.behaviour == behaviour)


def _behaviours(n: int, rng: random.Random) -> list[Behaviour]:
    # Exact shares (rounded), then shuffled: a small clinic still shows every behaviour.
    chosen: list[Behaviour] = []
    for behaviour, share in SHARES:
        chosen += [behaviour] * max(1, round(share * n))
    chosen = chosen[:n] if len(chosen) >= n else chosen + ["attends"] * (n - len(chosen))
    rng.shuffle(chosen)
    return chosen


def build(
    patients: int = 60, days: int = 21, seed: int = 7, start: datetime | None = None
) -> Scenario:
    rng = random.Random(seed)
    zone = ZoneInfo(CLINIC_ZONE)
    start = start or datetime(2026, 3, 2, 7, 0, tzinfo=zone)
    scenario = Scenario(start=start, days=days)
    paths: tuple[IngestPath, ...] = ("hl7", "fhir", "json")
    for i, behaviour in enumerate(_behaviours(patients, rng)):
        language = LANGUAGES[i % len(LANGUAGES)]
        given, family = rng.choice(NAMES[language])
        patient_id = f"pat-{seed}-{i:04d}"
        # Visits on working days of the first week, between 08:00 and 16:00 clinic time.
        day = start.date() + timedelta(days=1 + rng.randrange(5))
        while day.weekday() >= 5:
            day += timedelta(days=1)
        slot = time(8 + rng.randrange(8), rng.choice((0, 30)))
        visit = datetime.combine(day, slot, tzinfo=zone)
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
            Stage(f"{patient_id}-s3", 3, "Control visit", 60, None),
        )
        scenario.patients.append(
            Patient(
                patient_id=patient_id,
                given_name=given,
                family_name=family,
                phone=f"{PHONE_PREFIX[language]}{rng.randrange(10**6, 10**7)}",
                email=f"patient{i}@example.org",
                language=language,
                timezone=CLINIC_ZONE if language != "bg" else "Europe/Sofia",
                department=DEPARTMENTS[i % len(DEPARTMENTS)],
                practitioner_id=f"dr-{1 + i % 4}",
                path=paths[i % len(paths)],
                behaviour=behaviour,
                answers_on=1 + rng.randrange(3),
                plan_id=f"plan-{patient_id}",
                stages=stages,
                appointment_id=f"appt-{patient_id}-1",
                appointment_start=visit,
            )
        )
    return scenario
