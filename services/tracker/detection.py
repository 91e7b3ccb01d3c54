"""Who is slipping away: the tracker's detection rules, as plain data and an injected time.

The Detector keeps one PatientState per patient (appointments, treatment plans, open
call tasks, the triggers already emitted) and a heap of wake-ups. Events only record
facts and schedule wake-ups; ``due(now)`` pops the wake-ups that are due and evaluates
just those patients, so the work done is proportional to what is due, not to what is
tracked. A wake-up is only a hint: evaluation recomputes the rule from the state, so a
stale wake-up (rescheduled, arrived, cancelled) finds nothing and costs little.

Each fact is emitted once: its deterministic trigger id is recorded in the patient's
state, which the worker persists to a changelog together with the rest of the state.
"""

from __future__ import annotations

import heapq
import math
import sys
from collections.abc import Callable, Iterator, KeysView, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, NoReturn
from zoneinfo import ZoneInfo

from pydantic import ConfigDict, TypeAdapter, WrapSerializer
from pydantic_core import TzInfo

from common.treatment import StageDeadline, end_of_local_day, next_stage_deadline
from schemas.base import TriggerKind
from schemas.events import (
    AppointmentEvent,
    OutcomeEvent,
    PatientStatusEvent,
    TreatmentPlanEvent,
    TriggerEvent,
)
from schemas.vocabulary import NOT_A_RESULT, UNANSWERED

SOURCE = "tracker"

# A no-show is only possible for a visit that was confirmed and not yet attended.
AWAITING_ARRIVAL = frozenset({"booked"})
ATTENDED = frozenset({"arrived", "checked-in", "fulfilled"})
# A booked next visit: confirmed and not cancelled or missed.
ACTIVE = frozenset({"booked", "arrived", "checked-in", "fulfilled"})


@dataclass(frozen=True)
class DetectionRules:
    """The clinic's tolerances (configuration, validated once at start-up)."""

    no_show_grace: timedelta = timedelta(minutes=15)
    late_cancellation_window: timedelta = timedelta(hours=24)
    stage_lead_days: int = 7
    # How long an appointment stays in memory after its start; what it emitted stays longer.
    retention: timedelta = timedelta(days=30)
    default_department: str = "unknown"
    default_timezone: str = "UTC"
    # Sources (the events' `source`) whose scheduling system never reports arrivals: only
    # an explicit no-show counts there, the timer never fires (see docs/integration/hl7.md).
    explicit_no_shows_only: frozenset[str] = frozenset()
    # "After a visit in department X the next one is due within N days": a patient who
    # attended and booked nothing gets a gentle next_visit_due case stage_lead_days before
    # (no treatment plan needed). Department -> days.
    next_visit_days: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Detection:
    """A trigger and the moment its fact became detectable (for the detection-lag metric)."""

    trigger: TriggerEvent
    detectable_at: datetime


# Plain slotted dataclasses, not pydantic models: a million of them are held in memory, and
# a model instance carries a __dict__ and a set of the fields set (about 1.5 KB more per
# tracked appointment, see bench/tracker_bench.py). pydantic still validates and serialises
# them for the changelog (STATE_JSON), in the same JSON as before.
_FORBID_EXTRA = ConfigDict(extra="forbid")


def _refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise TypeError("a patient's empty collection is shared: add to it through PatientState")


class _SharedEmptyDict(dict[Any, Any]):
    """The one empty dict every patient without plans, call tasks, aliases... points at.

    Most patients hold one appointment and nothing else; five empty dicts and a list each
    were 376 of their ~1,700 resident bytes (bench/tracker_bench.py). Reads see an ordinary
    empty dict (equal to ``{}``, serialised as ``{}``); a write raises instead of reaching
    every patient at once, and PatientState's writers give the patient its own dict first.
    """

    __slots__ = ()
    __setitem__ = setdefault = update = __ior__ = _refuse


class _SharedEmptyList(list[Any]):
    __slots__ = ()
    append = extend = insert = __setitem__ = __iadd__ = _refuse


_NO_DICT: Any = _SharedEmptyDict()
_NO_LIST: Any = _SharedEmptyList()


