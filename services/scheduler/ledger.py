"""The case ledger in PostgreSQL: loading and saving cases, nothing else.

Every handler is one short transaction: note the consumed event in ``processed_events``
(a redelivery changes nothing), load the cases it concerns locked ``FOR UPDATE`` with
their attempts in as few statements as possible, call one transition of the pure ``Case``
(``case.py``), and save what changed. ``_Batch`` writes the difference: one statement per
table from column arrays, all in one round trip just before commit (the rare deletes
before it); nothing is read back in between, so no write has to be flushed by hand.
Commands go to the ``outbox`` in the same transaction as the attempt that caused them;
metrics are counted after commit.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import astuple, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import cache, partial
from typing import Any, Literal, TypeAlias, cast, get_args
from zoneinfo import ZoneInfo

import asyncpg

from common.clock import Clock
from common.codec import encode
from common.logs import get_logger
from common.metrics import ERASURES, RETENTION_PURGED
from common.sites import SiteRegistry, Sites
from common.treatment import next_stage_deadline
from schemas.base import Channel
from schemas.events import (
    CALL_RESULTS,
    AppointmentEvent,
    OutcomeEvent,
    PatientStatusEvent,
    StageEducation,
    TreatmentPlanEvent,
    TriggerEvent,
)
from schemas.vocabulary import ATTENDED
from services.scheduler import metrics
from services.scheduler.cadence import AttemptRecord, next_open_day
from services.scheduler.case import (
    Case,
    CaseState,
    Context,
    Correction,
    CorrectionResult,
    KnownVisit,
    Preferences,
    Tally,
    opted_channels,
    why_not_open,
)
from services.scheduler.cases import parse_idempotency_key
from services.scheduler.feedback import ask_from, feedback_channel, feedback_command
from services.scheduler.guards import (
    WEEK,
    Cap,
    ContactRules,
    FiringHeld,
    channel_class,
    conversation_until,
    desk_hold,
    hold_for,
)
from services.scheduler.policy import CadencePolicy

log = get_logger(__name__)
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
Record: TypeAlias = asyncpg.Record
OutcomeCorrection = Correction  # the API's name for it

__all__ = ["CaseLedger", "Conn", "CorrectionResult", "OutcomeCorrection"]

# --- statements ----------------------------------------------------------------------------


def _noted(topic: str) -> str:
    """A CTE noting the consumed event ($1 its id, $2 now) in the handler's first statement:
    ``EXISTS (SELECT 1 FROM noted)`` says it is the first time."""
    return (
        "WITH noted AS (INSERT INTO processed_events (topic, event_id, processed_at) "
        f"VALUES ('{topic}', $1, $2) ON CONFLICT DO NOTHING RETURNING 1)"
    )


# A case row with its attempts as one JSON array: one statement loads and locks both.
# The attempts are read by a statement of their own, after the lock: a statement that
# waited for the lock sees the case row as the other transaction left it, but everything
# else (a subquery on attempts too) as of its own start, so a join that waited for a firing
# would plan on the attempt as it was before it fired and overwrite it.
CASES_LOCKED = "SELECT c.* FROM cases c WHERE {where} ORDER BY c.case_id FOR UPDATE OF c"
ATTEMPTS_OF = "SELECT * FROM attempts WHERE case_id = ANY($1) ORDER BY case_id, attempt_number"
# The patient's open cases ($1: the patient); the literal matches the partial indexes.
OPEN_OF_PATIENT = "c.patient_id = $1 AND c.state <> 'closed'"
# Recovered on the front desk's word ("answered, rebooked") and not yet waiting for its
# feedback question: the hospital's booking comes after the case closed.
RECOVERED_BY_CALL = (
    "c.patient_id = $1 AND c.department = $2 AND c.resolution = 'recovered'"
    " AND c.closed_at >= $3 AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.case_id = c.case_id)"
)
FEEDBACK_BOOKING_DAYS = 14  # how long after such a close its booking still counts
INSERT_CASE = """
    INSERT INTO cases (case_id, patient_id, reason, department, timezone, state,
        trigger_event_id, fact_at, opened_at, appointment_id, appointment_start,
        practitioner_id, supervisor_id, plan_id, stage_id, stage_name, doctor_notes,
        stage_deadline, patient_timezone, updated_at, preferred_channel, contact_window,
        education, child, safeguarding_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
        $19, $20, $21, $22, $23, $24, $25)
    ON CONFLICT DO NOTHING RETURNING case_id"""


def _unnest(*types: str) -> str:
    """``unnest($1::t1[], $2::t2[], ...)``: a batch's rows as column arrays, so a statement
    runs once for all of them (cheaper for the server than one execution per row)."""
    return "unnest(" + ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1)) + ")"


# The channels travel as one comma-separated text: unnest flattens arrays of arrays.
UPDATE_CASE = f"""
    UPDATE cases c SET state = v.state, resolution = v.resolution, closed_at = v.closed_at,
        supervisor_id = v.supervisor_id, stage_deadline = v.stage_deadline,
        impossible_channels = string_to_array(v.impossible, ','),
        first_contact_at = v.first_contact_at, review_at = v.review_at,
        concern_at = v.concern_at, concern_note = v.concern_note,
        preferred_channel = v.preferred_channel, contact_window = v.contact_window,
        patient_timezone = v.patient_timezone, child = v.child,
        safeguarding_at = v.safeguarding_at, updated_at = v.updated_at
      FROM {
    _unnest(
        "text",
        "text",
        "text",
        "timestamptz",
        "text",
        "timestamptz",
        "text",
        "timestamptz",
        "timestamptz",
        "timestamptz",
        "text",
        "text",
        "text",
        "text",
        "bool",
        "timestamptz",
        "timestamptz",
    )
}
        AS v(case_id, state, resolution, closed_at, supervisor_id, stage_deadline, impossible,
             first_contact_at, review_at, concern_at, concern_note, preferred_channel,
             contact_window, patient_timezone, child, safeguarding_at, updated_at)
     WHERE c.case_id = v.case_id"""
_ATTEMPT_COLUMNS = (
    "purpose, channel, template, escalate_to, state, step_index, tightened, planned_at, "
    "window_end, fired_at, outcome, outcome_detail, outcome_at, withdrawn_at, callback_at"
)
_ATTEMPTS = _unnest(
    "text", "int", "text", "text", "text", "text", "text", "int", "bool", "timestamptz",
    "timestamptz", "timestamptz", "text", "text", "timestamptz", "timestamptz", "timestamptz",
)  # fmt: skip
INSERT_ATTEMPT = f"""
    INSERT INTO attempts (case_id, attempt_number, {_ATTEMPT_COLUMNS})
    SELECT * FROM {_ATTEMPTS}"""
UPDATE_ATTEMPT = f"""
    UPDATE attempts a SET purpose = v.purpose, channel = v.channel, template = v.template,
        escalate_to = v.escalate_to, state = v.state, step_index = v.step_index,
        tightened = v.tightened, planned_at = v.planned_at, window_end = v.window_end,
        fired_at = v.fired_at, outcome = v.outcome, outcome_detail = v.outcome_detail,
        outcome_at = v.outcome_at, withdrawn_at = v.withdrawn_at, callback_at = v.callback_at
      FROM {_ATTEMPTS} AS v(case_id, attempt_number, {_ATTEMPT_COLUMNS})
     WHERE a.case_id = v.case_id AND a.attempt_number = v.attempt_number"""
DELETE_ATTEMPT = "DELETE FROM attempts WHERE case_id = $1 AND attempt_number = $2"
# Rows keep the batch's order (history and outbox ids follow it).
INSERT_HISTORY = f"""
    INSERT INTO case_history (case_id, at, event, state, detail)
    SELECT case_id, at, event, state, detail::jsonb
      FROM {_unnest("text", "timestamptz", "text", "text", "text")}
        AS v(case_id, at, event, state, detail)"""
INSERT_OUTBOX = f"""
    INSERT INTO outbox (idempotency_key, patient_id, payload, created_at)
    SELECT k, p, d::jsonb, t FROM {_unnest("text", "text", "text", "timestamptz")} AS v(k, p, d, t)
    ON CONFLICT (idempotency_key) DO NOTHING"""
INSERT_CONTACT = f"""
    INSERT INTO contact_log (case_id, attempt_number, patient_id, channel_class, sent_at)
    SELECT * FROM {_unnest("text", "int", "text", "text", "timestamptz")}
    ON CONFLICT DO NOTHING"""
DELETE_CONTACT = "DELETE FROM contact_log WHERE case_id = $1 AND attempt_number = $2"
# The rare deletes go first, row by row (an attempt deleted and one inserted under its
# number, a contact uncounted and counted again, must not meet in one statement).
DELETES = (DELETE_ATTEMPT, DELETE_CONTACT)
# The rest is written from column arrays in ONE statement (data-modifying CTEs, one round
# trip): each touches rows no other one does (an attempt is updated or inserted, never
# both), and each keeps its rows' order (history and outbox ids follow the batch).
BULK = (UPDATE_ATTEMPT, INSERT_ATTEMPT, UPDATE_CASE, INSERT_HISTORY, INSERT_OUTBOX, INSERT_CONTACT)
_PLACEHOLDER = re.compile(r"\$(\d+)")


def _shift(offset: int, number: re.Match[str]) -> str:
    return f"${int(number[1]) + offset}"


@cache
def _together(statements: tuple[str, ...]) -> str:
    """The ``statements`` (of ``BULK``, each numbering its parameters from $1) as one
    statement, their parameters numbered one after the other."""
    parts: list[str] = []
    offset = 0
    for sql in statements:
        numbers = [int(n) for n in _PLACEHOLDER.findall(sql)]
        shifted = _PLACEHOLDER.sub(partial(_shift, offset), sql)
        parts.append(f"w{len(parts)} AS ({shifted})")
        offset += max(numbers)
    return "WITH " + ",\n".join(parts) + "\nSELECT 1"


# Due work, claimed in turn across lanes (purpose, channel): each lane's due attempts in
# due order, at most $2 of them locked with their cases, then the batch takes the first of
# every lane, the second of every lane, ... up to $2. One lane's backlog (50,000 call tasks
# due at 09:00) cannot hold back the SMS or escalations due beside it: they get their turn
# in the next batch. Replicas skip each other's locked rows; a row locked in a lane but
# left out of the batch is free again at commit (a handler of that case waits one batch).
# The cases are locked inside each lane's walk: joined outside it, the generic plan that
# PostgreSQL settles on for the prepared statement reads every case (a hash join).
_PURPOSES = ("follow_up", "escalation")  # an attempt's purposes (001_cases.sql)
LANES = tuple((p, c) for p in _PURPOSES for c in get_args(Channel))
_LANE_ARGS = ([p for p, _ in LANES], [c for _, c in LANES])
DUE_IN_TURN = """
    SELECT t.*
      FROM (SELECT d.*, row_number() OVER (PARTITION BY l.purpose, l.channel
                                           ORDER BY d.due_at) AS turn
              FROM unnest($3::text[], $4::text[]) AS l(purpose, channel)
             CROSS JOIN LATERAL (
                   SELECT a.attempt_number AS due_number, a.planned_at AS due_at, c.*
                     FROM attempts a JOIN cases c ON c.case_id = a.case_id
                    WHERE a.state = 'planned' AND a.purpose = l.purpose
                      AND a.channel = l.channel AND a.planned_at <= $1
                    ORDER BY a.planned_at
                    LIMIT $2
                      FOR UPDATE OF a, c SKIP LOCKED) d) t
     ORDER BY t.turn, t.due_at
     LIMIT $2"""
# The next due moment over every lane (the firing loop sleeps until then, within its poll).
NEXT_DUE = """
    SELECT min(d.planned_at)
      FROM unnest($1::text[], $2::text[]) AS l(purpose, channel)
     CROSS JOIN LATERAL (
           SELECT a.planned_at FROM attempts a
            WHERE a.state = 'planned' AND a.purpose = l.purpose AND a.channel = l.channel
            ORDER BY a.planned_at LIMIT 1) d"""


# --- rows to cases and back -------------------------------------------------------------------


def _when(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def to_attempt(row: Mapping[str, Any]) -> AttemptRecord:
    return AttemptRecord(
        number=row["attempt_number"],
        purpose=row["purpose"],
        channel=row["channel"],
        state=row["state"],
        planned_at=cast(datetime, _when(row["planned_at"])),
        window_end=cast(datetime, _when(row["window_end"])),
        fired_at=_when(row["fired_at"]),
        outcome=row["outcome"],
        escalate_to=row["escalate_to"],
        callback_at=_when(row["callback_at"]),
        template=row["template"],
        step_index=row["step_index"],
        tightened=row["tightened"],
        outcome_detail=row["outcome_detail"],
        outcome_at=_when(row["outcome_at"]),
        withdrawn_at=_when(row["withdrawn_at"]),
    )


def to_case(row: Record, attempts: Iterable[AttemptRecord]) -> Case:
    return Case(
        case_id=row["case_id"],
        patient_id=row["patient_id"],
        reason=row["reason"],
        department=row["department"],
        timezone=row["timezone"],
        state=CaseState(row["state"]),
        trigger_event_id=row["trigger_event_id"],
        fact_at=row["fact_at"],
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
        resolution=row["resolution"],
        closed_at=row["closed_at"],
        appointment_id=row["appointment_id"],
        appointment_start=row["appointment_start"],
        practitioner_id=row["practitioner_id"],
        supervisor_id=row["supervisor_id"],
        plan_id=row["plan_id"],
        stage_id=row["stage_id"],
        stage_name=row["stage_name"],
        doctor_notes=row["doctor_notes"],
        education=_education(row["education"]),
        stage_deadline=row["stage_deadline"],
        patient_timezone=row["patient_timezone"],
        preferred_channel=row["preferred_channel"],
        contact_window=row["contact_window"],
        impossible=opted_channels(row["impossible_channels"]),
        first_contact_at=row["first_contact_at"],
        review_at=row["review_at"],
        concern_at=row["concern_at"],
        concern_note=row["concern_note"],
        site=row.get("site"),
        child=row["child"],
        safeguarding_at=row["safeguarding_at"],
        attempts=list(attempts),
    ).loaded()


def _attempt_args(case_id: str, a: AttemptRecord) -> tuple[Any, ...]:
    return (
        case_id,
        a.number,
        a.purpose,
        a.channel,
        a.template,
        a.escalate_to,
        a.state,
        a.step_index,
        a.tightened,
        a.planned_at,
        a.window_end,
        a.fired_at,
        a.outcome,
        a.outcome_detail,
        a.outcome_at,
        a.withdrawn_at,
        a.callback_at,
    )


@dataclass
class _Batch:
    """What a transaction writes, one ``executemany`` per statement before commit. Each
    case is added once, after its transition."""

    now: datetime
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: defaultdict(list))
    tallies: list[Tally] = field(default_factory=list)

    def add(self, case: Case) -> None:
        attempts = case.attempt_changes()
        for number in attempts.deleted:
            self.rows[DELETE_ATTEMPT].append((case.case_id, number))
        for a in attempts.updated:
            self.rows[UPDATE_ATTEMPT].append(_attempt_args(case.case_id, a))
        for a in attempts.inserted:
            self.rows[INSERT_ATTEMPT].append(_attempt_args(case.case_id, a))
        row = case.changed_row()
        if row is not None:
            columns = list(row)
            columns[5] = ",".join(columns[5])  # impossible channels: see UPDATE_CASE
            self.rows[UPDATE_CASE].append((case.case_id, *columns, case.updated_at))
        changes = case.changes
        for h in changes.history:
            entry = (case.case_id, self.now, h.event, h.state.value, json.dumps(h.detail))
            self.rows[INSERT_HISTORY].append(entry)
        for command in changes.commands:
            payload = encode(command).decode()
            key = command.idempotency_key
            self.rows[INSERT_OUTBOX].append((key, command.patient_id, payload, self.now))
        for number in changes.uncounted:
            self.rows[DELETE_CONTACT].append((case.case_id, number))
        for c in changes.contacts:
            contact = (case.case_id, c.attempt_number, case.patient_id, channel_class(c.channel))
            self.rows[INSERT_CONTACT].append((*contact, c.at))
        self.tallies += changes.tallies

    async def write(self, conn: Conn) -> None:
        for sql in DELETES:
            if rows := self.rows.get(sql):
                await conn.executemany(sql, rows)
        present = tuple(sql for sql in BULK if self.rows.get(sql))
        if present:
            columns = [list(c) for sql in present for c in zip(*self.rows[sql], strict=True)]
            await conn.execute(present[0] if len(present) == 1 else _together(present), *columns)
        self.rows.clear()


_COUNTERS: dict[str, Any] = {
    "planned": metrics.ATTEMPTS_PLANNED,
    "held": metrics.HELD,
}
# The clinic's main figures, per site as well (a bounded label: the site's, common/sites.py).
_BY_SITE: dict[str, Any] = {
    "opened": metrics.CASES_OPENED,
    "closed": metrics.CASES_CLOSED,
    "fired": metrics.ATTEMPTS_FIRED,
    "escalation": metrics.ESCALATIONS,
}
_PLAIN: dict[str, Any] = {
    "correction": metrics.CORRECTIONS,
}
_SITE_ONLY: dict[str, Any] = {
    "deadline_miss": metrics.DEADLINE_MISSES,
}
_HISTOGRAMS: dict[str, Any] = {
    "first_contact": metrics.TIME_TO_FIRST_CONTACT,
}


_BY_DEPARTMENT: dict[str, Any] = {
    "opened": metrics.DEPARTMENT_OPENED,
    "closed": metrics.DEPARTMENT_CLOSED,
    "feedback_asked": metrics.FEEDBACK_ASKED,
}


def _count(tally: Tally, policy: CadencePolicy, sites: Sites) -> None:
    m = tally.metric
    if tally.department is not None:
        department = policy.department_label(tally.department)
        if m == "escalation":
            metrics.DEPARTMENT_ESCALATIONS.labels(department).inc()
        elif m == "feedback_rating":
            metrics.FEEDBACK_RATINGS.labels(department, tally.label).inc()
            metrics.FEEDBACK_POINTS.labels(department).inc(tally.value)
        else:
            _BY_DEPARTMENT[m].labels(department, tally.label).inc()
    if m in _BY_SITE:
        _BY_SITE[m].labels(tally.label, sites.label(tally.site)).inc()
    elif m in _SITE_ONLY:
        _SITE_ONLY[m].labels(sites.label(tally.site)).inc()
    elif m == "lateness":
        metrics.FIRING_LATENESS.labels(sites.label(tally.site)).observe(tally.value)
    elif m in _COUNTERS:
        _COUNTERS[m].labels(tally.label).inc()
    elif m in _HISTOGRAMS:
        _HISTOGRAMS[m].observe(tally.value)
    elif m in _PLAIN:
        _PLAIN[m].inc()


@dataclass(frozen=True)
class Tx:
    conn: Conn
    now: datetime
    batch: _Batch


class CaseLedger:
    def __init__(
        self,
        pool: asyncpg.Pool,
        policy: CadencePolicy,
        clock: Clock,
        contact_rules: ContactRules | None = None,
        sites: SiteRegistry | None = None,
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._clock = clock
        self._contact_rules = contact_rules or ContactRules()
        # The clinics of a chain: their zones and caps (their cadence is in the policy).
        self._sites = sites or SiteRegistry.fixed(Sites.implicit())

    def _caps(self, site: str | None) -> ContactRules:
        """The site's frequency caps, else the deployment's."""
        profile = self._sites.current().get(site)
        if profile is None or profile.caps is None:
            return self._contact_rules
        caps = profile.caps
        return replace(
            self._contact_rules,
            messages=Cap(caps.messages_per_day, caps.messages_per_week),
            calls=Cap(caps.calls_per_day, caps.calls_per_week),
        )

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Tx]:
        now = self._clock.now()
        batch = _Batch(now)
        async with self._pool.acquire() as conn, conn.transaction():
            yield Tx(conn, now, batch)
            await batch.write(conn)
        sites = self._sites.current()
        for tally in batch.tallies:
            _count(tally, self._policy, sites)

    def now(self) -> datetime:
        """The injected clock's moment (for the API's risk score)."""
        return self._clock.now()

    def _ctx(self, now: datetime, opted: Iterable[str] = ()) -> Context:
        return Context(now, self._policy, opted_channels(opted))

    # --- consumed events ------------------------------------------------------------

    async def handle_trigger(self, trigger: TriggerEvent) -> None:
        profile = self._sites.current().get(trigger.site)
        if profile is not None and profile.timezone != trigger.timezone:
            # The site's profile is the clinic's zone: hours, slots and closures are its.
            trigger = trigger.model_copy(update={"timezone": profile.timezone})
        async with self._tx() as tx:
            # One statement: the event noted, and all a new case needs to know.
            known = await tx.conn.fetchrow(
                _noted("triggers")
                + """
                   SELECT EXISTS (SELECT 1 FROM noted) AS first,
                       s.status, s.timezone AS patient_zone, s.preferred_channel,
                       s.contact_window, s.birth_date,
                       (SELECT array_agg(channel) FROM channel_opt_outs
                         WHERE patient_id = $3) AS opted,
                       k.start AS visit_start, k.status AS visit_status,
                       k.status_at AS visit_status_at,
                       (SELECT payload FROM plans WHERE plan_id = $5) AS plan,
                       (SELECT jsonb_object_agg(stage_id, completed_at) FROM stage_completions
                         WHERE plan_id = $5) AS completions
                     FROM (SELECT 1) AS one
                     LEFT JOIN known_appointments k ON k.appointment_id = $4
                     LEFT JOIN patient_status s ON s.patient_id = $3""",
                trigger.event_id,
                tx.now,
                trigger.patient_id,
                trigger.appointment_id,
                trigger.plan_id,
            )
            assert known is not None
            if not known["first"]:
                return
            visit = None
            if known["visit_status"] is not None:
                visit = KnownVisit(
                    known["visit_start"], known["visit_status"], known["visit_status_at"]
                )
            refused = why_not_open(trigger, known["status"], visit)
            if refused is not None:
                # Deceased or transferred out; or the clinic already told us the patient came.
                log.info("trigger_ignored", reason=refused, event_id=trigger.event_id)
                return
            ctx = self._ctx(tx.now, known["opted"] or ())
            if known["birth_date"] is not None:
                # A child (followup.patients sends no adult's birth date): the safeguarding
                # rule needs the missed visits too (children are few: a statement for them).
                missed = 0
                if trigger.kind == "no_show":
                    missed = 1 + await _missed_visits(tx, trigger.patient_id)
                ctx = replace(ctx, birth_date=known["birth_date"], missed_visits=missed)
            cases = await _load(
                tx, "c.patient_id = $1 AND (c.state <> 'closed' OR c.case_id = $2)",
                trigger.patient_id, trigger.case_id or "",
            )  # fmt: skip
            if trigger.kind == "unanswered_call" and trigger.case_id is not None:
                own = next((c for c in cases if c.case_id == trigger.case_id), None)
                if own is not None:
                    # Our own call task expired without a result: treat it as unanswered.
                    own.task_expired(ctx)
                    tx.batch.add(own)
                    return
            same = next((c for c in cases if c.same_follow_up(trigger)), None)
            if same is not None:
                if same.trigger_event_id != trigger.event_id:  # else a replay of its own
                    same.join(trigger, ctx)
                    tx.batch.add(same)
                return
            plan = known["plan"]
            completions = json.loads(known["completions"] or "{}")
            case = Case.open(
                trigger,
                ctx,
                TreatmentPlanEvent.model_validate_json(plan) if plan else None,
                {k: datetime.fromisoformat(v) for k, v in completions.items()},
                Preferences(
                    known["patient_zone"], known["preferred_channel"], known["contact_window"]
                ),
            )
            if not await _insert(tx, case):
                # Its id exists (a replay older than the retention of processed_events), or
                # a replica opened the same follow-up a moment ago: join that one.
                for other in await _load(tx, OPEN_OF_PATIENT, trigger.patient_id):
                    if other.case_id != case.case_id and other.same_follow_up(trigger):
                        other.join(trigger, ctx)
                        tx.batch.add(other)
                        break
                return
            case.plan_next(ctx)
            tx.batch.add(case)
        # Only the path that opened a case gets here (every other one returned).
        metrics.SITE_CASES_OPENED.labels(
            self._sites.current().label(trigger.site), trigger.kind
        ).inc()

    async def handle_outcome(self, outcome: OutcomeEvent) -> None:
        async with self._tx() as tx:
            where = _attempt_of(outcome)
            kind = outcome.outcome
            # One statement: the event noted, the conversation noted, the opt-outs read.
            known = await tx.conn.fetchrow(
                _noted("outcomes")
                + """,
                   replied AS (
                       INSERT INTO open_replies (patient_id, since)
                       SELECT $3, $2 WHERE $4 AND EXISTS (SELECT 1 FROM noted)
                       ON CONFLICT DO NOTHING),
                   answered AS (
                       DELETE FROM open_replies
                        WHERE patient_id = $3 AND $5 AND EXISTS (SELECT 1 FROM noted))
                   SELECT EXISTS (SELECT 1 FROM noted) AS first,
                       (SELECT array_agg(channel) FROM channel_opt_outs
                         WHERE patient_id = $3) AS opted""",
                outcome.event_id,
                tx.now,
                outcome.patient_id,
                kind == "reply",
                kind in CALL_RESULTS,
            )
            assert known is not None
            if not known["first"]:
                return
            if kind == "feedback":
                await _feedback_answered(tx, outcome)
                return
            opted = set(known["opted"] or ())
            touched: dict[str, Case] = {}
            if kind in ("opt_out", "opt_in"):
                touched = {c.case_id: c for c in await self._opt(tx, outcome, opted)}
            case = touched.get(where[0]) if where is not None else None
            if where is not None and case is None:
                loaded = await _load(tx, "c.case_id = $1", where[0])
                case = loaded[0] if loaded else None
            if where is not None and case is not None:
                # Not one of ours (where is None: e.g. the clinic's own call): the tracker's.
                ctx = self._ctx(tx.now, opted)
                case.record_outcome(
                    where[1],
                    kind,
                    outcome.channel,
                    ctx,
                    detail=outcome.detail,
                    respond_by=outcome.respond_by,
                    note=outcome.note,
                )
                touched[case.case_id] = case
            for changed in touched.values():
                tx.batch.add(changed)  # each case once, after all its transitions

    async def _opt(self, tx: Tx, outcome: OutcomeEvent, opted: set[str]) -> list[Case]:
        """STOP on a channel holds for every case of the patient; the cadence falls back.
        Returns the open cases it replanned (not yet added to the batch)."""
        if outcome.outcome == "opt_out":
            opted.add(outcome.channel)
            await tx.conn.execute(
                "INSERT INTO channel_opt_outs (patient_id, channel, opted_out_at) "
                "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                outcome.patient_id,
                outcome.channel,
                tx.now,
            )
        else:
            opted.discard(outcome.channel)
            await tx.conn.execute(
                "DELETE FROM channel_opt_outs WHERE patient_id = $1 AND channel = $2",
                outcome.patient_id,
                outcome.channel,
            )
        ctx = self._ctx(tx.now, opted)
        kind: Literal["opt_out", "opt_in"] = "opt_out" if outcome.outcome == "opt_out" else "opt_in"
        cases = await _load(tx, OPEN_OF_PATIENT, outcome.patient_id)
        for case in cases:
            case.opt(kind, outcome.channel, ctx)
        return cases

    async def correct_outcome(
        self, case_id: str, attempt_number: int, correction: OutcomeCorrection
    ) -> CorrectionResult:
        """An administrator replaces a wrong outcome; the undo is itself in the history."""
        async with self._tx() as tx:
            cases = await _load(tx, "c.case_id = $1", case_id)
            attempt = cases[0].attempt(attempt_number) if cases else None
            if not cases or attempt is None or attempt.state != "fired":
                raise LookupError("no such fired attempt")
            case = cases[0]
            key = f"{case_id}:{attempt_number}:{correction.correction_id}"
            known = await tx.conn.fetchrow(
                _noted("corrections")
                + """
                   SELECT EXISTS (SELECT 1 FROM noted) AS first,
                       (SELECT array_agg(channel) FROM channel_opt_outs
                         WHERE patient_id = $3) AS opted,
                       EXISTS (SELECT 1 FROM cases o WHERE o.patient_id = $3
                           AND o.reason = $4 AND o.state <> 'closed'
                           AND o.case_id <> $5) AS other_open""",
                key,
                tx.now,
                case.patient_id,
                case.reason,
                case.case_id,
            )
            assert known is not None
            if not known["first"]:
                return "duplicate"
            ctx = self._ctx(tx.now, known["opted"] or ())
            result = case.correct(attempt_number, correction, ctx, other_open=known["other_open"])
            tx.batch.add(case)
            return result

    async def handle_appointment(self, appointment: AppointmentEvent) -> None:
        async with self._tx() as tx:
            a = appointment
            # After an erasure, the hospital sending the patient again (a visit newer than
            # the erasure) is what makes them contactable anew.
            await tx.conn.execute(
                """UPDATE patient_status SET status = 'active', effective_at = $2
                   WHERE patient_id = $1 AND status = 'erased' AND effective_at < $2""",
                a.patient_id,
                a.occurred_at,
            )
            completes = a.status == "fulfilled" and a.plan_id is not None and a.stage_id is not None
            known = await tx.conn.fetchrow(
                _noted("appointments")
                + """,
                   seen AS (
                       INSERT INTO known_appointments (appointment_id, patient_id, start,
                           status, status_at, occurred_at)
                       SELECT $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM noted)
                       ON CONFLICT (appointment_id) DO UPDATE
                       SET start = COALESCE(EXCLUDED.start, known_appointments.start),
                           status = EXCLUDED.status, status_at = EXCLUDED.status_at,
                           occurred_at = EXCLUDED.occurred_at
                       WHERE known_appointments.occurred_at <= EXCLUDED.occurred_at),
                   completed AS (
                       INSERT INTO stage_completions (plan_id, stage_id, completed_at)
                       SELECT $9, $10, $11 WHERE $12 AND EXISTS (SELECT 1 FROM noted)
                       ON CONFLICT DO NOTHING)
                   SELECT EXISTS (SELECT 1 FROM noted) AS first,
                       (SELECT array_agg(channel) FROM channel_opt_outs
                         WHERE patient_id = $4) AS opted""",
                a.event_id,
                tx.now,
                a.appointment_id,
                a.patient_id,
                a.start,
                a.status,
                a.status_at,
                a.occurred_at,
                a.plan_id,
                a.stage_id,
                a.status_at or a.start or a.occurred_at,
                completes,
            )
            assert known is not None
            if not known["first"]:
                return
            ctx = self._ctx(tx.now, known["opted"] or ())
            for case in await _load(tx, OPEN_OF_PATIENT, a.patient_id):
                case.appointment(appointment, ctx)
                if case.closed and case.resolution == "recovered":
                    await _await_feedback(tx, case, a, ctx.opted_out)
                tx.batch.add(case)
            if a.status == "booked" and a.department is not None:
                since = tx.now - timedelta(days=FEEDBACK_BOOKING_DAYS)
                for case in await _load(tx, RECOVERED_BY_CALL, a.patient_id, a.department, since):
                    await _await_feedback(tx, case, a, ctx.opted_out)
            if a.status in ATTENDED:
                await _ask_feedback(tx, a)

    async def handle_plan(self, plan: TreatmentPlanEvent) -> None:
        async with self._tx() as tx:
            if not await _first_time(tx, "plans", plan.event_id):
                return
            await tx.conn.execute(
                """INSERT INTO plans (plan_id, patient_id, department, occurred_at, payload)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (plan_id) DO UPDATE SET payload = EXCLUDED.payload,
                       occurred_at = EXCLUDED.occurred_at, department = EXCLUDED.department
                   WHERE plans.occurred_at <= EXCLUDED.occurred_at""",
                plan.plan_id,
                plan.patient_id,
                plan.department,
                plan.occurred_at,
                plan.model_dump_json(),
            )
            rows = await tx.conn.fetch(
                "SELECT stage_id, completed_at FROM stage_completions WHERE plan_id = $1",
                plan.plan_id,
            )
            closed = self._policy.rules_for(
                plan.department, "stage_window_at_risk", plan.site
            ).closed_on
            done = {r["stage_id"]: r["completed_at"] for r in rows}
            found = next_stage_deadline(plan, done, closed)
            if found is None:
                return
            cases = await _load(tx, "c.plan_id = $1 AND c.state <> 'closed'", plan.plan_id)
            opted = await _opted_out(tx.conn, {c.patient_id for c in cases})
            for case in cases:
                ctx = self._ctx(tx.now, opted.get(case.patient_id, ()))
                case.deadline_changed(found.deadline, plan.supervisor_id, ctx)
                tx.batch.add(case)

    async def handle_patient_status(self, event: PatientStatusEvent) -> None:
        async with self._tx() as tx:
            if not await _first_time(tx, "patients", event.event_id):
                return
            if event.fields_sent is not None:
                # A birth date alone (HL7): the status, its moment and the preferences stay
                # as stored; a new row is active since ever (no death is overridden by it).
                await tx.conn.execute(
                    """INSERT INTO patient_status (patient_id, status, effective_at, birth_date)
                       VALUES ($1, 'active', $2, $3)
                       ON CONFLICT (patient_id) DO UPDATE
                       SET birth_date = coalesce(EXCLUDED.birth_date, patient_status.birth_date)""",
                    event.patient_id,
                    EVER,
                    event.birth_date,
                )
                return
            # A birth date is only ever a child's; an event without one leaves it stored.
            await tx.conn.execute(
                """INSERT INTO patient_status (patient_id, status, effective_at, timezone,
                       preferred_channel, contact_window, birth_date)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (patient_id) DO UPDATE SET status = EXCLUDED.status,
                       effective_at = EXCLUDED.effective_at, timezone = EXCLUDED.timezone,
                       preferred_channel = EXCLUDED.preferred_channel,
                       contact_window = EXCLUDED.contact_window,
                       birth_date = coalesce(EXCLUDED.birth_date, patient_status.birth_date)
                   WHERE patient_status.effective_at <= EXCLUDED.effective_at""",
                event.patient_id,
                event.status,
                event.effective_at,
                *astuple(preferences := Preferences.of(event)),
                event.birth_date,
            )
            if event.status == "active":
                cases = await _load(tx, OPEN_OF_PATIENT, event.patient_id)
                opted = await _opted_out(tx.conn, {event.patient_id})
                for case in cases:
                    ctx = self._ctx(tx.now, opted.get(case.patient_id, ()))
                    case.preferences_changed(preferences, ctx)
                    tx.batch.add(case)
                return
            if event.status == "erased":
                await _erase(tx, event)
            for case in await _load(tx, OPEN_OF_PATIENT, event.patient_id):
                case.patient_left(event.status, tx.now)
                tx.batch.add(case)

    # --- due work -------------------------------------------------------------------

    async def fire_due(self, limit: int = 200) -> int:
        """Fire the attempts due now: attempt marked fired and its command in the outbox."""
        async with self._tx() as tx:
            due = await tx.conn.fetch(DUE_IN_TURN, tx.now, limit, *_LANE_ARGS)
            if not due:
                return 0
            # Taken in turn across the lanes; fired in due order (a case's or a patient's
            # attempts in two lanes keep theirs).
            due = sorted(due, key=lambda r: r["due_at"])
            by_case: dict[str, list[AttemptRecord]] = defaultdict(list)
            for r in await tx.conn.fetch(ATTEMPTS_OF, list({r["case_id"] for r in due})):
                by_case[r["case_id"]].append(to_attempt(r))
            cases: dict[str, Case] = {}
            for r in due:
                if r["case_id"] not in cases:
                    cases[r["case_id"]] = to_case(r, by_case[r["case_id"]])
            contacts = await _lock_contacts(tx, sorted({c.patient_id for c in cases.values()}))
            desks = await _lock_desks(tx, self._policy, [cases[r["case_id"]] for r in due], due)

            def order(r: Record) -> tuple[Any, ...]:
                # Within a desk's capacity: nearest stage deadline first, then highest risk.
                case = cases[r["case_id"]]
                risk = case.risk(contacts.no_shows.get(case.patient_id, 0), tx.now).score
                return (case.stage_deadline is None, case.stage_deadline or tx.now, -risk)

            for r in sorted(due, key=order) if desks.limits else due:
                case = cases[r["case_id"]]
                attempt = case.attempt(r["due_number"])
                if attempt is None:
                    continue
                hold = None
                if attempt.purpose == "follow_up":
                    hold = contacts.hold(
                        case.patient_id, attempt.channel, self._caps(case.site), tx.now
                    )
                    if hold is None and attempt.channel == "call_task":
                        hold = desks.hold(case, self._policy, tx.now)
                ctx = Context(
                    tx.now,
                    self._policy,
                    opted_channels(contacts.opted.get(case.patient_id, ())),
                    contacts.no_shows.get(case.patient_id, 0),
                )
                fired = case.fire(attempt.number, ctx, hold)
                if fired is not None:
                    contacts.record(case.patient_id, fired, tx.now)
                    if fired.purpose == "follow_up" and fired.channel == "call_task":
                        desks.record(case, tx.now)
            for case in cases.values():
                tx.batch.add(case)
            await desks.write(tx)
            return len(due)

    async def next_due(self) -> datetime | None:
        """When the next planned attempt falls due (None: nothing planned)."""
        async with self._pool.acquire() as conn:
            return cast(datetime | None, await conn.fetchval(NEXT_DUE, *_LANE_ARGS))

    async def review_due(self, limit: int = 200) -> int:
        """Cases that asked to be looked at again (a close that waits for a window to end)."""
        async with self._tx() as tx:
            cases = await _load(
                tx,
                "c.case_id IN (SELECT case_id FROM cases WHERE review_at <= $1 "
                "AND state <> 'closed' ORDER BY review_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                tx.now,
                limit,
            )
            opted = await _opted_out(tx.conn, {c.patient_id for c in cases})
            for case in cases:
                case.review(self._ctx(tx.now, opted.get(case.patient_id, ())))
                tx.batch.add(case)
            return len(cases)

    async def prune_free_text(self, keep: timedelta, limit: int = 1_000) -> int:
        """Retention: the doctor's notes of cases closed longer than ``keep`` ago, and of
        plans unchanged that long with no case open or closed since, and the patients'
        feedback comments answered that long ago (ids, ratings and history stay)."""
        before = self._clock.now() - keep
        async with self._pool.acquire() as conn:
            cases = await conn.fetchval(
                """WITH old AS (SELECT case_id FROM cases WHERE closed_at < $1
                                AND (doctor_notes IS NOT NULL OR stage_name IS NOT NULL)
                                LIMIT $2)
                   , done AS (UPDATE cases c SET doctor_notes = NULL, stage_name = NULL
                              FROM old WHERE c.case_id = old.case_id RETURNING 1)
                   SELECT count(*) FROM done""",
                before,
                limit,
            )
            plans = await conn.fetchval(
                f"""WITH old AS (SELECT p.plan_id FROM plans p WHERE p.occurred_at < $1
                                 AND {_PLAN_HAS_NOTES} AND NOT EXISTS (SELECT 1 FROM cases c
                                     WHERE c.plan_id = p.plan_id
                                     AND (c.state <> 'closed' OR c.closed_at >= $1))
                                 LIMIT $2)
                    , done AS (UPDATE plans p SET payload = {_PLAN_WITHOUT_NOTES}
                               FROM old WHERE p.plan_id = old.plan_id RETURNING 1)
                    SELECT count(*) FROM done""",
                before,
                limit,
            )
            comments = await conn.fetchval(
                """WITH old AS (SELECT case_id FROM feedback WHERE answered_at < $1
                                AND comment IS NOT NULL LIMIT $2)
                   , done AS (UPDATE feedback f SET comment = NULL FROM old
                              WHERE f.case_id = old.case_id RETURNING 1)
                   SELECT count(*) FROM done""",
                before,
                limit,
            )
        if comments:
            RETENTION_PURGED.labels("scheduler", "feedback.comment").inc(comments)
        if cases:
            RETENTION_PURGED.labels("scheduler", "cases.notes").inc(cases)
        if plans:
            RETENTION_PURGED.labels("scheduler", "plans.notes").inc(plans)
        return int(cases) + int(plans) + int(comments)

    async def prune(self, keep: timedelta, limit: int = 10_000) -> int:
        """Forget consumed-event notes, published commands and visits older than ``keep``."""
        before = self._clock.now() - keep
        async with self._pool.acquire() as conn:
            events = await conn.fetchval(
                """WITH old AS (SELECT topic, event_id FROM processed_events
                                 WHERE processed_at < $1 LIMIT $2)
                   , gone AS (DELETE FROM processed_events p USING old
                               WHERE p.topic = old.topic AND p.event_id = old.event_id
                               RETURNING 1)
                   SELECT count(*) FROM gone""",
                before,
                limit,
            )
            commands = await conn.fetchval(
                """WITH gone AS (DELETE FROM outbox WHERE id IN (
                       SELECT id FROM outbox WHERE published_at < $1 LIMIT $2) RETURNING 1)
                   SELECT count(*) FROM gone""",
                before,
                limit,
            )
            visits = await conn.fetchval(
                """WITH gone AS (DELETE FROM known_appointments WHERE appointment_id IN (
                       SELECT appointment_id FROM known_appointments WHERE start < $1
                       LIMIT $2) RETURNING 1)
                   SELECT count(*) FROM gone""",
                before,
                limit,
            )
            # A desk's count only matters on its own day; a few rows per department and day.
            desks = await conn.fetchval(
                """WITH gone AS (DELETE FROM desk_calls WHERE day < $1::date RETURNING 1)
                   SELECT count(*) FROM gone""",
                before.date(),
            )
        return int(events) + int(commands) + int(visits) + int(desks)

    # --- gauges ---------------------------------------------------------------------

    async def refresh_gauges(self) -> None:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT state, count(*) AS n FROM cases WHERE state <> 'closed' GROUP BY state"
            )
            backlog = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        counts = {r["state"]: r["n"] for r in rows}
        for state in CaseState:
            if state is not CaseState.CLOSED:
                metrics.OPEN_CASES.labels(state.value).set(counts.get(state.value, 0))
        metrics.OUTBOX_BACKLOG.set(backlog)

    async def refresh_slow_gauges(self) -> None:
        """The age of the oldest open case and the call tasks past their window, against the
        injected clock. Slow on purpose: each is a scan of the open cases."""
        now = self._clock.now()
        async with self._pool.acquire() as conn:
            oldest = await conn.fetchval("SELECT min(opened_at) FROM cases WHERE state <> 'closed'")
            overdue = await conn.fetchval(CALL_TASKS_PAST_WINDOW, now, list(HANDED_OUT))
        age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        metrics.OLDEST_OPEN_CASE_AGE.set(age)
        metrics.CALL_TASKS_PAST_WINDOW.set(overdue)


# --- SQL pieces ------------------------------------------------------------------------

# A call task the desk still owes a result for: handed out (fired; the notifier may have
# reported it created or delivered), not withdrawn, its window over, its case open.
CALL_TASKS_PAST_WINDOW = """
    SELECT count(*) FROM attempts a JOIN cases c ON c.case_id = a.case_id
    WHERE a.channel = 'call_task' AND a.state = 'fired' AND a.withdrawn_at IS NULL
      AND a.window_end < $1 AND c.state <> 'closed'
      AND (a.outcome IS NULL OR a.outcome = ANY($2::text[]))"""
# The notifier's reports that a task reached the desk; anything else is a result or a failure.
HANDED_OUT = ("task_created", "sent", "delivered")


async def _load(tx: Tx, where: str, *args: Any) -> list[Case]:
    """The cases ``where`` says, locked in case-id order (as every handler: no deadlock),
    with their attempts."""
    rows = await tx.conn.fetch(CASES_LOCKED.format(where=where), *args)
    if not rows:
        return []
    attempts: dict[str, list[AttemptRecord]] = defaultdict(list)
    for a in await tx.conn.fetch(ATTEMPTS_OF, [r["case_id"] for r in rows]):
        attempts[a["case_id"]].append(to_attempt(a))
    return [to_case(r, attempts[r["case_id"]]) for r in rows]


async def _insert(tx: Tx, case: Case) -> bool:
    """The new case's row; False when its (deterministic) id exists already."""
    inserted = await tx.conn.fetchval(
        INSERT_CASE,
        case.case_id,
        case.patient_id,
        case.reason,
        case.department,
        case.timezone,
        case.state.value,
        case.trigger_event_id,
        case.fact_at,
        case.opened_at,
        case.appointment_id,
        case.appointment_start,
        case.practitioner_id,
        case.supervisor_id,
        case.plan_id,
        case.stage_id,
        case.stage_name,
        case.doctor_notes,
        case.stage_deadline,
        case.patient_timezone,
        case.updated_at,
        case.preferred_channel,
        case.contact_window,
        _education_json(case.education),
        case.child,
        case.safeguarding_at,
    )
    if inserted is None:
        return False
    if case.site is not None:
        # Its own statement: the INSERT above stays as it is for a deployment of one site.
        await tx.conn.execute(
            "UPDATE cases SET site = $2 WHERE case_id = $1", case.case_id, case.site
        )
    case.loaded()
    return True


