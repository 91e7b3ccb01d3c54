"""When do we call again? The cadence engine, in one place, without I/O.

Given a case (its reason, zone, stage deadline, the attempts made so far and their
outcomes, the channels that are impossible or opted out) and the moment ``now``,
``next_decision`` says what happens next:

- ``PlanAttempt``: contact the patient on a channel, not before ``planned_at``;
- ``Escalate``: a call task for the responsible doctor (then the supervisor);
- ``Close``: the case ends (unreachable, opted out, escalated) at ``at``.

The rules, in order:

0. A clinical concern goes to the clinician on call at once; a safeguarding case (a child
   not brought to repeated visits, ``Case.safeguard``) to the named safeguarding lead in
   business hours; no ordinary step follows either.
1. Once an escalation was made, the case only waits for it: a handled escalation closes
   the case as escalated; an unanswered one goes to the supervisor once; then it closes.
2. No usable channel left: opted out of everything usable -> closed as opted out; else the
   patient cannot be reached: escalated to the doctor (or supervisor) whenever there is
   one, deadline or not, so somebody finds a way; closed unreachable only without anyone.
3. ``max_attempts`` follow-ups made: unreachable (escalated when a stage deadline is at
   stake), once the last attempt has had its chance (its call window has ended).
4. Otherwise the next step: wait the step's delay after the previous attempt (on the
   clinic's wall clock), never before the previous call task's window ended. A call task
   goes in business hours, and after an unanswered call in another slot of the day; an SMS
   or email goes outside quiet hours. When the step's channel is impossible the fallback
   order picks another.
   A step held (frequency cap, conversation in progress) waits until ``not_before``.
   An attempt the notifier refused (``channel_impossible``) never reached the patient: it
   does not count as a step made, so the same step goes at once to a channel still possible.
   When the carrier found the number a landline or wrong, that channel is a call task (the
   front desk confirms a mobile number or finds the right one) whenever calls are usable;
   a phone that was off or out of reach (``failed``/``unreachable``) keeps its channel.
   Business hours and call slots are the clinic's (its zone); quiet hours are the
   patient's (``patient_timezone`` when known, else the clinic's zone).
   The patient's preferences: their ``preferred_channel`` opens the cadence when usable;
   their ``contact_window`` (their zone) narrows where an attempt is placed, within the
   clinic's hours (a window that never meets them is set aside, not obeyed over them).
   A patient who answered and asked to be called back gets a call task: at the time asked
   for (in business hours) when one was given and it is before the last useful moment,
   else at the next step's time; even after ``max_attempts`` (the patient is reachable).
5. Stage deadline: the last useful moment is the deadline minus ``rebook_lead``. The delay
   shrinks so that the remaining attempts fit before it; a step that would still land after
   it is moved to the earliest allowed moment (on any usable channel); when none is left,
   the case escalates.

Every datetime returned is in UTC. Local arithmetic happens in the case's zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, TypeGuard, cast
from zoneinfo import ZoneInfo

from common.treatment import last_open_moment
from schemas.base import Channel, TriggerKind
from schemas.events import OutcomeKind
from schemas.vocabulary import (
    NOT_A_RESULT,
    NUMBER_LANDLINE,
    NUMBER_WRONG,
    RETRY_ON_CADENCE_DETAILS,
    UNANSWERED,
    PlanningMove,
)
from services.scheduler.policy import WEEKDAYS, CadenceRules, TimeRange

Purpose = Literal["follow_up", "escalation"]
AttemptState = Literal["planned", "fired", "cancelled"]
Resolution = Literal[
    "recovered",
    "declined",
    "opted_out",
    "unreachable",
    "escalated",
    "superseded",
    "deceased",
    "transferred_out",
    "cleared",  # later input showed the trigger's fact false (the patient attended)
    "erased",  # the patient's erasure request (GDPR art. 17)
]
MoveReason = PlanningMove
EscalationReason = Literal[
    "deadline", "attempts_exhausted", "no_channel", "unanswered", "clinical_concern", "safeguarding"
]

# An escalation that failed this way goes on to the supervisor.
ESCALATION_NOT_HANDLED: frozenset[OutcomeKind] = UNANSWERED | {
    "failed",
    "channel_impossible",
    "wrong_number",
    "bounced",
}
# Failures that say nothing about the channel itself (the carrier's "handset off" among
# them: the cadence tries again on its next step, the number is kept).
PASSING_FAILURES = frozenset({"quiet_hours"}) | RETRY_ON_CADENCE_DETAILS
SEARCH_DAYS = 14


# --- inputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptRecord:
    number: int
    purpose: Purpose
    channel: Channel
    state: AttemptState
    planned_at: datetime
    window_end: datetime
    fired_at: datetime | None = None
    outcome: OutcomeKind | None = None
    escalate_to: str | None = None
    # For the outcome callback_requested: when the patient asked to be called, if said.
    callback_at: datetime | None = None
    # Stored with the attempt; the cadence does not read them.
    template: str = ""
    step_index: int | None = None
    tightened: bool = False
    outcome_detail: str | None = None
    outcome_at: datetime | None = None
    withdrawn_at: datetime | None = None


@dataclass(frozen=True)
class CaseView:
    reason: TriggerKind
    timezone: str
    opened_at: datetime  # when the fact happened (the missed visit): the first delay counts from it
    attempts: tuple[AttemptRecord, ...] = ()
    stage_deadline: datetime | None = None
    practitioner_id: str | None = None
    supervisor_id: str | None = None
    opted_out: frozenset[Channel] = frozenset()
    impossible: frozenset[Channel] = frozenset()
    # A frequency cap or a conversation in progress holds the next step until then.
    not_before: datetime | None = None
    # The patient's own zone, for quiet hours; None: the clinic's ``timezone``.
    patient_timezone: str | None = None
    # When a call result reported a clinical concern: the ordinary cadence stops.
    concern_at: datetime | None = None
    # When the case became a safeguarding case (a child not brought to repeated visits).
    safeguarding_at: datetime | None = None
    # The patient's preferences (followup.patients): the channel tried first, and the
    # hours (their zone) inside which messages and calls go, within the clinic's rules.
    preferred_channel: Channel | None = None
    contact_window: TimeRange | None = None


# --- decisions -------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanAttempt:
    channel: Channel
    template: str
    planned_at: datetime
    window_end: datetime
    step_index: int
    tightened: bool = False
    # Why the attempt lands later than the moment it was wanted (for the held metric).
    moved_by: MoveReason | None = None


@dataclass(frozen=True)
class Escalate:
    to: str
    reason: EscalationReason
    template: str
    planned_at: datetime
    window_end: datetime


@dataclass(frozen=True)
class Close:
    resolution: Resolution
    at: datetime


Decision = PlanAttempt | Escalate | Close


def next_decision(rules: CadenceRules, case: CaseView, now: datetime) -> Decision:
    now = now.astimezone(UTC)
    zone = ZoneInfo(case.timezone)
    patient_zone = ZoneInfo(case.patient_timezone) if case.patient_timezone else zone
    made = [a for a in case.attempts if a.state == "fired" and not refused(a)]
    if case.concern_at is not None:
        return _after_concern(rules, case, made, zone, now)
    if case.safeguarding_at is not None:
        return _after_safeguarding(rules, case, made, zone, now)
    escalations = [a for a in made if a.purpose == "escalation"]
    if escalations:
        return _after_escalation(rules, case, escalations, zone, now)

    follow_ups = [a for a in made if a.purpose == "follow_up"]
    last = follow_ups[-1] if follow_ups else None
    # The previous attempt has had its chance once its call window is over.
    settled = max(now, _busy_until(last)) if last else now

    lost = case.impossible | case.opted_out
    usable = [c for c in rules.channels() if c not in lost]
    if not usable:
        reachable = [c for c in rules.channels() if c not in case.impossible]
        if reachable:
            return Close("opted_out", now)
        return _escalate_or_close(rules, case, "no_channel", settled, zone)
    callback = last is not None and last.outcome == "callback_requested"
    callback = callback and "call_task" in usable
    if len(follow_ups) >= rules.max_attempts and not callback:
        return _escalate_or_close(rules, case, "attempts_exhausted", settled, zone)

    step_index = min(len(follow_ups), len(rules.steps) - 1)
    step = rules.steps[step_index]
    base = (last.fired_at or last.planned_at) if last else case.opened_at
    # The previous call is over once answered; otherwise its window must end first.
    earliest = max(now, _busy_until(last)) if last and not callback else now
    last_useful = last_useful_moment(rules, case)
    if callback and last is not None and last.callback_at is not None:
        asked = max(earliest, last.callback_at.astimezone(UTC))
        placed = _place_call(rules, zone, asked, None)
        if _in_time(placed, last_useful):
            moved = _moved_by(rules, "call_task", zone, asked, placed[0])
            return _plan(rules, case, "call_task", placed, step_index, False, last_useful, moved)
    if case.not_before is not None:
        earliest = max(earliest, case.not_before.astimezone(UTC))
    if not follow_ups:
        # Schedule churn: a cancel or move undone within the settle window sends nothing.
        earliest = max(earliest, case.opened_at.astimezone(UTC) + rules.settle_window)
    normal = _wall_add(base, step.delay, zone)
    candidate = normal
    if last_useful is not None:
        # Spread the attempts still allowed over the time left before the last useful moment.
        remaining = rules.max_attempts - len(follow_ups)
        spread = base.astimezone(UTC) + max(timedelta(0), (last_useful - base) / remaining)
        candidate = min(candidate, spread)
    candidate = max(candidate, earliest)

    first: Channel = "call_task" if callback or _number_to_check(case) else step.channel
    preferred = case.preferred_channel
    if not follow_ups and preferred in usable and first == step.channel:
        first = preferred  # the patient's own channel opens the cadence
    order = [first, *[c for c in rules.fallback if c != first]]
    order = [c for c in order if c in usable] or usable
    avoid = _slot_to_avoid(rules, follow_ups, zone)
    window = case.contact_window
    placed = _place(rules, order[0], zone, patient_zone, candidate, avoid, window)
    if _in_time(placed, last_useful):
        moved = _moved_by(rules, order[0], zone, candidate, placed[0])
        return _plan(
            rules, case, order[0], placed, step_index, candidate < normal, last_useful, moved
        )
    for channel in order:
        # Too late for the step as written: the earliest allowed moment on any channel.
        placed = _place(rules, channel, zone, patient_zone, earliest, avoid, window)
        if _in_time(placed, last_useful):
            moved = _moved_by(rules, channel, zone, earliest, placed[0])
            return _plan(rules, case, channel, placed, step_index, True, last_useful, moved)
    return _escalate_or_close(rules, case, "deadline", now, zone)


# --- outcomes --------------------------------------------------------------------------

OutcomeEffect = Literal[
    "concern",
    "recovered",
    "declined",
    "unanswered",
    "callback",
    "channel_lost",
    "opt_out",
    "opt_in",
    "record",
]


def outcome_effect(outcome: OutcomeKind, detail: str | None = None) -> OutcomeEffect:
    """What an outcome does to a case."""
    if outcome == "clinical_concern":
        return "concern"
    if outcome == "answered_rebooked":
        return "recovered"
    if outcome == "answered_declined":
        return "declined"
    if outcome in ("opt_out", "opt_in"):
        return outcome
    if outcome in UNANSWERED:
        return "unanswered"
    if outcome == "callback_requested":
        return "callback"
    if outcome in ("wrong_number", "channel_impossible", "bounced"):
        return "channel_lost"
    if outcome == "failed":
        return "unanswered" if detail in PASSING_FAILURES else "channel_lost"
    return "record"


def lost_channels(outcome: OutcomeKind, channel: Channel, detail: str | None) -> frozenset[Channel]:
    """The channels an outcome shows to be impossible for this case."""
    if detail == "no_contact":
        # (and the messenger tried, if it was one: the others fail on their own if tried)
        return frozenset({"call_task", "sms", "email", channel})
    if outcome == "wrong_number" or detail in ("no_phone", "invalid_phone"):
        # (WhatsApp too writes to the number; its own refusal, if tried, says so.)
        return frozenset({"call_task", "sms"})
    if detail in (NUMBER_LANDLINE, NUMBER_WRONG):
        # The carrier said the number takes no SMS: a call task (to confirm a mobile number,
        # or to find the right one) is still possible and is asked for next.
        return frozenset({"sms"})
    if outcome == "bounced" or detail == "no_email":
        return frozenset({"email"})
    return frozenset({channel})


def _number_to_check(case: CaseView) -> bool:
    """The latest attempt found the number a landline or wrong: a call task comes next, so
    the front desk confirms a mobile number (or finds the right one)."""
    fired = [a for a in case.attempts if a.state == "fired"]
    return bool(fired) and fired[-1].outcome_detail in (NUMBER_LANDLINE, NUMBER_WRONG)


def refused(attempt: AttemptRecord) -> bool:
    """The notifier refused the attempt before it reached anyone (no phone, no email, ...)."""
    return attempt.outcome == "channel_impossible"


# --- the pieces ------------------------------------------------------------------------


def _after_escalation(
    rules: CadenceRules,
    case: CaseView,
    escalations: list[AttemptRecord],
    zone: ZoneInfo,
    now: datetime,
) -> Decision:
    last = escalations[-1]
    handled = last.outcome not in ESCALATION_NOT_HANDLED | NOT_A_RESULT | {None}
    if handled:
        return Close("escalated", now)
    unanswered = last.outcome in ESCALATION_NOT_HANDLED
    at = now if unanswered else max(now, last.window_end)
    supervisor = case.supervisor_id or rules.escalation.supervisor_id
    if supervisor and supervisor not in {e.escalate_to for e in escalations}:
        return _escalation(rules, supervisor, "unanswered", at, zone)
    return Close("escalated", at)


def _after_concern(
    rules: CadenceRules,
    case: CaseView,
    made: list[AttemptRecord],
    zone: ZoneInfo,
    now: datetime,
) -> Decision:
    """A clinical concern: no more ordinary steps; the clinician on call at once, day or
    night (not business hours), then the supervisor if it went unanswered."""
    concern_at = cast(datetime, case.concern_at)
    after = [
        a for a in made if a.purpose == "escalation" and (a.fired_at or a.planned_at) >= concern_at
    ]
    if after:
        return _after_escalation(rules, case, after, zone, now)
    esc = rules.escalation
    target = esc.on_call_id or case.practitioner_id or case.supervisor_id or esc.supervisor_id
    return Escalate(
        to=target or rules.routing.pool_id,  # never dropped for lack of a clinician
        reason="clinical_concern",
        template=esc.concern_template,
        planned_at=now,
        window_end=now + esc.concern_respond_within,
    )


def _after_safeguarding(
    rules: CadenceRules,
    case: CaseView,
    made: list[AttemptRecord],
    zone: ZoneInfo,
    now: datetime,
) -> Decision:
    """A child not brought again: no more ordinary steps; the named safeguarding lead in
    business hours, then the supervisor if it went unanswered."""
    since = cast(datetime, case.safeguarding_at)
    after = [a for a in made if a.purpose == "escalation" and (a.fired_at or a.planned_at) >= since]
    if after:
        return _after_escalation(rules, case, after, zone, now)
    rule = rules.safeguarding
    start = _next_business_moment(rules, zone, now) or now
    return Escalate(
        to=rule.lead_id or rules.routing.pool_id,  # the policy names a lead; never dropped
        reason="safeguarding",
        template=rule.template,
        planned_at=start,
        window_end=start + rule.respond_within,
    )


def _escalate_or_close(
    rules: CadenceRules,
    case: CaseView,
    reason: EscalationReason,
    at: datetime,
    zone: ZoneInfo,
) -> Decision:
    # Without a stage deadline nothing clinical is at stake beyond the visit itself; but a
    # patient no channel can reach goes to a person, who may find a number.
    target = case.practitioner_id or case.supervisor_id or rules.escalation.supervisor_id
    at_stake = case.stage_deadline is not None or reason == "no_channel"
    if not at_stake or target is None:
        return Close("unreachable", at)
    return _escalation(rules, target, reason, at, zone)


def _escalation(
    rules: CadenceRules, to: str, reason: EscalationReason, at: datetime, zone: ZoneInfo
) -> Escalate:
    start = _next_business_moment(rules, zone, at) or at
    return Escalate(
        to=to,
        reason=reason,
        template=rules.escalation.template,
        planned_at=start,
        window_end=start + rules.escalation.respond_within,
    )


def _plan(
    rules: CadenceRules,
    case: CaseView,
    channel: Channel,
    placed: tuple[datetime, datetime],
    step_index: int,
    tightened: bool,
    last_useful: datetime | None,
    moved_by: MoveReason | None = None,
) -> PlanAttempt:
    start, end = placed
    if last_useful is not None and start < last_useful < end:
        end = last_useful
    step = rules.steps[step_index]
    return PlanAttempt(
        channel=channel,
        template=rules.template_for(channel, case.reason, step),
        planned_at=start,
        window_end=end,
        step_index=step_index,
        tightened=tightened,
        moved_by=moved_by,
    )


def _moved_by(
    rules: CadenceRules, channel: Channel, zone: ZoneInfo, wanted: datetime, start: datetime
) -> MoveReason | None:
    """Quiet hours (messages) or business hours (calls) pushed the attempt past ``wanted``;
    a call moved only to another slot of an open day does not count."""
    if start <= wanted:
        return None
    if channel != "call_task":
        return "quiet_hours"
    in_hours = _place_call(rules, zone, wanted, None)
    return "business_hours" if in_hours is None or in_hours[0] > wanted else None


def last_useful_moment(rules: CadenceRules, case: CaseView) -> datetime | None:
    """The latest moment a contact can still lead to a visit before the stage deadline."""
    if case.stage_deadline is None:
        return None
    # A deadline on a day the clinic is closed means the end of the open day before it.
    deadline = last_open_moment(case.stage_deadline, ZoneInfo(case.timezone), rules.closed_on)
    return deadline.astimezone(UTC) - rules.rebook_lead


def _in_time(
    placed: tuple[datetime, datetime] | None, last_useful: datetime | None
) -> TypeGuard[tuple[datetime, datetime]]:
    """Placed at all, and not after the last useful moment."""
    return placed is not None and (last_useful is None or placed[0] <= last_useful)


def _busy_until(attempt: AttemptRecord) -> datetime:
    """A call task may still be called until its window ends; a message is done once sent."""
    if attempt.channel == "call_task":
        return attempt.window_end.astimezone(UTC)
    return (attempt.fired_at or attempt.planned_at).astimezone(UTC)


def _wall_add(moment: datetime, delay: timedelta, zone: ZoneInfo) -> datetime:
    # Aware arithmetic within one zone is wall-clock arithmetic: P1D keeps the local time.
    return (moment.astimezone(zone) + delay).astimezone(UTC)


def _at(day: date, local_time: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, local_time, tzinfo=zone).astimezone(UTC)


def slot_of(rules: CadenceRules, moment: datetime, zone: ZoneInfo) -> str | None:
    local = moment.astimezone(zone).time()
    for name, slot in rules.call_slots.items():
        if slot.contains(local):
            return name
    return None


def _slot_to_avoid(
    rules: CadenceRules, follow_ups: list[AttemptRecord], zone: ZoneInfo
) -> str | None:
    calls = [a for a in follow_ups if a.channel == "call_task"]
    if not calls:
        return None
    last_call = calls[-1]
    if last_call.outcome is not None and last_call.outcome not in UNANSWERED:
        return None
    return slot_of(rules, last_call.planned_at, zone)


def _call_intervals(
    rules: CadenceRules, day: date, zone: ZoneInfo
) -> list[tuple[datetime, datetime, str]]:
    """That day's business hours cut into the named call slots, in UTC, in time order."""
    hours = rules.business_hours.get(WEEKDAYS[day.weekday()])
    if hours is None or rules.closed_on(day):
        return []
    found = []
    for name, slot in rules.call_slots.items():
        start, end = max(hours.start, slot.start), min(hours.end, slot.end)
        if start < end:
            found.append((_at(day, start, zone), _at(day, end, zone), name))
    return sorted(found)