class _OneAppointment:
    """A patient's only held appointment, as a mapping from its id (most patients hold one).

    A one-entry dict is 184 bytes; this is 48. It answers what the rules ask of
    ``PatientState.appointments`` (get, pop, del, in, len, values, items, iteration); a
    second appointment goes through ``PatientState.hold_appointment``, which makes it a
    dict. Serialised as the dict it stands for (the changelog's JSON does not change)."""

    __slots__ = ("_appointment", "_id")

    def __init__(self, appointment: TrackedAppointment) -> None:
        self._id: str | None = appointment.appointment_id
        self._appointment: TrackedAppointment | None = appointment

    def __getitem__(self, key: str) -> TrackedAppointment:
        if key != self._id or self._appointment is None:
            raise KeyError(key)
        return self._appointment

    def get(self, key: str, default: Any = None) -> Any:
        return self._appointment if key == self._id and self._id is not None else default

    def __contains__(self, key: object) -> bool:
        return self._id is not None and key == self._id

    def __len__(self) -> int:
        return 0 if self._id is None else 1

    def __iter__(self) -> Iterator[str]:
        return iter(() if self._id is None else (self._id,))

    def keys(self) -> KeysView[str]:
        return dict.fromkeys(self).keys()  # a set-like view, as a dict's (built when asked)

    def values(self) -> list[TrackedAppointment]:
        return [] if self._appointment is None else [self._appointment]

    def items(self) -> list[tuple[str, TrackedAppointment]]:
        return (
            [] if self._id is None or self._appointment is None else [(self._id, self._appointment)]
        )

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._id = self._appointment = None

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            appointment, self._id, self._appointment = self._appointment, None, None
            return appointment
        if default:
            return default[0]
        raise KeyError(key)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _OneAppointment):
            return self.items() == other.items()
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(dict(self.items()))


def _as_dict(value: Any, serialise: Callable[[Any], Any]) -> Any:
    return serialise(dict(value.items()) if type(value) is _OneAppointment else value)


def _empty_dict() -> Any:
    return _NO_DICT


def _empty_list() -> Any:
    return _NO_LIST


def _one(appointment: TrackedAppointment) -> Any:
    return _OneAppointment(appointment)


# One tzinfo object per UTC offset instead of one per parsed datetime (pydantic gives each
# its own fixed-offset TzInfo, 40 bytes): the same instant, offset and JSON.
_FIXED_ZONES: dict[timedelta, timezone] = {timedelta(0): UTC}


def _shared_zone(moment: datetime) -> datetime:
    zone = moment.tzinfo
    if type(zone) is not TzInfo:  # a ZoneInfo does wall-clock arithmetic: kept as it is
        return moment
    offset = zone.utcoffset(None)  # fixed: the same for every moment
    assert offset is not None
    fixed = _FIXED_ZONES.get(offset)
    if fixed is None:
        fixed = _FIXED_ZONES.setdefault(offset, timezone(offset))
    return moment.replace(tzinfo=fixed)


def _shared_zone_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else _shared_zone(moment)


def _intern(text: str | None) -> str | None:
    # Zones, departments, statuses and practitioners repeat across a million appointments.
    return None if text is None else sys.intern(text)


@dataclass(slots=True, kw_only=True)
class TrackedAppointment:
    __pydantic_config__ = _FORBID_EXTRA

    appointment_id: str
    start: datetime
    timezone: str
    department: str
    practitioner_id: str | None = None
    status: str
    plan_id: str | None = None
    stage_id: str | None = None
    last_occurred_at: datetime
    arrived_at: datetime | None = None
    # Already over when first seen (a backfill or replay): recorded, never chased, and a
    # late cancellation of it is history, not news.
    backfill: bool = False
    # Whether the timer may make it a no-show: not a backfill, nor from a source that
    # never reports arrivals.
    chased: bool = True
    site: str | None = None  # the clinic of a chain (common/sites.py); none: the only one

    def compact(self) -> None:
        self.timezone = sys.intern(self.timezone)
        self.department = sys.intern(self.department)
        self.status = sys.intern(self.status)
        self.practitioner_id = _intern(self.practitioner_id)
        self.start = _shared_zone(self.start)
        self.last_occurred_at = _shared_zone(self.last_occurred_at)
        self.arrived_at = _shared_zone_or_none(self.arrived_at)


