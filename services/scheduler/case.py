"""A follow-up case and everything that moves it: pure, no I/O.

``Case`` holds one case with its attempts and owns every transition of the README's
"What moves a case". Each method changes the case in memory and notes what else happened
(history entries, commands for the outbox, contacts made or taken back, metrics) in
``case.changes``; the ledger loads a locked case, calls one method and saves the
difference (``attempt_changes``, ``row_changed``) with the noted changes, in one
transaction. When to contact the patient next is the cadence's (``cadence.next_decision``);
what holds a due attempt back is the guards' (``guards.hold_for``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal, NamedTuple, cast
from zoneinfo import ZoneInfo

from common.treatment import next_stage_deadline
from schemas.base import Channel, TriggerKind
from schemas.events import (
    AppointmentEvent,
    AppointmentStatus,
    NotificationCommand,
    OutcomeKind,
    PatientStatusEvent,
    RiskScore,
    StageEducation,
    TreatmentPlanEvent,
    TriggerEvent,
)
from schemas.vocabulary import ATTENDED, went_out
from services.scheduler.cadence import (
    AttemptRecord,
    CaseView,
    Close,
    Escalate,
    PlanAttempt,
    Purpose,
    Resolution,
    lost_channels,
    next_decision,
    outcome_effect,
)
from services.scheduler.cases import (
    CaseFacts,
    booking_resolution,
    build_command,
    case_id_for,
    earlier_no_shows,
    risk_score,
    should_record,
    task_still_out,
    withdrawal_key,
)
from services.scheduler.guards import FiringHeld
from services.scheduler.policy import CadencePolicy, parse_time_range


class CaseState(StrEnum):
    OPEN = "open"  # nothing sent yet
    CONTACTING = "contacting"  # a follow-up went out
    ESCALATING = "escalating"  # waiting for the doctor or the supervisor
    CLOSED = "closed"


# Module constants: enum member lookups are slow in the firing loop.
_OPEN, _CONTACTING, _CLOSED = CaseState.OPEN, CaseState.CONTACTING, CaseState.CLOSED
# Reasons whose fact a later arrival (or a cancellation before the start) contradicts.
PROVISIONAL: frozenset[TriggerKind] = frozenset({"no_show", "late_cancellation"})
# Reasons a later booking of the same visit in the same slot undoes (schedule churn).
UNDOABLE: frozenset[TriggerKind] = frozenset({"late_cancellation", "clinic_cancellation"})
CorrectionResult = Literal["applied", "recorded", "duplicate"]
HistoryEvent = Literal[
    "opened",
    "joined",
    "planned",
    "fired",
    "held",
    "expired",
    "task_expired",
    "outcome",
    "channels_lost",
    "corrected",
    "reopened",
    "escalation_planned",
    "booked",
    "cleared",
    "deadline_changed",
    "opt_out",
    "opt_in",
    "withdrawn",
    "concern",
    "safeguarding",
    "closed",
    "preferences",
]
Metric = Literal[
    "opened",
    "closed",
    "planned",
    "fired",
    "lateness",
    "first_contact",
    "escalation",
    "deadline_miss",
    "held",
    "correction",
    "feedback_asked",
    "feedback_rating",
]


# Named tuples, not dataclasses: a firing batch makes thousands of them.
class HistoryEntry(NamedTuple):
    event: HistoryEvent
    state: CaseState
    detail: Mapping[str, Any]


class Tally(NamedTuple):
    """A metric to count once the transaction committed."""

    metric: Metric
    label: str = ""
    value: float = 1.0
    department: str | None = None  # also counted per department (opened, closed, escalation)
    site: str | None = None  # the case's clinic (a bounded label once counted)


class Contact(NamedTuple):
    """A follow-up that went out (for the frequency caps)."""

    attempt_number: int
    channel: Channel
    at: datetime


@dataclass
class Changes:
    history: list[HistoryEntry] = field(default_factory=list)
    commands: list[NotificationCommand] = field(default_factory=list)
    contacts: list[Contact] = field(default_factory=list)
    uncounted: list[int] = field(default_factory=list)  # attempts that never went out
    tallies: list[Tally] = field(default_factory=list)


@dataclass(frozen=True)
class Context:
    """What a transition may look at besides the case: the moment, the policy, the
    patient's opt-outs (over all their cases)."""

    now: datetime
    policy: CadencePolicy
    opted_out: frozenset[Channel] = frozenset()
    # The patient's no-show cases (this one included), for the risk score at firing.
    no_shows: int = 0
    # For a trigger: a child's birth date (followup.patients sends no adult's) and the
    # patient's missed visits with the trigger's own, for the safeguarding rule.
    birth_date: date | None = None
    missed_visits: int = 0