def _place_call(
    rules: CadenceRules, zone: ZoneInfo, earliest: datetime, avoid: str | None
) -> tuple[datetime, datetime] | None:
    first_day = earliest.astimezone(zone).date()
    for offset in range(SEARCH_DAYS):
        for start, end, name in _call_intervals(rules, first_day + timedelta(days=offset), zone):
            if name == avoid:
                continue
            begin = max(start, earliest)
            if end - begin >= rules.min_call_window:
                return begin, min(begin + rules.call_window, end)
    return None


def next_open_day(rules: CadenceRules, zone: ZoneInfo, now: datetime) -> datetime:
    """The start of business hours on the clinic's next open day after today."""
    tomorrow = datetime.combine(now.astimezone(zone).date() + timedelta(days=1), time(0), zone)
    found = _next_business_moment(rules, zone, tomorrow.astimezone(UTC))
    return found or tomorrow.astimezone(UTC) + timedelta(days=SEARCH_DAYS)


def _next_business_moment(
    rules: CadenceRules, zone: ZoneInfo, earliest: datetime
) -> datetime | None:
    first_day = earliest.astimezone(zone).date()
    for offset in range(SEARCH_DAYS):
        day = first_day + timedelta(days=offset)
        hours = rules.business_hours.get(WEEKDAYS[day.weekday()])
        if hours is None or rules.closed_on(day):
            continue
        start, end = _at(day, hours.start, zone), _at(day, hours.end, zone)
        if earliest < end:
            return max(start, earliest)
    return None