@dataclass(slots=True, kw_only=True)
class DueVisit:
    """An attended visit after which the department expects the next one by ``due``."""

    __pydantic_config__ = _FORBID_EXTRA

    department: str
    timezone: str
    practitioner_id: str | None = None
    attended_start: datetime
    due: datetime
    site: str | None = None


@dataclass(slots=True, kw_only=True)
class CallTask:
    __pydantic_config__ = _FORBID_EXTRA

    case_id: str
    attempt_number: int
    respond_by: datetime | None = None
    answered: bool = False


@dataclass(slots=True, kw_only=True)
class PatientState:
    """Everything the tracker knows of one patient; the unit of the changelog."""

    __pydantic_config__ = _FORBID_EXTRA

    # The collections start as one shared read-only empty (see _SharedEmptyDict): add to
    # them through the methods below; reading, popping and deleting are as for any dict.
    patient_id: str
    appointments: Annotated[dict[str, TrackedAppointment], WrapSerializer(_as_dict)] = field(
        default_factory=_empty_dict
    )
    plans: dict[str, TreatmentPlanEvent] = field(default_factory=_empty_dict)
    # plan_id -> stage_id -> when a fulfilled visit completed that stage
    completed: dict[str, dict[str, datetime]] = field(default_factory=_empty_dict)
    call_tasks: dict[str, CallTask] = field(default_factory=_empty_dict)
    emitted: list[str] = field(default_factory=_empty_list)
    department: str | None = None
    timezone: str | None = None
    # Another id of a held visit (HL7 placer beside filler) -> the id it is held under.
    aliases: dict[str, str] = field(default_factory=_empty_dict)
    # Attended visit id -> when the department expects the next visit (next_visit_days).
    due_visits: dict[str, DueVisit] = field(default_factory=_empty_dict)
    # Of the latest appointment (before any: of the plan): for facts without one (a call).
    site: str | None = None

    def hold_appointment(self, appointment: TrackedAppointment) -> None:
        held: Any = self.appointments
        if held is _NO_DICT or (
            type(held) is _OneAppointment and (not held or appointment.appointment_id in held)
        ):
            self.appointments = _one(appointment)
            return
        if type(held) is _OneAppointment:
            self.appointments = dict(held.items())
        self.appointments[appointment.appointment_id] = appointment

    def hold_plan(self, plan: TreatmentPlanEvent) -> None:
        if self.plans is _NO_DICT:
            self.plans = {}
        self.plans[plan.plan_id] = plan

    def complete_stage(self, plan_id: str, stage_id: str, at: datetime) -> None:
        """The first completion of a stage counts."""
        if self.completed is _NO_DICT:
            self.completed = {}
        self.completed.setdefault(plan_id, {}).setdefault(stage_id, at)

    def hold_call_task(self, key: str, task: CallTask) -> None:
        if self.call_tasks is _NO_DICT:
            self.call_tasks = {}
        self.call_tasks[key] = task

    def add_alias(self, other_id: str, held_id: str) -> None:
        if self.aliases is _NO_DICT:
            self.aliases = {}
        self.aliases[other_id] = held_id

    def expect_visit(self, visit_id: str, visit: DueVisit) -> None:
        if self.due_visits is _NO_DICT:
            self.due_visits = {}
        self.due_visits[visit_id] = visit

    def record_emitted(self, trigger_id: str) -> None:
        if self.emitted is _NO_LIST:
            self.emitted = []
        self.emitted.append(trigger_id)

    def compact(self) -> None:
        """After a restore: empties shared, repeated strings and offsets shared (what the
        detector's writers do as they go)."""
        for name in ("appointments", "plans", "completed", "call_tasks", "aliases", "due_visits"):
            if not getattr(self, name):
                setattr(self, name, _NO_DICT)
        if len(self.appointments) == 1 and type(self.appointments) is dict:
            self.appointments = _one(next(iter(self.appointments.values())))
        if not self.emitted:
            self.emitted = _NO_LIST
        self.department, self.timezone = _intern(self.department), _intern(self.timezone)
        for appointment in self.appointments.values():
            appointment.compact()

    def held_id(self, ids: list[str]) -> str | None:
        """The id under which one of ``ids`` is held, if any."""
        for one in ids:
            if one in self.appointments:
                return one
            if one in self.aliases and self.aliases[one] in self.appointments:
                return self.aliases[one]
        return None

    def has_emitted(self, trigger_id: str) -> bool:
        return trigger_id in self.emitted

    def to_json(self) -> bytes:
        """The changelog record."""
        return STATE_JSON.dump_json(self)

    @staticmethod
    def from_json(raw: bytes | str) -> PatientState:
        """A changelog record back (validated: fields, types, no extra keys)."""
        return STATE_JSON.validate_json(raw)


