"""How each simulated patient reacts to followup: pure decisions from the scenario.

The front desk calls the patient named in a call task and reports what happened; a patient
who receives an SMS may reply. What they do comes from the patient's behaviour and how
many times followup has already tried, never from chance alone (the rng only picks
between equivalent "not reached" results).
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from demo.scenario import Patient
from schemas.base import Channel

CallResult = Literal[
    "answered_rebooked",
    "answered_declined",
    "callback_requested",
    "no_answer",
    "busy",
    "voicemail",
    "wrong_number",
    "clinical_concern",
]
NOT_REACHED: tuple[CallResult, ...] = ("no_answer", "busy", "voicemail")
# What a patient with a clinical concern tells the front desk (made up; the desk's note).
CONCERN_NOTE = "Swelling and fever since the missed visit."
# What a patient does with the rebooking link of a message (issue 20): opens the page only,
# picks a slot, picks one that is taken meanwhile (then the next offered), picks the latest
# time of the page they opened earlier, asks for a call.
LinkChoice = Literal["open", "pick", "pick_taken", "pick_later", "callback"]


@dataclass
class PatientLog:
    """What happened to one patient during the run (used by the front desk and the checks)."""

    calls: int = 0
    sms: int = 0
    emails: int = 0
    opted_out: bool = False
    rebooked: bool = False
    results: list[CallResult] = field(default_factory=list)


@dataclass(frozen=True)
class CallDecision:
    result: CallResult | None  # None: the front desk never reports (the window expires)
    rebook: bool = False  # with no result: the patient booked by themselves meanwhile
    # With no result: the patient picks a new time by the link while the task is out.
    link: LinkChoice | None = None


def decide_call(
    patient: Patient, call_number: int, rng: random.Random, unreported: float
) -> CallDecision:
    """The front desk's call number ``call_number`` (1-based) to this patient."""
    b = patient.behaviour
    if patient.link_use == "picks_while_called" and call_number >= patient.answers_on:
        # Before the desk gets through, the patient picks a time from the text: the task
        # stays open at the desk, for followup to withdraw once the hospital books.
        return CallDecision(None, link="pick_later")
    if patient.reports_concern and call_number >= patient.answers_on:
        # A symptom or danger sign on the call: for the clinician on call, not a booking.
        return CallDecision("clinical_concern")
    if b in (
        "recovers",
        "late_cancels",
        "misses_invitation",
        "drifts",
        "clinic_cancelled",
        "attends_no_booking",
    ):
        if call_number >= patient.answers_on and patient.books_first:
            return CallDecision(None, rebook=True)  # booked by phone before the desk called
        if call_number >= patient.answers_on:
            return CallDecision("answered_rebooked", rebook=True)
        return CallDecision(rng.choice(NOT_REACHED))
    if b == "declines":
        return CallDecision("answered_declined")
    if b == "never_answers":
        if rng.random() < unreported:
            return CallDecision(None)
        return CallDecision(rng.choice(NOT_REACHED))
    if b in ("opts_out", "dies"):
        return CallDecision("no_answer")
    # A patient who attends was never meant to be called: the call finds nothing to fix.
    return CallDecision("answered_declined")


def decide_sms_reply(patient: Patient, sms_number: int) -> str | None:
    """The patient's reply to their ``sms_number``-th text, if any."""
    if patient.behaviour == "opts_out" and sms_number == 1:
        return "STOP"
    return None


def decide_link(patient: Patient, channel: Channel, number: int) -> LinkChoice | None:
    """What the patient does with the rebooking link of their ``number``-th message on
    ``channel``: those who use it do so on their first text; "picks_while_called" opens it
    then and picks on the page when the desk's call comes (``decide_call``)."""
    if channel != "sms" or number != 1:
        return None
    uses: dict[str, LinkChoice] = {
        "opens": "open",
        "picks": "pick",
        "picks_taken": "pick_taken",
        "picks_while_called": "open",
        "calls_back": "callback",
    }
    return uses.get(patient.link_use or "")


@dataclass(frozen=True)
class MessageReaction:
    """What a patient does on reading a text or an email."""

    reply: str | None = None  # a text sent back (e.g. STOP)
    rebook_after: timedelta | None = None  # calls the clinic and books, this long after
    link: LinkChoice | None = None  # what they do with the message's rebooking link


class Reactions(Protocol):
    """How patients react to followup; the demo's are scripted, the lab's drawn from a model."""

    def call(
        self, patient: Patient, call_number: int, at: datetime, rng: random.Random
    ) -> CallDecision: ...

    def message(
        self, patient: Patient, channel: Channel, number: int, at: datetime
    ) -> MessageReaction: ...


@dataclass(frozen=True)
class ScriptedReactions:
    """The demo's scripted patients (``decide_call``, ``decide_sms_reply``)."""

    unreported_call_share: float = 0.3

    def call(
        self, patient: Patient, call_number: int, at: datetime, rng: random.Random
    ) -> CallDecision:
        return decide_call(patient, call_number, rng, self.unreported_call_share)

    def message(
        self, patient: Patient, channel: Channel, number: int, at: datetime
    ) -> MessageReaction:
        return MessageReaction(
            decide_sms_reply(patient, number) if channel == "sms" else None,
            link=decide_link(patient, channel, number),
        )


# The answer to the feedback question after a rebooked visit (issue 21): a rating, and for
# every other patient a few words in their own language (made up for the demo).
FEEDBACK_RATINGS = (5, 4, 5, 3, 4, 2)
FEEDBACK_COMMENTS = {
    "lt": "Ačiū, gydytoja viską gerai paaiškino.",
    "en": "Thank you, the doctor explained everything well.",
    "ru": "Спасибо, врач всё хорошо объяснил.",
    "bg": "Благодаря, лекарят обясни всичко добре.",
}


def decide_feedback(patient: Patient) -> str:
    """What the patient answers to the one question after their rebooked visit."""
    number = zlib.crc32(patient.patient_id.encode())  # the same answer every run
    rating = FEEDBACK_RATINGS[number % len(FEEDBACK_RATINGS)]
    comment = FEEDBACK_COMMENTS.get(patient.language) if number // 7 % 2 == 0 else None
    return f"{rating} {comment}" if comment else str(rating)


# A few words back on the messenger (a plain reply, for the front desk): made up.
CHAT_REPLIES = {
    "lt": "Ačiū, paskambinsiu į registratūrą.",
    "en": "Thanks, I will phone the front desk.",
    "ru": "Спасибо, я позвоню в регистратуру.",
    "bg": "Благодаря, ще позвъня на регистратурата.",
}


def decide_chat_reply(patient: Patient, number: int) -> str | None:
    """What a patient who prefers a messenger writes back to its ``number``-th message of
    the cadence: STOP (who opts out), a few words on WhatsApp and Telegram (who rebooks;
    on WhatsApp it opens the 24-hour window), nothing on Viber (read receipts only)."""
    if number != 1:
        return None
    if patient.behaviour == "opts_out":
        return "STOP"
    if patient.rebooks and patient.chat in ("whatsapp", "telegram"):
        return CHAT_REPLIES.get(patient.language, CHAT_REPLIES["en"])
    return None
