"""Case rules that are not cadence: identities, what a booking closes, the commands we send.

Plain functions of data; the ``Case`` (case.py) calls them. No I/O here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from schemas.base import Channel, TriggerKind
from schemas.events import (
    CALL_RESULTS,
    AppointmentEvent,
    AttemptSummary,
    NotificationCommand,
    OutcomeKind,
    Purpose,
    RiskScore,
    StageEducation,
)
from schemas.vocabulary import UNANSWERED
from services.scheduler.cadence import AttemptRecord, Resolution

# Deterministic case ids: the same trigger, replayed, names the same case.
_CASE_NAMESPACE = uuid.UUID("6f1d2c0e-7a43-4b9e-9d55-3c1f0b7e2a10")
SOURCE = "scheduler"
BOOKED_STATUSES = frozenset({"booked", "pending", "arrived", "checked-in", "fulfilled"})


def case_id_for(trigger_event_id: str) -> str:
    return "case-" + uuid.uuid5(_CASE_NAMESPACE, trigger_event_id).hex


def idempotency_key(case_id: str, attempt_number: int) -> str:
    return f"{case_id}:{attempt_number}"


def withdrawal_key(case_id: str, attempt_number: int) -> str:
    # Its own key: the notifier must not drop the withdrawal as a repeat of the task.
    return f"{case_id}:{attempt_number}:withdrawal"


def parse_idempotency_key(key: str) -> tuple[str, int] | None:
    case_id, _, number = key.rpartition(":")
    if not case_id or not number.isdigit():
        return None
    return case_id, int(number)


@dataclass(frozen=True)
class CaseFacts:
    """What a command needs to know about its case (ids and codes only)."""

    case_id: str
    patient_id: str
    reason: TriggerKind
    department: str
    timezone: str
    practitioner_id: str | None = None
    appointment_id: str | None = None
    appointment_start: datetime | None = None
    plan_id: str | None = None
    stage_id: str | None = None
    stage_name: str | None = None
    stage_deadline: datetime | None = None
    doctor_notes: str | None = None
    education: tuple[StageEducation, ...] = ()
    opened_at: datetime | None = None
    contacted: bool = False
    site: str | None = None  # the clinic of a chain (common/sites.py)
    concern_note: str | None = None  # only ever on an escalation command
    child: bool = False  # messages address the parent or guardian
    safeguarding: bool = False


def booking_resolution(case: CaseFacts, booking: AppointmentEvent) -> Resolution | None:
    """Does this booking close the case? Recovered when we had reached out, else superseded.

    A booking counts when it is for a visit that is still ahead of the case's opening and,
    where a stage deadline is at stake, for that plan's stage (or the same department) no
    later than the deadline.
    """
    if booking.status not in BOOKED_STATUSES or booking.change in ("cancelled", "deleted"):
        return None
    if booking.start is None:
        return None  # a known visit named by its id alone (an arrival), not a new booking
    if booking.patient_id != case.patient_id:
        return None
    if case.appointment_id == booking.appointment_id and booking.status != "booked":
        return None  # the missed visit itself, reported again
    if case.opened_at is not None and booking.start <= case.opened_at:
        return None
    if case.plan_id is not None and booking.plan_id is not None:
        if booking.plan_id != case.plan_id:
            return None
    elif booking.department != case.department:
        return None
    if case.stage_deadline is not None and booking.start > case.stage_deadline:
        return None
    return "recovered" if case.contacted else "superseded"


def build_command(
    case: CaseFacts,
    attempt: AttemptRecord,
    template: str,
    previous: Sequence[AttemptRecord],
    now: datetime,
    purpose: Purpose | None = None,
    key: str | None = None,
    owner: str | None = None,
    risk: RiskScore | None = None,
) -> NotificationCommand:
    key = key or idempotency_key(case.case_id, attempt.number)
    channel: Channel = attempt.channel
    return NotificationCommand(
        event_id=key,
        occurred_at=now,
        source=SOURCE,
        idempotency_key=key,
        case_id=case.case_id,
        attempt_number=attempt.number,
        patient_id=case.patient_id,
        purpose=purpose or attempt.purpose,
        channel=channel,
        template=template,
        reason=case.reason,
        department=case.department,
        timezone=case.timezone,
        practitioner_id=case.practitioner_id,
        escalate_to=attempt.escalate_to,
        appointment_id=case.appointment_id,
        appointment_start=case.appointment_start,
        plan_id=case.plan_id,
        stage_id=case.stage_id,
        stage_name=case.stage_name,
        stage_deadline=case.stage_deadline,
        doctor_notes=case.doctor_notes,
        education=list(case.education),
        window_start=attempt.planned_at,
        window_end=attempt.window_end,
        note=case.concern_note if attempt.purpose == "escalation" else None,
        owner=owner,
        risk=risk,
        site=case.site,
        audience="guardian" if case.child else "patient",
        safeguarding=case.safeguarding,
        previous_attempts=[
            AttemptSummary(
                attempt_number=p.number,
                channel=p.channel,
                at=p.fired_at or p.planned_at,
                outcome=p.outcome,
            )
            for p in previous
            if p.state == "fired"
        ][-100:],
    )


# A result an administrator or the patient gave: later receipts do not overwrite it.
RESULTS: frozenset[OutcomeKind] = CALL_RESULTS | {"failed", "bounced", "channel_impossible"}
# Kept against later receipts like a result, though nobody reports it as one: the patient
# picked a slot through the message's rebooking link.
KEPT: frozenset[OutcomeKind] = RESULTS | {"booking_requested"}


def should_record(current: str | None, new: OutcomeKind) -> bool:
    """Whether ``new`` replaces the attempt's recorded outcome."""
    return current is None or current not in KEPT or new in RESULTS


def task_still_out(attempt: AttemptRecord, now: datetime) -> bool:
    """A call task already handed out whose window is open and that has no result yet."""
    return (
        attempt.state == "fired"
        and attempt.channel == "call_task"
        and attempt.window_end > now
        and (attempt.outcome is None or attempt.outcome not in RESULTS)
    )


def earlier_no_shows(reason: TriggerKind, no_shows: int) -> int:
    """The patient's no-show cases (``no_shows``) before this one: a no-show case is not
    an earlier one of itself."""
    return max(0, no_shows - (1 if reason == "no_show" else 0))


def risk_score(
    case: CaseFacts, attempts: Sequence[AttemptRecord], earlier_no_shows: int, now: datetime
) -> RiskScore:
    """The documented score (``schemas.events.RiskScore``): who is most likely lost."""
    unanswered = sum(
        1
        for a in attempts
        if a.purpose == "follow_up"
        and a.state == "fired"
        and (a.outcome is None or a.outcome in UNANSWERED or a.outcome == "task_created")
        and a.channel == "call_task"
    )
    days: int | None = None
    deadline_points = 0
    if case.stage_deadline is not None:
        days = max(0, (case.stage_deadline - now).days)
        deadline_points = 4 if days <= 2 else 2 if days <= 7 else 1 if days <= 14 else 0
    plan_stage = case.stage_id is not None
    score = 2 * min(earlier_no_shows, 3) + min(unanswered, 5) + deadline_points
    score += 2 if plan_stage else 0
    return RiskScore(
        score=score,
        earlier_no_shows=earlier_no_shows,
        unanswered_attempts=unanswered,
        days_to_deadline=days,
        plan_stage=plan_stage,
    )