@dataclass(frozen=True)
class Preferences:
    """What the patient asked for (followup.patients, no personal data): their zone, the
    channel to try first, the hours to be reached in (``HH:MM-HH:MM``, their zone)."""

    timezone: str | None = None
    preferred_channel: Channel | None = None
    contact_window: str | None = None

    @classmethod
    def of(cls, event: PatientStatusEvent) -> Preferences:
        window = event.contact_window
        return cls(
            event.timezone,
            event.preferred_channel,
            f"{window.start}-{window.end}" if window is not None else None,
        )


@dataclass(frozen=True)
class Correction:
    correction_id: str
    outcome: OutcomeKind
    reported_by: str
    detail: str | None = None


@dataclass(frozen=True)
class AttemptChanges:
    inserted: list[AttemptRecord]
    updated: list[AttemptRecord]
    deleted: list[int]


@dataclass
class Case:
    case_id: str
    patient_id: str
    reason: TriggerKind
    department: str
    timezone: str
    state: CaseState
    trigger_event_id: str
    fact_at: datetime
    opened_at: datetime
    updated_at: datetime
    resolution: Resolution | None = None
    closed_at: datetime | None = None
    appointment_id: str | None = None
    appointment_start: datetime | None = None
    practitioner_id: str | None = None
    supervisor_id: str | None = None
    plan_id: str | None = None
    stage_id: str | None = None
    stage_name: str | None = None
    doctor_notes: str | None = None
    # The stage explained for the patient (from the plan), one per language.
    education: tuple[StageEducation, ...] = ()
    stage_deadline: datetime | None = None
    patient_timezone: str | None = None
    preferred_channel: Channel | None = None
    contact_window: str | None = None  # HH:MM-HH:MM, the patient's zone
    impossible: frozenset[Channel] = frozenset()
    first_contact_at: datetime | None = None
    review_at: datetime | None = None
    # A clinical concern reported on a call; the note (the administrator's words) lives
    # here alone: never in history, logs or metrics, only on the escalation command.
    concern_at: datetime | None = None
    concern_note: str | None = field(default=None, repr=False)
    site: str | None = None  # the clinic of a chain whose profile's rules apply
    # A child's case (under the policy's safeguarding age when it opened): messages address
    # the parent or guardian. The birth date itself is never on the case.
    child: bool = False
    # When repeated missed visits of a child made it a safeguarding case.
    safeguarding_at: datetime | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    changes: Changes = field(default_factory=Changes)
    # As loaded (or as first inserted): the saver writes only the difference.
    _row0: tuple[Any, ...] | None = field(default=None, repr=False)
    _attempts0: dict[int, AttemptRecord] = field(default_factory=dict, repr=False)

    # --- loading and saving -------------------------------------------------------------

    def loaded(self) -> Case:
        """Mark the current state as what the database holds."""
        self._row0 = self.row()
        self._attempts0 = {a.number: a for a in self.attempts}
        return self

    def row(self) -> tuple[Any, ...]:
        """The columns a transition may change, in ``ledger.UPDATE_CASE`` order."""
        return (
            self.state.value,
            self.resolution,
            self.closed_at,
            self.supervisor_id,
            self.stage_deadline,
            sorted(self.impossible) if self.impossible else [],
            self.first_contact_at,
            self.review_at,
            self.concern_at,
            self.concern_note,
            self.preferred_channel,
            self.contact_window,
            self.patient_timezone,
            self.child,
            self.safeguarding_at,
        )

    def changed_row(self) -> tuple[Any, ...] | None:
        """The row to write, or None when nothing in it changed since loading."""
        row = self.row()
        return row if self._row0 is not None and self._row0 != row else None

    def row_changed(self) -> bool:
        return self.changed_row() is not None

    def attempt_changes(self) -> AttemptChanges:
        now = {a.number: a for a in self.attempts}
        return AttemptChanges(
            inserted=[a for n, a in now.items() if n not in self._attempts0],
            # A changed attempt is a new object (they are frozen): identity is enough.
            updated=[
                a for n, a in now.items() if n in self._attempts0 and self._attempts0[n] is not a
            ],
            deleted=[n for n in self._attempts0 if n not in now],
        )

    # --- what it is -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is _CLOSED

    def facts(self) -> CaseFacts:
        return CaseFacts(
            case_id=self.case_id,
            patient_id=self.patient_id,
            reason=self.reason,
            department=self.department,
            timezone=self.timezone,
            practitioner_id=self.practitioner_id,
            appointment_id=self.appointment_id,
            appointment_start=self.appointment_start,
            plan_id=self.plan_id,
            stage_id=self.stage_id,
            stage_name=self.stage_name,
            stage_deadline=self.stage_deadline,
            doctor_notes=self.doctor_notes,
            education=self.education,
            opened_at=self.opened_at,
            contacted=self.first_contact_at is not None,
            concern_note=self.concern_note,
            site=self.site,
            child=self.child,
            safeguarding=self.safeguarding_at is not None,
        )

    def attempt(self, number: int) -> AttemptRecord | None:
        return next((a for a in self.attempts if a.number == number), None)

    def same_follow_up(self, trigger: TriggerEvent) -> bool:
        """One patient's reasons about one visit or one stage are one follow-up: the same
        reason, the same appointment, or the same plan stage joins this case."""
        if trigger.patient_id != self.patient_id or self.closed:
            return False
        if trigger.kind == self.reason:
            return True
        if trigger.appointment_id is not None and trigger.appointment_id == self.appointment_id:
            return True
        return (
            trigger.plan_id is not None
            and trigger.stage_id is not None
            and (trigger.plan_id, trigger.stage_id) == (self.plan_id, self.stage_id)
        )

    # --- open and join ----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        trigger: TriggerEvent,
        ctx: Context,
        plan: TreatmentPlanEvent | None = None,
        completions: Mapping[str, datetime] | None = None,
        preferences: Preferences | None = None,
    ) -> Case:
        """A new case for ``trigger`` (not yet planned: call ``plan_next``)."""
        stage_name = doctor_notes = supervisor = None
        education: tuple[StageEducation, ...] = ()
        deadline = trigger.stage_deadline
        practitioner = trigger.practitioner_id
        if plan is not None:
            supervisor = plan.supervisor_id
            practitioner = practitioner or plan.responsible_practitioner_id
            closed = ctx.policy.rules_for(trigger.department, trigger.kind, trigger.site).closed_on
            found = next_stage_deadline(plan, dict(completions or {}), closed)
            stage = next((s for s in plan.stages if s.stage_id == trigger.stage_id), None)
            stage = stage or (found.stage if found is not None else None)
            if stage is not None:
                stage_name, doctor_notes = stage.name, stage.notes
                education = tuple(stage.education)
                if deadline is None and found is not None and found.stage == stage:
                    deadline = found.deadline
        fact_at = trigger.detected_at
        if trigger.kind == "no_show" and trigger.appointment_start is not None:
            fact_at = trigger.appointment_start  # the first delay counts from the missed visit
        case = cls(
            case_id=case_id_for(trigger.event_id),
            patient_id=trigger.patient_id,
            reason=trigger.kind,
            department=trigger.department,
            timezone=trigger.timezone,
            state=CaseState.OPEN,
            trigger_event_id=trigger.event_id,
            fact_at=fact_at,
            opened_at=ctx.now,
            updated_at=ctx.now,
            appointment_id=trigger.appointment_id,
            appointment_start=trigger.appointment_start,
            practitioner_id=practitioner,
            supervisor_id=supervisor,
            plan_id=trigger.plan_id,
            stage_id=trigger.stage_id,
            stage_name=stage_name,
            doctor_notes=doctor_notes,
            education=education,
            stage_deadline=deadline,
            patient_timezone=trigger.patient_timezone,
            site=trigger.site,
        )
        if preferences is not None:
            case._prefer(preferences)
        case._note("opened", trigger=trigger.event_id)
        case._tally("opened", trigger.kind, department=True)
        case.safeguard(trigger, ctx)
        return case

    def join(self, trigger: TriggerEvent, ctx: Context) -> None:
        """A second trigger about the same follow-up: recorded; a stage deadline it brings
        and the case lacked (or an earlier one) now bounds the cadence."""
        self._note("joined", trigger=trigger.event_id, reason=trigger.kind)
        if self.safeguard(trigger, ctx):
            self.withdraw_tasks(ctx.now)  # the ordinary call tasks still out are moot
            self.plan_next(ctx, replace_planned=True)
        deadline = trigger.stage_deadline
        if deadline is not None and (self.stage_deadline is None or deadline < self.stage_deadline):
            self.stage_deadline = deadline
            self._note("deadline_changed", stage_deadline=deadline.isoformat())
            self.plan_next(ctx, replace_planned=True)

    def safeguard(self, trigger: TriggerEvent, ctx: Context) -> bool:
        """Children who were not brought: a patient under the policy's safeguarding age on
        the day of the visit makes a child's case (messages address the parent or
        guardian); their ``missed_visits``-th missed visit (``ctx.missed_visits``, this one
        included) makes it a safeguarding case for the named lead. True when it became one
        now. Neither the birth date nor the age goes into the history."""
        rule = ctx.policy.rules_for(self.department, self.reason).safeguarding
        moment = trigger.appointment_start or trigger.detected_at
        if not rule.is_child(ctx.birth_date, moment.astimezone(ZoneInfo(self.timezone)).date()):
            return False
        self.child = True
        if (
            trigger.kind != "no_show"
            or self.safeguarding_at is not None
            or self.closed
            or ctx.missed_visits < rule.missed_visits
        ):
            return False
        self.safeguarding_at = ctx.now
        self._note("safeguarding", missed_visits=ctx.missed_visits, to=rule.lead_id)
        return True

    def task_expired(self, ctx: Context) -> None:
        """Our own call task's window ended without a result: as unanswered."""
        if self.closed:
            return
        self._note("task_expired")
        self.plan_next(ctx, replace_planned=True)

    # --- outcomes ---------------------------------------------------------------------------

    def record_outcome(
        self,
        number: int,
        kind: OutcomeKind,
        channel: Channel,
        ctx: Context,
        detail: str | None = None,
        respond_by: datetime | None = None,
        note: str | None = None,
    ) -> None:
        """The notifier or the front desk reported ``kind`` for attempt ``number``
        (``note``: what the administrator wrote, for a clinical concern)."""
        attempt = self.attempt(number)
        if attempt is not None and should_record(attempt.outcome, kind):
            # A callback request may say when (respond_by): the next call is planned then.
            asked = respond_by if kind == "callback_requested" else None
            self._set_outcome(attempt, kind, detail, asked, ctx.now)
        if attempt is not None and attempt.state == "fired" and not went_out(kind, detail):
            # Refused or failed before it reached anyone: not a contact for the caps.
            self.changes.uncounted.append(number)
        self._note("outcome", attempt=number, outcome=kind, detail=detail)
        if kind == "clinical_concern":
            self.concern(number, note, ctx)
            return
        if self.closed or kind in ("opt_out", "opt_in"):
            return  # recorded; a closed case stays closed
        escalation = attempt is not None and attempt.purpose == "escalation"
        self._apply(kind, channel, detail, escalation, ctx)

    def concern(self, number: int, note: str | None, ctx: Context) -> None:
        """The patient reported a symptom or danger sign on the call: the ordinary cadence
        stops and the clinician on call gets an escalation at once, with the note. Even a
        case closed meanwhile (a booking) opens again: a danger sign is never dropped."""
        if self.closed:
            self.state, self.resolution, self.closed_at = CaseState.CONTACTING, None, None
            self._note("reopened")
        if note:
            self.concern_note = (
                note if self.concern_note is None else f"{self.concern_note}\n{note}"
            )
        if self.concern_at is None:
            self.concern_at = ctx.now
        self._note("concern", attempt=number)  # the note itself stays off the history
        self.withdraw_tasks(ctx.now)  # the ordinary call tasks still out are moot
        self.plan_next(ctx, replace_planned=True)

    def _apply(
        self,
        kind: OutcomeKind,
        channel: Channel,
        detail: str | None,
        escalation: bool,
        ctx: Context,
    ) -> None:
        effect = outcome_effect(kind, detail)
        if effect == "concern":
            self.concern(0, None, ctx)
        elif effect in ("recovered", "declined"):
            self.close(cast(Resolution, effect), ctx.now)
        elif effect == "channel_lost":
            lost = lost_channels(kind, channel, detail) - self.impossible
            if lost:
                self.impossible = self.impossible | lost
                self._note("channels_lost", channels=sorted(lost), outcome=kind, detail=detail)
            self.plan_next(ctx, replace_planned=True)
        elif effect in ("unanswered", "callback") or escalation:
            self.plan_next(ctx, replace_planned=True)

    def correct(
        self, number: int, correction: Correction, ctx: Context, *, other_open: bool
    ) -> CorrectionResult:
        """An administrator replaces a wrong outcome of a fired attempt. A case closed by the
        wrong outcome itself opens again, unless ``other_open`` (another open case of the
        patient for the same reason)."""
        attempt = self.attempt(number)
        if attempt is None or attempt.state != "fired":
            raise LookupError("no such fired attempt")
        was, was_detail = attempt.outcome, attempt.outcome_detail
        self._set_outcome(attempt, correction.outcome, correction.detail, None, ctx.now)
        self._note(
            "corrected",
            attempt=number,
            to=correction.outcome,
            by=correction.reported_by,
            correction=correction.correction_id,
            **{"from": was},
        )
        self._tally("correction")
        if self.closed:
            closed_by_it = was is not None and self.resolution == outcome_effect(was, was_detail)
            if not closed_by_it or other_open:
                return "recorded"  # closed for another reason (a booking, deceased, ...)
            self.state, self.resolution, self.closed_at = CaseState.CONTACTING, None, None
            self.updated_at = ctx.now
            self._note("reopened")
        escalation = attempt.purpose == "escalation"
        self._apply(correction.outcome, attempt.channel, correction.detail, escalation, ctx)
        self.plan_next(ctx)  # a reopened case needs its next step
        return "applied"

    def opt(self, kind: Literal["opt_out", "opt_in"], channel: Channel, ctx: Context) -> None:
        """STOP (or START) on a channel of the patient: planned steps are planned afresh
        (``ctx.opted_out`` already says the new state)."""
        self._note(kind, channel=channel)
        self.plan_next(ctx, replace_planned=True)

    # --- appointments, plans, the patient -------------------------------------------------

    def appointment(self, event: AppointmentEvent, ctx: Context) -> None:
        """A change of one of the patient's appointments: it may clear the case (the missed
        visit was attended after all) or satisfy it (a new visit booked)."""
        if self.closed:
            return
        status_at = event.status_at
        if self.reason in UNDOABLE and status_at is None:
            status_at = event.occurred_at  # a booking message seldom says when it took effect
        if self.contradicted_by(event.appointment_id, event.start, event.status, status_at):
            self._note("cleared", appointment=event.appointment_id, status=event.status)
            self.withdraw_tasks(ctx.now)
            self.close("cleared", ctx.now)
            return
        if (
            self.reason in UNDOABLE
            and event.appointment_id == self.appointment_id
            and (event.start or self.appointment_start) == self.appointment_start
        ):
            return  # the cancelled booking itself, reported late: neither undo nor rebooking
        resolution = booking_resolution(self.facts(), event)
        if resolution is not None:
            self._note("booked", appointment=event.appointment_id)
            self.withdraw_tasks(ctx.now)  # nobody should call to rebook now
            self.close(resolution, ctx.now)

    def contradicted_by(
        self,
        appointment_id: str | None,
        start: datetime | None,
        status: AppointmentStatus,
        status_at: datetime | None,
    ) -> bool:
        return contradicts(
            self.reason,
            self.appointment_id,
            self.appointment_start,
            appointment_id,
            start,
            status,
            status_at,
            self.fact_at,
        )

    def deadline_changed(self, deadline: datetime, supervisor_id: str | None, ctx: Context) -> None:
        """The doctor changed the plan: the cadence is planned again against it."""
        if self.closed or deadline == self.stage_deadline:
            return
        self.stage_deadline, self.supervisor_id = deadline, supervisor_id
        self._note("deadline_changed", stage_deadline=deadline.isoformat())
        self.plan_next(ctx, replace_planned=True)

    def preferences_changed(self, preferences: Preferences, ctx: Context) -> None:
        """The patient said how and when to reach them (or their zone is known now): the
        planned step is planned again with it."""
        if self.closed:
            return
        before = (self.preferred_channel, self.contact_window, self.patient_timezone)
        self._prefer(preferences)
        if (self.preferred_channel, self.contact_window, self.patient_timezone) == before:
            return
        self._note("preferences", channel=self.preferred_channel, window=self.contact_window)
        self.plan_next(ctx, replace_planned=True)

    def _prefer(self, preferences: Preferences) -> None:
        self.preferred_channel = preferences.preferred_channel
        self.contact_window = preferences.contact_window
        # The trigger's zone stays unless the patient's record now says one.
        self.patient_timezone = preferences.timezone or self.patient_timezone

    def patient_left(
        self, resolution: Literal["deceased", "transferred_out", "erased"], now: datetime
    ) -> None:
        """Deceased, transferred out or erased: what is out is withdrawn, the case closes."""
        if resolution == "erased":
            self.forget_free_text()  # first: a withdrawal command must not carry them
        self.withdraw_tasks(now)
        self.close(resolution, now)

    def forget_free_text(self) -> None:
        """Erasure or retention: the doctor's notes and the stage's name go, ids stay."""
        self.stage_name = self.doctor_notes = None

    # --- firing ---------------------------------------------------------------------------

    def fire(
        self, number: int, ctx: Context, hold: FiringHeld | None = None
    ) -> AttemptRecord | None:
        """Attempt ``number`` is due: held (planned afresh from ``hold.until``), expired
        (planned afresh) or fired (its command for the outbox). Returns the fired attempt."""
        attempt = self.attempt(number)
        if attempt is None or attempt.state != "planned" or self.closed:
            return None
        if hold is not None:
            self.attempts.remove(attempt)  # never sent: nothing to undo
            self._note("held", attempt=number, rule=hold.rule, until=hold.until.isoformat())
            self._tally("held", hold.rule)
            self.plan_next(ctx, not_before=hold.until)
            return None
        if ctx.now >= attempt.window_end:
            # Useless now (the scheduler was away longer than the window): plan afresh.
            self._replace(attempt, state="cancelled")
            self._note("expired", attempt=number)
            self.plan_next(ctx)
            return None
        previous = list(self.attempts)  # the command lists the attempts before this one
        fired = self._replace(attempt, state="fired", fired_at=ctx.now)
        facts = self.facts()
        owner = risk = None
        if fired.purpose == "escalation":
            owner = fired.escalate_to
        elif fired.channel == "call_task":
            rules = ctx.policy.rules_for(self.department, self.reason, self.site)
            owner = rules.routing.owner_for(self.practitioner_id)  # never without an owner
            risk = self.risk(ctx.no_shows, ctx.now, previous)
        self.changes.commands.append(
            build_command(facts, fired, fired.template, previous, ctx.now, owner=owner, risk=risk)
        )
        first = self.first_contact_at is None and fired.purpose == "follow_up"
        if first:
            self.first_contact_at = ctx.now
            self._tally("first_contact", value=(ctx.now - self.opened_at).total_seconds())
        if self.state is _OPEN:
            self.state = _CONTACTING
        self.updated_at = ctx.now
        if fired.purpose == "follow_up":
            self.changes.contacts.append(Contact(number, fired.channel, ctx.now))
        self._note("fired", attempt=number, channel=fired.channel)
        self._tally("lateness", value=(ctx.now - attempt.planned_at).total_seconds())
        self._tally("fired", fired.channel)
        self.plan_next(ctx)
        return fired

    def risk(
        self, no_shows: int, now: datetime, attempts: list[AttemptRecord] | None = None
    ) -> RiskScore:
        """The case's risk score (``RiskScore``); ``no_shows``: the patient's no-show
        cases, this one included (it is not an earlier one)."""
        earlier = earlier_no_shows(self.reason, no_shows)
        return risk_score(self.facts(), attempts or self.attempts, earlier, now)

    def review(self, ctx: Context) -> None:
        """The case asked to be looked at again (a close that waited for a window to end)."""
        self.review_at = None
        self.plan_next(ctx)

    # --- planning ---------------------------------------------------------------------------

    def plan_next(
        self,
        ctx: Context,
        *,
        replace_planned: bool = False,
        not_before: datetime | None = None,
    ) -> None:
        """Ask the cadence for the next step, unless one is planned already."""
        if self.closed:
            return
        if replace_planned:
            # Never sent, so nothing to undo: the cadence decides afresh from what happened.
            self.attempts = [a for a in self.attempts if a.state != "planned"]
        if any(a.state == "planned" for a in self.attempts):
            return
        rules = ctx.policy.rules_for(self.department, self.reason, self.site)
        view = CaseView(
            reason=self.reason,
            timezone=self.timezone,
            opened_at=self.fact_at,
            attempts=tuple(self.attempts),
            stage_deadline=self.stage_deadline,
            practitioner_id=self.practitioner_id,
            supervisor_id=self.supervisor_id,
            opted_out=ctx.opted_out,
            impossible=self.impossible,
            not_before=not_before,
            patient_timezone=self.patient_timezone,
            concern_at=self.concern_at,
            safeguarding_at=self.safeguarding_at,
            preferred_channel=self.preferred_channel,
            contact_window=parse_time_range(self.contact_window) if self.contact_window else None,
        )
        decision = next_decision(rules, view, ctx.now)
        number = max((a.number for a in self.attempts), default=0) + 1
        if not isinstance(decision, Close):
            self.review_at = None  # a step is planned again: nothing to look at later
        if isinstance(decision, PlanAttempt):
            self._add_attempt(
                number,
                "follow_up",
                decision.channel,
                decision.template,
                decision.planned_at,
                decision.window_end,
                step_index=decision.step_index,
                tightened=decision.tightened,
            )
            self._note(
                "planned",
                attempt=number,
                channel=decision.channel,
                planned_at=decision.planned_at.isoformat(),
                tightened=decision.tightened,
                moved_by=decision.moved_by,
            )
            self._tally("planned", decision.channel)
            if decision.moved_by is not None:
                self._tally("held", decision.moved_by)
        elif isinstance(decision, Escalate):
            first_escalation = not any(a.purpose == "escalation" for a in self.attempts)
            self._add_attempt(
                number,
                "escalation",
                "call_task",
                decision.template,
                decision.planned_at,
                decision.window_end,
                escalate_to=decision.to,
            )
            self.state, self.updated_at = CaseState.ESCALATING, ctx.now
            detail: dict[str, Any] = {"attempt": number, "reason": decision.reason}
            detail["to"] = decision.to
            if decision.reason == "no_channel":
                detail["channels_lost"] = sorted(self.impossible)  # why: visible on the case
            self._note("escalation_planned", **detail)
            self._tally("escalation", decision.reason, department=True)
            self._tally("planned", "call_task")
            if decision.reason == "deadline" and first_escalation:
                self._tally("deadline_miss")
        elif decision.at <= ctx.now:
            self.close(decision.resolution, ctx.now)
        else:
            self.review_at = decision.at

    # --- closing and withdrawing ---------------------------------------------------------

    def close(self, resolution: Resolution, now: datetime) -> None:
        if self.closed:
            return
        self.state, self.resolution, self.closed_at = CaseState.CLOSED, resolution, now
        self.review_at, self.updated_at = None, now
        self.attempts = [
            replace(a, state="cancelled") if a.state == "planned" else a for a in self.attempts
        ]
        self._note("closed", resolution=resolution)
        self._tally("closed", resolution, department=True)

    def withdraw_tasks(self, now: datetime) -> None:
        """Withdraw the case's call tasks still out (window open, no result yet)."""
        for attempt in list(self.attempts):
            if not task_still_out(attempt, now):
                continue
            withdrawn = self._replace(attempt, withdrawn_at=now)
            command = build_command(
                self.facts(),
                withdrawn,
                withdrawn.template,
                self.attempts,
                now,
                purpose="withdrawal",
                key=withdrawal_key(self.case_id, attempt.number),
            )
            self.changes.commands.append(command)
            self._note("withdrawn", attempt=attempt.number)

    # --- pieces ---------------------------------------------------------------------------

    def _set_outcome(
        self,
        attempt: AttemptRecord,
        kind: OutcomeKind,
        detail: str | None,
        callback_at: datetime | None,
        now: datetime,
    ) -> None:
        self._replace(
            attempt, outcome=kind, outcome_detail=detail, outcome_at=now, callback_at=callback_at
        )

    def _replace(self, attempt: AttemptRecord, **changes: Any) -> AttemptRecord:
        new = AttemptRecord(**{**attempt.__dict__, **changes})  # dataclasses.replace, faster
        self.attempts[self.attempts.index(attempt)] = new
        return new

    def _add_attempt(
        self,
        number: int,
        purpose: Purpose,
        channel: Channel,
        template: str,
        planned_at: datetime,
        window_end: datetime,
        *,
        step_index: int | None = None,
        tightened: bool = False,
        escalate_to: str | None = None,
    ) -> None:
        self.attempts.append(
            AttemptRecord(
                number=number,
                purpose=purpose,
                channel=channel,
                state="planned",
                planned_at=planned_at,
                window_end=window_end,
                escalate_to=escalate_to,
                template=template,
                step_index=step_index,
                tightened=tightened,
            )
        )

    def _note(self, event: HistoryEvent, **detail: Any) -> None:
        self.changes.history.append(HistoryEntry(event, self.state, detail))

    def _tally(
        self, metric: Metric, label: str = "", value: float = 1.0, *, department: bool = False
    ) -> None:
        self.changes.tallies.append(
            Tally(metric, label, value, self.department if department else None, self.site)
        )


