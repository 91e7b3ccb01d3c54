"""Feedback after a recovered visit, the pure part: on which channel to ask, and the ask.

A case the patient recovered (we reached out, they rebooked) waits for the rebooked visit;
when the hospital says it was attended, the patient is asked once, on their channel, how
it was (1-5 and an optional comment). Their channel: the one they prefer when a question
can go there, else the last message channel that reached them in this case, else SMS. A
call task asks nothing (nobody calls to ask for a rating), an email neither (a reply is
read there only through a forwarder): the question goes by SMS or messenger.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from schemas.base import MESSENGERS, Channel, TriggerKind
from schemas.events import NotificationCommand
from services.scheduler.cadence import AttemptRecord

SOURCE = "scheduler"
ASKABLE: frozenset[Channel] = frozenset({"sms", *MESSENGERS})
# How long the notifier may hold the question (quiet hours) before it is moot.
ASK_WITHIN = timedelta(days=2)
# A patient who has just checked in is in the waiting room: the question goes when the visit
# is reported finished, or this long after the check-in when no end is ever reported.
AFTER_CHECK_IN = timedelta(hours=2)


def ask_from(status: str, status_at: datetime | None, now: datetime) -> datetime:
    """When the question may go: at once after the visit, later after a check-in."""
    if status != "arrived":
        return now
    return max(now, (status_at or now) + AFTER_CHECK_IN)


# The attempt number feedback commands carry: beyond any cadence's attempts, so the
# notifier's reports about it never land on a follow-up attempt of the case.
FEEDBACK_ATTEMPT = 900


def feedback_channel(
    preferred: Channel | None,
    attempts: list[AttemptRecord],
    impossible: frozenset[Channel],
    opted_out: frozenset[Channel],
) -> Channel | None:
    """Where to ask, or None when no askable channel is left for the patient."""
    usable = ASKABLE - impossible - opted_out
    if preferred in usable:
        return preferred
    reached = [
        a.channel
        for a in attempts
        if a.state == "fired" and a.channel in usable and a.outcome in ("sent", "delivered", "read")
    ]
    if reached:
        return reached[-1]
    return "sms" if "sms" in usable else None


def feedback_key(case_id: str) -> str:
    return f"{case_id}:feedback"


def feedback_command(
    *,
    case_id: str,
    patient_id: str,
    reason: TriggerKind,
    department: str,
    timezone: str,
    channel: Channel,
    appointment_id: str,
    now: datetime,
    site: str | None = None,
    not_before: datetime | None = None,
) -> NotificationCommand:
    start = now if not_before is None else max(now, not_before)
    key = feedback_key(case_id)
    return NotificationCommand(
        event_id=key,
        occurred_at=now,
        source=SOURCE,
        idempotency_key=key,
        case_id=case_id,
        attempt_number=FEEDBACK_ATTEMPT,
        patient_id=patient_id,
        purpose="feedback",
        channel=channel,
        template="visit_feedback",
        reason=reason,  # the case's; the text is the question's whatever the reason
        department=department,
        timezone=timezone,
        appointment_id=appointment_id,
        window_start=start,
        window_end=start + ASK_WITHIN,
        site=site,  # the clinic of a chain asks in its own name
    )
