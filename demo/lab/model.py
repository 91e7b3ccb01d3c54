"""The lab's patient model: parameters from ``patients.yaml``, the population they give, and
how each patient reacts to a call, a text or an email.

Every draw comes from the seed, the patient and the attempt alone (never from the order in
which things happen at run time), so the k-th call to a patient at a given time of day is
answered under every policy or under none: policies are compared on the very same people.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml

from demo.scenario import CLINIC_ZONE, REBOOKS, Behaviour, Patient, Scenario, ScenarioConfig, build
from demo.simulator.patients import NOT_REACHED, CallDecision, MessageReaction
from schemas.base import Channel

PATIENTS_FILE = Path(__file__).with_name("patients.yaml")
SLOTS = {"morning": (8, 12), "afternoon": (12, 15), "evening": (15, 18)}


class ModelError(Exception):
    """A patient model file that cannot be used; the message names the field."""


@dataclass(frozen=True)
class PatientModel:
    no_show: float
    late_cancellation: float
    unanswered_invitation: float
    drift: float
    deaths: float
    would_continue: float
    unreachable: float
    opt_out: float
    answer_by_slot: dict[str, float]
    attempt_factor: tuple[float, ...]
    unreported: float
    minutes_per_call: float
    sms_books: float
    email_books: float
    sms_delay_hours: tuple[float, float]
    email_delay_hours: tuple[float, float]
    transfers: float = 0.0
    transfer_told_by_patient: float = 0.5
    transfer_known_after_days: tuple[float, float] = (1.0, 5.0)

    @classmethod
    def load(cls, path: Path = PATIENTS_FILE) -> PatientModel:
        raw: Any = yaml.safe_load(path.read_text())

        def get(section: str, name: str) -> Any:
            try:
                return raw[section][name]
            except (KeyError, TypeError):
                raise ModelError(f"{path}: {section}.{name} is missing") from None

        def share(section: str, name: str) -> float:
            value = get(section, name)
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ModelError(f"{path}: {section}.{name} must be a share between 0 and 1")
            return float(value)

        def pair(section: str, name: str, unit: str = "hours") -> tuple[float, float]:
            value = get(section, name)
            if not (isinstance(value, list) and len(value) == 2 and 0 <= value[0] <= value[1]):
                raise ModelError(f"{path}: {section}.{name} must be [low, high] {unit}")
            return float(value[0]), float(value[1])

        slots = get("calls", "answer_by_slot")
        factors = get("calls", "attempt_factor")
        if not isinstance(slots, dict) or not all(0 <= v <= 1 for v in slots.values()):
            raise ModelError(f"{path}: calls.answer_by_slot must map slots to shares")
        if not isinstance(factors, list) or not factors:
            raise ModelError(f"{path}: calls.attempt_factor must be a list of factors")
        model = cls(
            no_show=share("population", "no_show"),
            late_cancellation=share("population", "late_cancellation"),
            unanswered_invitation=share("population", "unanswered_invitation"),
            drift=share("population", "drift_without_booking"),
            deaths=share("population", "deaths"),
            would_continue=share("slipped", "would_continue"),
            unreachable=share("slipped", "unreachable"),
            opt_out=share("slipped", "opt_out"),
            answer_by_slot={str(k): float(v) for k, v in slots.items()},
            attempt_factor=tuple(float(f) for f in factors),
            unreported=share("calls", "unreported"),
            minutes_per_call=float(get("calls", "minutes_per_call")),
            sms_books=share("messages", "sms_books"),
            email_books=share("messages", "email_books"),
            sms_delay_hours=pair("messages", "sms_delay_hours"),
            email_delay_hours=pair("messages", "email_delay_hours"),
            transfers=share("population", "transfers"),
            transfer_told_by_patient=share("transfers", "told_by_patient"),
            transfer_known_after_days=pair("transfers", "hospital_knows_after_days", "days"),
        )
        if model.slip_total() > 1 or model.deaths > model.no_show:
            raise ModelError(f"{path}: population shares add up to more than everyone")
        if model.transfers > model.slip_total() * (1 - model.would_continue):
            raise ModelError(
                f"{path}: population.transfers is more than those who slipped and would not "
                "continue (slipped.would_continue)"
            )
        return model

    def slip_total(self) -> float:
        return self.no_show + self.late_cancellation + self.unanswered_invitation + self.drift

    def shares(self) -> tuple[tuple[Behaviour, float], ...]:
        """The scenario's behaviours in these proportions. Those who would not continue
        decline when reached; they are played as missed visits whatever their slip was."""
        w, missed = self.would_continue, self.no_show - self.deaths
        lost = missed * (self.opt_out + self.unreachable)
        willing = missed - lost
        others = self.late_cancellation + self.unanswered_invitation + self.drift
        return (
            ("recovers", willing * w),
            ("declines", willing * (1 - w) + others * (1 - w)),
            ("never_answers", missed * self.unreachable),
            ("opts_out", missed * self.opt_out),
            ("late_cancels", self.late_cancellation * w),
            ("misses_invitation", self.unanswered_invitation * w),
            ("drifts", self.drift * w),
            ("dies", self.deaths),
            ("attends", 1 - self.slip_total()),
        )

    def population(self, patients: int, days: int, seed: int) -> Scenario:
        """The clinic: visits spread over all but the last three weeks (from day 3), each
        patient registered and booked a week before, in six departments."""
        return build(
            config=ScenarioConfig(
                patients=patients,
                days=days,
                seed=seed,
                shares=self.shares(),
                unreported_call_share=self.unreported,
                first_visit_day=3,
                book_ahead=timedelta(days=7),
                visit_days=max(1, days - 21),
                departments=(
                    "dental",
                    "orthopaedics",
                    "physio",
                    "cardiology",
                    "dermatology",
                    "ophthalmology",
                ),
            )
        )

    def transfers_in(self, scenario: Scenario) -> dict[str, Transfer]:
        """Who of this population moved to another provider, and who tells the clinic.

        Transferred patients come from those who missed a visit and would not continue
        here ("declines"), so the reachable maximum is the same with or without them. The
        hospital's feed reports the transfer some days after the missed visit (the new
        provider asked for the records), or the patient says so on the first call answered;
        the front desk then records it and the feed reports it."""
        seed = scenario.seed
        candidates = sorted(
            (p for p in scenario.patients if p.behaviour == "declines" and p.first_appointment),
            key=lambda p: _draw(seed, p, "transfer"),
        )
        wanted = round(self.transfers * len(scenario.patients))
        out: dict[str, Transfer] = {}
        for p in candidates[:wanted]:
            appt = p.first_appointment
            assert appt is not None
            low, high = self.transfer_known_after_days
            days = low + (high - low) * _draw(seed, p, "transfer:days")
            told_by_patient = _draw(seed, p, "transfer:who") < self.transfer_told_by_patient
            out[p.patient_id] = Transfer(
                p.patient_id,
                "patient" if told_by_patient else "hospital",
                None if told_by_patient else appt.start + timedelta(days=days),
            )
        return out

    def answer_chance(self, call_number: int, at: datetime) -> float:
        hour = at.astimezone(ZoneInfo(CLINIC_ZONE)).hour
        slot = next((s for s, (a, b) in SLOTS.items() if a <= hour < b), None)
        base = self.answer_by_slot.get(slot or "", min(self.answer_by_slot.values()))
        factors = self.attempt_factor
        return base * factors[min(call_number, len(factors)) - 1]


@dataclass(frozen=True)
class Transfer:
    """A patient transferred to another provider: who tells the clinic, and (the hospital)
    when its feed reports it."""

    patient_id: str
    told_by: Literal["hospital", "patient"]
    reported_at: datetime | None  # the hospital's; the patient's comes with the first call


def _draw(seed: int, patient: Patient, what: str) -> float:
    # A string seed is hashed with SHA-512: the same number in every process and run.
    return random.Random(f"{seed}:{patient.patient_id}:{what}").random()


@dataclass
class ModelReactions:
    """The simulator's patients as the model says (``demo.simulator.patients.Reactions``).

    ``on_told_transfer`` is called when a transferred patient answers a call and says so
    (the lab records the transfer through the hospital's feed).
    """

    model: PatientModel
    seed: int
    transfers: dict[str, Transfer] = field(default_factory=dict)
    on_told_transfer: Callable[[Patient, datetime], None] | None = None

    def call(
        self, patient: Patient, call_number: int, at: datetime, rng: random.Random
    ) -> CallDecision:
        b = patient.behaviour
        if b == "never_answers":
            if _draw(self.seed, patient, f"unreported:{call_number}") < self.model.unreported:
                return CallDecision(None)
            return CallDecision(rng.choice(NOT_REACHED))
        if b in ("opts_out", "dies"):
            return CallDecision("no_answer")
        if b == "attends":
            return CallDecision("answered_declined")
        answered = _draw(self.seed, patient, f"call:{call_number}") < self.model.answer_chance(
            call_number, at
        )
        if not answered:
            return CallDecision(rng.choice(NOT_REACHED))
        transfer = self.transfers.get(patient.patient_id)
        if transfer is not None and transfer.told_by == "patient" and self.on_told_transfer:
            self.on_told_transfer(patient, at)
        if b in REBOOKS:
            return CallDecision("answered_rebooked", rebook=True)
        return CallDecision("answered_declined")

    def message(
        self, patient: Patient, channel: Channel, number: int, at: datetime
    ) -> MessageReaction:
        if patient.behaviour == "opts_out":
            return MessageReaction("STOP" if channel == "sms" and number == 1 else None)
        if patient.behaviour not in REBOOKS or channel == "call_task":
            return MessageReaction()
        rate = self.model.sms_books if channel == "sms" else self.model.email_books
        if _draw(self.seed, patient, f"{channel}:{number}") >= rate:
            return MessageReaction()
        low, high = self.model.sms_delay_hours if channel == "sms" else self.model.email_delay_hours
        hours = low + (high - low) * _draw(self.seed, patient, f"{channel}:{number}:delay")
        return MessageReaction(rebook_after=timedelta(hours=hours))