STATE_JSON: TypeAdapter[PatientState] = TypeAdapter(PatientState)


def _earliest(earliest: float, moment: datetime, after: float) -> float:
    at = moment.timestamp()
    return at if after < at < earliest else earliest


def _task_key(case_id: str, attempt_number: int) -> str:
    return f"{case_id}:{attempt_number}"


# (POSIX seconds, patient id): plain tuples keep the heap cheap to compare, and the same
# tuple is the heap entry and its key in the pending set (one object, not two, per wake-up:
# two wake-ups per tracked appointment were ~400 of its resident bytes with a sequence number
# and a separate key; now a patient has one, see Detector._schedule). Patients due at the
# same instant are evaluated in id order.
_WakeUp = tuple[float, str]


class Detector:
    def __init__(self, rules: DetectionRules) -> None:
        self.rules = rules
        self.patients: dict[str, PatientState] = {}
        self._wakeups: list[_WakeUp] = []
        # Wake-ups already in the heap: a busy patient does not grow it.
        self._pending: set[_WakeUp] = set()
        self._tracked = 0

    # --- what the worker needs ----------------------------------------------------------

    @property
    def tracked_appointments(self) -> int:
        return self._tracked

    def next_wakeup(self) -> datetime | None:
        return datetime.fromtimestamp(self._wakeups[0][0], UTC) if self._wakeups else None

    def load(self, state: PatientState) -> None:
        """Adopt a patient's state restored from the changelog."""
        self.drop(state.patient_id)
        state.compact()
        self.patients[state.patient_id] = state
        self._tracked += len(state.appointments)
        self._schedule(state)

    def drop(self, patient_id: str) -> None:
        """Forget a patient whose partition moved to another replica (its wake-ups go stale)."""
        state = self.patients.pop(patient_id, None)
        if state is not None:
            self._tracked -= len(state.appointments)

    def due(self, now: datetime) -> list[Detection]:
        """Evaluate the patients whose wake-ups are due at ``now``."""
        # A dict as an ordered set: a list's membership test made a large due batch quadratic.
        patients: dict[str, None] = {}
        limit = now.timestamp()
        while self._wakeups and self._wakeups[0][0] <= limit:
            wakeup = heapq.heappop(self._wakeups)
            self._pending.discard(wakeup)
            patients[wakeup[1]] = None
        found: list[Detection] = []
        for patient_id in patients:
            state = self.patients.get(patient_id)
            if state is not None:
                found.extend(self._evaluate(state, now))
                self._schedule(state, after=limit)  # what is due by now is decided
        return found

    # --- facts in -----------------------------------------------------------------------

    def on_appointment(self, event: AppointmentEvent, now: datetime) -> list[Detection]:
        state = self._state(event.patient_id)
        ids = [event.appointment_id, *event.other_ids]
        appointment_id = state.held_id(ids) or event.appointment_id
        known = state.appointments.get(appointment_id)
        if known is not None and event.occurred_at < known.last_occurred_at:
            return []  # an older snapshot arriving late: the newer one already holds
        start = event.start or (known.start if known is not None else None)
        if start is None:
            return []  # by id alone, of a visit never seen: nothing to act on
        department, timezone = sys.intern(event.department), sys.intern(event.timezone)
        state.department, state.timezone = department, timezone
        state.site = event.site
        if event.status == "entered-in-error" or event.change == "deleted":
            # Never happened: forget it, pending no-show included.
            if state.appointments.pop(appointment_id, None) is not None:
                self._tracked -= 1
            return []
        for one in ids:
            if one != appointment_id:
                state.add_alias(one, appointment_id)
        effective = event.status_at or event.occurred_at
        # An arrival belongs to a slot: a new start time is a new chance to miss it.
        same_slot = known is not None and known.start == start
        arrived_at = known.arrived_at if known is not None and same_slot else None
        if event.status in ATTENDED and arrived_at is None:
            arrived_at = effective
        if known is not None and same_slot:
            backfill, chased = known.backfill, known.chased
        else:
            backfill = start + self.rules.no_show_grace <= now
            chased = not backfill and event.source not in self.rules.explicit_no_shows_only
        appointment = TrackedAppointment(
            appointment_id=appointment_id,
            start=_shared_zone(start),
            timezone=timezone,
            department=department,
            practitioner_id=_intern(event.practitioner_id),
            status=sys.intern(event.status),
            plan_id=event.plan_id,
            stage_id=event.stage_id,
            last_occurred_at=_shared_zone(event.occurred_at),
            arrived_at=_shared_zone_or_none(arrived_at),
            backfill=backfill,
            chased=chased,
            site=event.site,
        )
        if known is None:
            self._tracked += 1
        state.hold_appointment(appointment)
        if event.status == "fulfilled" and event.plan_id and event.stage_id:
            state.complete_stage(event.plan_id, event.stage_id, effective)
        days = self.rules.next_visit_days.get(event.department)
        if (
            days is not None
            and event.status in ATTENDED
            and event.plan_id is None  # a plan's stages have their own rule
            and not state.has_emitted(f"next_visit_due:{appointment_id}")
        ):
            state.expect_visit(
                appointment_id,
                DueVisit(
                    department=department,
                    timezone=timezone,
                    practitioner_id=event.practitioner_id,
                    attended_start=start,
                    due=end_of_local_day(start, ZoneInfo(event.timezone), days),
                    site=event.site,
                ),
            )
        found: list[Detection] = []
        if event.status == "noshow":
            found += self._emit(state, "no_show", appointment, now, detectable_at=effective)
        if (
            event.status == "cancelled"
            and event.cancelled_by == "patient"
            and effective > start - self.rules.late_cancellation_window
            and arrived_at is None
            and not backfill
            # A visit already reported missed is one case, not two.
            and not state.has_emitted(f"no_show:{appointment_id}")
        ):
            found += self._emit(
                state, "late_cancellation", appointment, now, detectable_at=effective
            )
        if (
            event.status == "cancelled"
            and event.cancelled_by == "clinic"
            and arrived_at is None
            and not backfill
            and not state.has_emitted(f"no_show:{appointment_id}")
        ):
            # The clinic cancelled or bumped the visit: the patient is lost unless rebooked,
            # plan or no plan; the scheduler rebooks at once (after its settle window).
            found += self._emit(
                state, "clinic_cancellation", appointment, now, detectable_at=effective
            )
        self._schedule(state)
        return found

    def on_plan(self, event: TreatmentPlanEvent, now: datetime) -> list[Detection]:
        state = self._state(event.patient_id)
        known = state.plans.get(event.plan_id)
        if known is not None and event.occurred_at < known.occurred_at:
            return []
        state.hold_plan(event)
        state.department = state.department or event.department
        state.timezone = state.timezone or event.timezone
        # A patient with a plan and no visit yet (the clinic's own invitation call) is the
        # plan's site's: a call's trigger takes it.
        state.site = state.site or event.site
        self._schedule(state)
        return []

    def on_patient_status(self, event: PatientStatusEvent, now: datetime) -> list[Detection]:
        """An erasure: the doctor's notes leave the plans held (the changelog record is
        written again without them); ids, stages and deadlines stay, so nothing is lost
        of what the detection needs. Other statuses are the scheduler's to act on."""
        state = self.patients.get(event.patient_id)
        if event.status != "erased" or state is None:
            return []
        for plan in list(state.plans.values()):
            stages = [s.model_copy(update={"notes": None}) for s in plan.stages]
            state.hold_plan(plan.model_copy(update={"stages": stages}))
        return []

    def on_outcome(self, event: OutcomeEvent, now: datetime) -> list[Detection]:
        state = self._state(event.patient_id)
        if event.case_id is None:
            if event.outcome not in UNANSWERED:
                return []
            # The clinic's own call (no case of ours): the scheduler must open one.
            trigger_id = f"unanswered_call:{event.event_id}"
            return self._emit_raw(
                state,
                trigger_id,
                "unanswered_call",
                now,
                detectable_at=event.occurred_at,
                department=state.department or self.rules.default_department,
                timezone=state.timezone or self.rules.default_timezone,
            )
        if event.attempt_number is None:
            return []
        key = _task_key(event.case_id, event.attempt_number)
        task = state.call_tasks.get(key) or CallTask(
            case_id=event.case_id, attempt_number=event.attempt_number
        )
        if event.outcome == "task_created" and event.respond_by is not None:
            task.respond_by = event.respond_by
        elif event.outcome not in NOT_A_RESULT:
            task.answered = True  # any result, even before task_created arrives
        state.hold_call_task(key, task)
        self._schedule(state)
        return []

    # --- the rules ----------------------------------------------------------------------

    def _no_show_due(self, appointment: TrackedAppointment) -> datetime | None:
        if (
            appointment.status not in AWAITING_ARRIVAL
            or appointment.arrived_at is not None
            or not appointment.chased
        ):
            return None
        return appointment.start + self.rules.no_show_grace

    def _stage_at_risk(self, state: PatientState, plan: TreatmentPlanEvent) -> StageDeadline | None:
        deadline = next_stage_deadline(plan, state.completed.get(plan.plan_id))
        if deadline is None:
            return None
        for appointment in state.appointments.values():
            if (
                appointment.plan_id == plan.plan_id
                and appointment.status in ACTIVE
                and appointment.stage_id in (None, deadline.stage.stage_id)
                and appointment.start > deadline.previous_completed_at
            ):
                return None  # the next visit is booked
        return deadline

    def _next_visit_booked(self, state: PatientState, visit: DueVisit) -> bool:
        return any(
            a.department == visit.department
            and a.status in ACTIVE
            and a.start > visit.attended_start
            for a in state.appointments.values()
        )

    def _next_visit_warn_at(self, visit: DueVisit) -> datetime:
        local = visit.due.astimezone(ZoneInfo(visit.timezone))
        return local - timedelta(days=self.rules.stage_lead_days)

    def _warn_at(self, deadline: StageDeadline, zone: str) -> datetime:
        # Count the lead in the clinic's calendar days: wall-clock arithmetic on the local
        # time keeps 23:59:59 across a daylight-saving change.
        local = deadline.deadline.astimezone(ZoneInfo(zone))
        return local - timedelta(days=self.rules.stage_lead_days)

    def _evaluate(self, state: PatientState, now: datetime) -> list[Detection]:
        found: list[Detection] = []
        for appointment in list(state.appointments.values()):
            due = self._no_show_due(appointment)
            if due is not None and due <= now:
                found += self._emit(state, "no_show", appointment, now, detectable_at=due)
        for task in state.call_tasks.values():
            if not task.answered and task.respond_by is not None and task.respond_by <= now:
                found += self._emit_raw(
                    state,
                    f"unanswered_call:{task.case_id}:{task.attempt_number}",
                    "unanswered_call",
                    now,
                    detectable_at=task.respond_by,
                    department=state.department or self.rules.default_department,
                    timezone=state.timezone or self.rules.default_timezone,
                    case_id=task.case_id,
                )
        for plan in state.plans.values():
            deadline = self._stage_at_risk(state, plan)
            if deadline is None:
                continue
            warn_at = self._warn_at(deadline, plan.timezone)
            if warn_at <= now:
                found += self._emit_raw(
                    state,
                    f"stage_window_at_risk:{plan.plan_id}:{deadline.stage.stage_id}",
                    "stage_window_at_risk",
                    now,
                    detectable_at=warn_at,
                    department=plan.department,
                    timezone=plan.timezone,
                    practitioner_id=plan.responsible_practitioner_id,
                    plan_id=plan.plan_id,
                    stage_id=deadline.stage.stage_id,
                    stage_deadline=deadline.deadline,
                    site=plan.site or state.site,
                )
        for visit_id, visit in list(state.due_visits.items()):
            if self._next_visit_booked(state, visit) or visit.due <= now:
                del state.due_visits[visit_id]  # booked, or too late to be gentle
                continue
            warn_at = self._next_visit_warn_at(visit)
            if warn_at <= now:
                del state.due_visits[visit_id]
                found += self._emit_raw(
                    state,
                    f"next_visit_due:{visit_id}",
                    "next_visit_due",
                    now,
                    detectable_at=warn_at,
                    department=visit.department,
                    timezone=visit.timezone,
                    practitioner_id=visit.practitioner_id,
                    site=visit.site,
                )
        for appointment in list(state.appointments.values()):
            if appointment.start + self.rules.retention <= now:
                # Its facts are decided; completions and emitted ids are kept apart.
                del state.appointments[appointment.appointment_id]
                self._tracked -= 1
                for alias in [
                    a for a, held in state.aliases.items() if held not in state.appointments
                ]:
                    del state.aliases[alias]
        return found

    def _schedule(self, state: PatientState, after: float = -math.inf) -> None:
        """Push the patient's earliest wake-up later than ``after`` (POSIX seconds).

        One wake-up per patient, not one per moment at which a rule may fire (two per
        appointment were ~260 of its resident bytes): evaluating a patient at ``now``
        decides every rule due by then, and ``due`` then pushes the next moment after
        ``now``, so each moment is reached in turn. A change pushes the earliest again."""
        earliest = math.inf
        for appointment in state.appointments.values():
            due = self._no_show_due(appointment)
            if due is not None and not state.has_emitted(f"no_show:{appointment.appointment_id}"):
                earliest = _earliest(earliest, due, after)
            earliest = _earliest(earliest, appointment.start + self.rules.retention, after)
        for task in state.call_tasks.values():
            if not task.answered and task.respond_by is not None:
                earliest = _earliest(earliest, task.respond_by, after)
        for visit in state.due_visits.values():
            earliest = _earliest(earliest, self._next_visit_warn_at(visit), after)
        for plan in state.plans.values():
            deadline = self._stage_at_risk(state, plan)
            if deadline is not None:
                earliest = _earliest(earliest, self._warn_at(deadline, plan.timezone), after)
        if earliest == math.inf:
            return
        wakeup = (earliest, state.patient_id)
        if wakeup in self._pending:
            return
        self._pending.add(wakeup)
        heapq.heappush(self._wakeups, wakeup)

    # --- emitting -----------------------------------------------------------------------

    def _emit(
        self,
        state: PatientState,
        kind: TriggerKind,
        appointment: TrackedAppointment,
        now: datetime,
        *,
        detectable_at: datetime,
    ) -> list[Detection]:
        stage_deadline = None
        plan = state.plans.get(appointment.plan_id) if appointment.plan_id else None
        if plan is not None:
            deadline = next_stage_deadline(plan, state.completed.get(plan.plan_id))
            stage_deadline = deadline.deadline if deadline is not None else None
        return self._emit_raw(
            state,
            f"{kind}:{appointment.appointment_id}",
            kind,
            now,
            detectable_at=detectable_at,
            department=appointment.department,
            timezone=appointment.timezone,
            appointment_id=appointment.appointment_id,
            appointment_start=appointment.start,
            practitioner_id=appointment.practitioner_id,
            plan_id=appointment.plan_id,
            stage_id=appointment.stage_id,
            stage_deadline=stage_deadline,
            site=appointment.site,
        )

    def _emit_raw(
        self,
        state: PatientState,
        trigger_id: str,
        kind: TriggerKind,
        now: datetime,
        *,
        detectable_at: datetime,
        department: str,
        timezone: str,
        appointment_id: str | None = None,
        appointment_start: datetime | None = None,
        practitioner_id: str | None = None,
        plan_id: str | None = None,
        stage_id: str | None = None,
        stage_deadline: datetime | None = None,
        case_id: str | None = None,
        site: str | None = None,
    ) -> list[Detection]:
        if state.has_emitted(trigger_id):
            return []
        state.record_emitted(trigger_id)
        trigger = TriggerEvent(
            event_id=trigger_id,
            occurred_at=detectable_at,
            source=SOURCE,
            kind=kind,
            patient_id=state.patient_id,
            department=department,
            timezone=timezone,
            appointment_id=appointment_id,
            appointment_start=appointment_start,
            practitioner_id=practitioner_id,
            plan_id=plan_id,
            stage_id=stage_id,
            stage_deadline=stage_deadline,
            case_id=case_id,
            detected_at=now,
            # A fact without a visit of its own (a call) is the patient's latest site's.
            site=site or state.site,
        )
        return [Detection(trigger, detectable_at)]

    def _state(self, patient_id: str) -> PatientState:
        state = self.patients.get(patient_id)
        if state is None:
            state = self.patients[patient_id] = PatientState(patient_id=patient_id)
        return state