def contradicts(
    reason: TriggerKind,
    case_appointment: str | None,
    case_start: datetime | None,
    appointment_id: str | None,
    start: datetime | None,
    status: AppointmentStatus,
    status_at: datetime | None,
    fact_at: datetime | None = None,
) -> bool:
    """Does what is known of the case's own visit show its trigger false? An arrival for
    the same slot clears a no-show or late cancellation; a cancellation that took effect
    before the start clears a no-show; the visit booked again in its slot after a
    cancellation (``fact_at``) clears that cancellation."""
    if appointment_id is None or appointment_id != case_appointment:
        return False
    if reason not in PROVISIONAL and reason not in UNDOABLE:
        return False
    start = start or case_start  # a message naming the visit by id alone means that visit
    if case_start is not None and start != case_start:
        return False  # another slot of the same appointment: a booking, not a correction
    if reason in UNDOABLE and status == "booked":
        # Schedule churn: the cancellation undone, the visit back in its slot. Only a
        # status set after the cancellation counts (not the booking it cancelled).
        return status_at is not None and fact_at is not None and status_at > fact_at
    if status in ATTENDED:
        return True
    return (
        reason == "no_show"
        and status == "cancelled"
        and status_at is not None
        and start is not None
        and status_at < start
    )


@dataclass(frozen=True)
class KnownVisit:
    """The latest status the scheduler saw for an appointment on ``followup.appointments``."""

    start: datetime | None
    status: AppointmentStatus
    status_at: datetime | None = None


NotOpened = Literal["not_contactable", "attended"]


def why_not_open(
    trigger: TriggerEvent, patient_status: str | None, visit: KnownVisit | None
) -> NotOpened | None:
    """A trigger opens nothing for a patient who must not be contacted (deceased,
    transferred out), nor for a visit the clinic already told us was attended."""
    if patient_status is not None and patient_status != "active":
        return "not_contactable"
    if visit is not None and contradicts(
        trigger.kind,
        trigger.appointment_id,
        trigger.appointment_start,
        trigger.appointment_id,
        visit.start,
        visit.status,
        visit.status_at,
        trigger.occurred_at,
    ):
        return "attended"
    return None


def opted_channels(channels: Iterable[str]) -> frozenset[Channel]:
    return frozenset(cast(Iterable[Channel], channels))