def _place_message(
    rules: CadenceRules, channel: Channel, zone: ZoneInfo, earliest: datetime
) -> tuple[datetime, datetime]:
    start = earliest
    quiet = rules.quiet_hours
    local = earliest.astimezone(zone)
    if channel in quiet.channels and quiet.hours.contains(local.time()):
        day = local.date()
        if quiet.hours.wraps and local.time() >= quiet.hours.start:
            day += timedelta(days=1)  # in the evening part: the quiet ends tomorrow morning
        start = _at(day, quiet.hours.end, zone)
    return start, start + rules.message_window


def _place(
    rules: CadenceRules,
    channel: Channel,
    clinic_zone: ZoneInfo,
    patient_zone: ZoneInfo,
    earliest: datetime,
    avoid: str | None,
    window: TimeRange | None = None,
) -> tuple[datetime, datetime] | None:
    placed = _place_plain(rules, channel, clinic_zone, patient_zone, earliest, avoid)
    if window is None or placed is None:
        return placed
    # The patient's window limits the clinic's own placement: move to the window's next
    # opening and place again, until both agree. A window that never meets the clinic's
    # hours (calls in the evening, business hours end at 18:00) is not kept: the clinic's
    # rules are the limit, the window only narrows them.
    moment = earliest
    for _ in range(2 * SEARCH_DAYS):
        found = _place_plain(rules, channel, clinic_zone, patient_zone, moment, avoid)
        if found is None:
            break
        start, end = found
        if window.contains(start.astimezone(patient_zone).time()):
            return start, min(end, _window_close(start, window, patient_zone))
        moment = _window_open(start, window, patient_zone)
    return placed


def _window_open(moment: datetime, window: TimeRange, zone: ZoneInfo) -> datetime:
    """The next moment after ``moment`` at which the window opens (in ``zone``)."""
    local = moment.astimezone(zone)
    opening = _at(local.date(), window.start, zone)
    return (
        opening if opening > moment else _at(local.date() + timedelta(days=1), window.start, zone)
    )


def _window_close(start: datetime, window: TimeRange, zone: ZoneInfo) -> datetime:
    """When the window that ``start`` lies in closes."""
    local = start.astimezone(zone)
    day = local.date()
    if not window.wraps or local.time() >= window.start:
        day += timedelta(days=1) if window.wraps else timedelta(0)
    return _at(day, window.end, zone)


def _place_plain(
    rules: CadenceRules,
    channel: Channel,
    clinic_zone: ZoneInfo,
    patient_zone: ZoneInfo,
    earliest: datetime,
    avoid: str | None,
) -> tuple[datetime, datetime] | None:
    if channel == "call_task":
        return _place_call(rules, clinic_zone, earliest, avoid)
    return _place_message(rules, channel, patient_zone, earliest)
