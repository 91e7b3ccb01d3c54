"""The words of outcomes, appointments and holds that more than one part reads: one home.

Sets of the contracts' literals (``schemas.events``); the tracker, the scheduler and the
notifier import them from here instead of spelling them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, TypeVar

from schemas.events import AppointmentStatus, OutcomeKind

# Call results that mean "nobody picked up".
UNANSWERED: frozenset[OutcomeKind] = frozenset({"no_answer", "busy", "voicemail"})
# Receipts: the message or task arrived, nobody has acted on it yet (not a result).
NOT_A_RESULT: frozenset[OutcomeKind] = frozenset({"task_created", "sent", "delivered", "read"})
# The patient came: a no-show or late cancellation of this visit is not true.
ATTENDED: frozenset[AppointmentStatus] = frozenset({"arrived", "checked-in", "fulfilled"})
# ``failed`` details after which the message may still have reached the patient.
MAYBE_DELIVERED_DETAILS = frozenset({"delivery_unknown"})
# Carrier-error triage (notifier ``sms.py`` -> scheduler ``cadence.py``): the details that
# say what the provider learnt about the patient's number.
# ``channel_impossible`` details: this number cannot take SMS (a landline: calls still work)
# or does not exist (neither SMS nor calls). The notifier keeps the mark on the contact
# until the hospital sends another number; the scheduler asks for a call task next.
NUMBER_LANDLINE = "landline"
NUMBER_WRONG = "number_wrong"
NUMBER_MARKS = frozenset({NUMBER_LANDLINE, NUMBER_WRONG})
# ``failed`` details that say nothing against the channel: the handset was off or out of
# reach, the carrier was busy, or it did not say why. The cadence goes on as planned.
RETRY_ON_CADENCE_DETAILS = frozenset({"unreachable", "carrier_busy", "carrier_unknown"})
# ``withdrawn`` details of a call task that never reached the clinic's tools.
NEVER_SENT_DETAILS = frozenset({"never_sent", "no_task"})

# Why the scheduler planned or held an attempt later than wanted (metric label ``rule``):
# at firing by a frequency cap or a conversation in progress; at planning by the patient's
# quiet hours (messages) or the clinic's business hours (calls).
# A desk at its calls for the day (``desk_capacity``) holds a call task to the next open day.
HoldReason = Literal[
    "frequency_cap", "conversation_open", "desk_capacity", "quiet_hours", "business_hours"
]
FiringHold = Literal["frequency_cap", "conversation_open", "desk_capacity"]
PlanningMove = Literal["quiet_hours", "business_hours"]
# Why the notifier held a command it was handed (metric label ``rule``).
DeliveryHold = Literal["awaiting_contact", "window", "quiet_hours"]

R = TypeVar("R", bound=str)


@dataclass(frozen=True)
class Hold(Generic[R]):
    """A contact held back by a rule until a moment: the scheduler's at firing, the
    notifier's at delivery. One shape for both, rule first."""

    rule: R
    until: datetime


def went_out(outcome: OutcomeKind, detail: str | None) -> bool:
    """False when the notifier reports that an attempt never reached the patient: refused
    (``channel_impossible``), failed before or at the provider, or a task never handed out.
    Only contacts that went out count against the frequency caps."""
    if outcome == "channel_impossible":
        return False
    if outcome == "failed":
        return detail in MAYBE_DELIVERED_DETAILS
    if outcome == "withdrawn":
        return detail not in NEVER_SENT_DETAILS
    return True