@dataclass
class _Contacts:
    """The batch's patients' recent contacts, open conversations and opt-outs, read under
    their locks."""

    sent: dict[tuple[str, str], list[datetime]] = field(default_factory=lambda: defaultdict(list))
    tasks: dict[str, list[tuple[datetime, datetime]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    replies: dict[str, datetime] = field(default_factory=dict)
    opted: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    no_shows: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def hold(
        self, patient: str, channel: Channel, rules: ContactRules, now: datetime
    ) -> FiringHeld | None:
        ends = conversation_until(self.tasks[patient], self.replies.get(patient), rules, now)
        return hold_for(channel, self.sent[(patient, channel_class(channel))], ends, rules, now)

    def record(self, patient: str, attempt: AttemptRecord, now: datetime) -> None:
        if attempt.purpose != "follow_up":
            return
        self.sent[(patient, channel_class(attempt.channel))].append(now)
        if attempt.channel == "call_task":
            self.tasks[patient].append((now, attempt.window_end))


async def _lock_contacts(tx: Tx, patients: list[str]) -> _Contacts:
    """Lock the patients (sorted, so replicas never deadlock) and read their contacts."""
    await tx.conn.execute(
        "INSERT INTO patient_locks (patient_id) SELECT p FROM unnest($1::text[]) AS p "
        "ORDER BY p ON CONFLICT DO NOTHING",
        patients,
    )
    await tx.conn.execute(
        "SELECT patient_id FROM patient_locks WHERE patient_id = ANY($1) "
        "ORDER BY patient_id FOR UPDATE",
        patients,
    )
    contacts = _Contacts()
    # One statement for the four kinds of facts (``kind`` says which).
    for r in await tx.conn.fetch(
        """SELECT 'sent' AS kind, patient_id, channel_class AS what, sent_at AS t1,
                  NULL::timestamptz AS t2
             FROM contact_log WHERE patient_id = ANY($1) AND sent_at > $2
           UNION ALL
           SELECT 'task', c.patient_id, NULL, a.fired_at, a.window_end
             FROM attempts a JOIN cases c ON c.case_id = a.case_id
            WHERE c.patient_id = ANY($1) AND c.state <> 'closed'
              AND a.channel = 'call_task' AND a.purpose = 'follow_up' AND a.state = 'fired'
              AND (a.outcome IS NULL OR a.outcome = 'task_created') AND a.window_end > $3
           UNION ALL
           SELECT 'reply', patient_id, NULL, since, NULL FROM open_replies
            WHERE patient_id = ANY($1)
           UNION ALL
           SELECT 'opted', patient_id, channel, NULL, NULL FROM channel_opt_outs
            WHERE patient_id = ANY($1)
           UNION ALL
           SELECT 'no_show', patient_id, NULL, NULL, NULL FROM cases
            WHERE patient_id = ANY($1) AND reason = 'no_show'""",
        patients,
        tx.now - WEEK,
        tx.now,
    ):
        patient, kind = r["patient_id"], r["kind"]
        if kind == "sent":
            contacts.sent[(patient, r["what"])].append(r["t1"])
        elif kind == "task":
            contacts.tasks[patient].append((r["t1"], r["t2"]))
        elif kind == "reply":
            contacts.replies[patient] = r["t1"]
        elif kind == "no_show":
            contacts.no_shows[patient] += 1
        else:
            contacts.opted[patient].add(r["what"])
    return contacts


@dataclass
class _Desks:
    """The front desks' call tasks handed out today, read under their row locks (only for
    desks with a capacity in the policy: the others cost no statement)."""

    limits: dict[str, int] = field(default_factory=dict)
    calls: dict[tuple[str, date], int] = field(default_factory=dict)
    changed: set[tuple[str, date]] = field(default_factory=set)

    def hold(self, case: Case, policy: CadencePolicy, now: datetime) -> FiringHeld | None:
        limit = self.limits.get(_desk(case))
        if limit is None:
            return None
        zone = ZoneInfo(case.timezone)
        day = now.astimezone(zone).date()
        rules = policy.rules_for(case.department, case.reason, case.site)
        return desk_hold(
            self.calls.get((_desk(case), day), 0), limit, next_open_day(rules, zone, now)
        )

    def record(self, case: Case, now: datetime) -> None:
        if _desk(case) not in self.limits:
            return
        key = (_desk(case), now.astimezone(ZoneInfo(case.timezone)).date())
        self.calls[key] = self.calls.get(key, 0) + 1
        self.changed.add(key)

    async def write(self, tx: Tx) -> None:
        if self.changed:
            keys = sorted(self.changed)
            await tx.conn.execute(
                "UPDATE desk_calls d SET calls = v.calls FROM unnest($1::text[], $2::date[], "
                "$3::int[]) AS v(department, day, calls) "
                "WHERE d.department = v.department AND d.day = v.day",
                [k[0] for k in keys],
                [k[1] for k in keys],
                [self.calls[k] for k in keys],
            )


def _desk(case: Case) -> str:
    """A front desk: a department of a site (two clinics' "dental" are two desks)."""
    return case.department if case.site is None else f"{case.site}:{case.department}"


async def _lock_desks(
    tx: Tx, policy: CadencePolicy, cases: list[Case], due: list[Record]
) -> _Desks:
    desks = _Desks()
    keys: set[tuple[str, date]] = set()
    for case, r in zip(cases, due, strict=True):
        attempt = case.attempt(r["due_number"])
        if attempt is None or attempt.channel != "call_task" or attempt.purpose != "follow_up":
            continue
        limit = policy.rules_for(case.department, case.reason, case.site).capacity.calls_per_day
        if limit is not None:
            desks.limits[_desk(case)] = limit
            keys.add((_desk(case), tx.now.astimezone(ZoneInfo(case.timezone)).date()))
    if not keys:
        return desks
    ordered = sorted(keys)  # one order for every replica: no deadlock
    departments, days = [k[0] for k in ordered], [k[1] for k in ordered]
    await tx.conn.execute(
        "INSERT INTO desk_calls (department, day) SELECT * FROM unnest($1::text[], $2::date[]) "
        "ON CONFLICT DO NOTHING",
        departments,
        days,
    )
    for r in await tx.conn.fetch(
        "SELECT d.department, d.day, d.calls FROM desk_calls d "
        "JOIN unnest($1::text[], $2::date[]) AS k(department, day) "
        "ON d.department = k.department AND d.day = k.day "
        "ORDER BY d.department, d.day FOR UPDATE OF d",
        departments,
        days,
    ):
        desks.calls[(r["department"], r["day"])] = r["calls"]
    return desks


# A stored plan (its event as JSON) without the stages' notes; names and ids stay.
_PLAN_WITHOUT_NOTES = """jsonb_set(payload, '{stages}', (SELECT jsonb_agg(s - 'notes'
    ORDER BY n) FROM jsonb_array_elements(payload -> 'stages') WITH ORDINALITY AS t(s, n)))"""
_PLAN_HAS_NOTES = """EXISTS (SELECT 1 FROM jsonb_array_elements(payload -> 'stages') s
    WHERE s -> 'notes' IS NOT NULL AND s -> 'notes' <> 'null'::jsonb)"""


async def _erase(tx: Tx, event: PatientStatusEvent) -> None:
    """An erasure request: the patient's free text goes from every table, ids and codes
    stay, and the erasure is recorded (ids only). Open cases drop theirs as they close."""
    patient = event.patient_id
    await tx.conn.execute(
        "UPDATE cases SET doctor_notes = NULL, stage_name = NULL WHERE patient_id = $1", patient
    )
    await tx.conn.execute("UPDATE feedback SET comment = NULL WHERE patient_id = $1", patient)
    await tx.conn.execute(
        "UPDATE patient_status SET birth_date = NULL WHERE patient_id = $1", patient
    )
    await tx.conn.execute(
        f"UPDATE plans SET payload = {_PLAN_WITHOUT_NOTES} WHERE patient_id = $1", patient
    )
    await tx.conn.execute(
        "UPDATE outbox SET payload = payload - 'doctor_notes' - 'stage_name' WHERE patient_id = $1",
        patient,
    )
    await tx.conn.execute(
        """INSERT INTO erasures (event_id, patient_id, requested_by, requested_at, erased_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING""",
        event.event_id,
        patient,
        event.requested_by,
        event.effective_at,
        tx.now,
    )
    ERASURES.labels("scheduler", "request").inc()


def _education_json(education: tuple[StageEducation, ...]) -> str | None:
    return json.dumps([e.model_dump() for e in education]) if education else None


def _education(raw: str | None) -> tuple[StageEducation, ...]:
    return tuple(StageEducation.model_validate(e) for e in json.loads(raw)) if raw else ()


async def _await_feedback(
    tx: Tx, case: Case, booking: AppointmentEvent, opted_out: frozenset[Channel]
) -> None:
    """The patient rebooked after we reached out: ask them once the visit is attended."""
    channel = feedback_channel(case.preferred_channel, case.attempts, case.impossible, opted_out)
    if channel is None:
        return  # no SMS or messenger left to ask on
    await tx.conn.execute(
        """INSERT INTO feedback (case_id, patient_id, department, timezone, appointment_id,
               channel, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (case_id) DO NOTHING""",
        case.case_id,
        case.patient_id,
        case.department,
        # The clinic's zone, as on every command (the notifier places the text in the
        # patient's own zone from their contact); a chain's clinic has its own.
        case.timezone,
        booking.appointment_id,
        channel,
        tx.now,
    )


async def _ask_feedback(tx: Tx, visit: AppointmentEvent) -> None:
    """The rebooked visit was attended: the question, once, through the outbox."""
    rows = await tx.conn.fetch(
        """UPDATE feedback f SET asked_at = $3 FROM cases c
           WHERE f.appointment_id = $1 AND f.patient_id = $2 AND f.asked_at IS NULL
             AND c.case_id = f.case_id
           RETURNING f.case_id, f.department, f.timezone, f.channel, c.reason, c.site""",
        visit.appointment_id,
        visit.patient_id,
        tx.now,
    )
    for row in rows:
        command = feedback_command(
            case_id=row["case_id"],
            patient_id=visit.patient_id,
            reason=row["reason"],
            department=row["department"],
            timezone=row["timezone"],
            channel=row["channel"],
            appointment_id=visit.appointment_id,
            now=tx.now,
            site=row["site"],
            not_before=ask_from(visit.status, visit.status_at, tx.now),
        )
        payload = encode(command).decode()
        tx.batch.rows[INSERT_OUTBOX].append(
            (command.idempotency_key, visit.patient_id, payload, tx.now)
        )
        tx.batch.tallies.append(
            Tally("feedback_asked", row["channel"], department=row["department"])
        )


async def _feedback_answered(tx: Tx, outcome: OutcomeEvent) -> None:
    """The patient's answer: kept once with the question (the comment for the case API)."""
    department = await tx.conn.fetchval(
        """UPDATE feedback SET rating = $2, comment = $3, answered_at = $4
           WHERE case_id = $1 AND asked_at IS NOT NULL AND answered_at IS NULL
           RETURNING department""",
        outcome.case_id,
        outcome.rating,
        outcome.note,
        outcome.occurred_at,
    )
    if department is not None:
        rating = outcome.rating or 0
        tally = Tally("feedback_rating", str(rating), float(rating), department=department)
        tx.batch.tallies.append(tally)


# The moment a status row that carries no news of the status is in force from.
EVER = datetime(1900, 1, 1, tzinfo=UTC)


async def _missed_visits(tx: Tx, patient_id: str) -> int:
    """The patient's missed visits the scheduler knows of: no-show triggers that opened or
    joined a case (a no-show later cleared by the visit's arrival is not one)."""
    found = await tx.conn.fetchval(
        """SELECT count(*) FROM case_history h JOIN cases c ON c.case_id = h.case_id
            WHERE c.patient_id = $1 AND c.resolution IS DISTINCT FROM 'cleared'
              AND ((h.event = 'opened' AND c.reason = 'no_show')
                OR (h.event = 'joined' AND h.detail->>'reason' = 'no_show'))""",
        patient_id,
    )
    return int(found or 0)


async def _first_time(tx: Tx, topic: str, event_id: str) -> bool:
    noted = await tx.conn.fetchval(
        "INSERT INTO processed_events (topic, event_id, processed_at) VALUES ($1, $2, $3) "
        "ON CONFLICT DO NOTHING RETURNING event_id",
        topic,
        event_id,
        tx.now,
    )
    return noted is not None


async def _opted_out(conn: Conn, patient_ids: Iterable[str]) -> Mapping[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    ids = list(patient_ids)
    if not ids:
        return found
    for r in await conn.fetch(
        "SELECT patient_id, channel FROM channel_opt_outs WHERE patient_id = ANY($1)", ids
    ):
        found[r["patient_id"]].add(r["channel"])
    return found


def _attempt_of(outcome: OutcomeEvent) -> tuple[str, int] | None:
    if outcome.case_id is not None and outcome.attempt_number is not None:
        return outcome.case_id, outcome.attempt_number
    if outcome.idempotency_key is not None:
        return parse_idempotency_key(outcome.idempotency_key)
    return None
