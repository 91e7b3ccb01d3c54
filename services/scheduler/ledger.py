"""The case ledger in PostgreSQL: the SQL adapter around the cadence engine.

Every handler is one short transaction that locks the case rows it changes, asks the pure
core (``cadence``, ``cases``) what to do, and writes the result. Consumed events are noted
in ``processed_events`` so a redelivered message changes nothing; commands go to the
``outbox`` in the same transaction as the attempt that caused them. Metrics are counted
only after the transaction committed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias, cast

import asyncpg

from common.clock import Clock
from common.codec import encode
from common.logs import get_logger
from common.treatment import next_stage_deadline
from schemas.base import Channel
from schemas.events import (
    CALL_RESULTS,
    AppointmentEvent,
    NotificationCommand,
    OutcomeEvent,
    OutcomeKind,
    PatientStatusEvent,
    TreatmentPlanEvent,
    TriggerEvent,
)
from services.scheduler import metrics
from services.scheduler.cadence import (
    AttemptRecord,
    CaseView,
    Close,
    Escalate,
    PlanAttempt,
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
    parse_idempotency_key,
    should_record,
    task_still_out,
    withdrawal_key,
)
from services.scheduler.guards import (
    WEEK,
    ContactRules,
    Hold,
    channel_class,
    conversation_until,
    hold_for,
)
from services.scheduler.policy import CadencePolicy

log = get_logger(__name__)
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
Record: TypeAlias = asyncpg.Record
AfterCommit = list[Callable[[], None]]


@dataclass(frozen=True)
class Tx:
    conn: Conn
    now: datetime
    after: AfterCommit
    # Writes sent together, one round trip per statement instead of one per row: history,
    # outbox and contact-log inserts (nobody reads them back), and the per-attempt writes of
    # firing and planning (attempt fired or cancelled, case contacted, next attempt planned).
    # Statements are not kept in order among themselves, so reading a case or its attempts
    # (``_lock_case``, ``_attempts``, ``_lock_open_cases``) and a direct write to a row that
    # may have a pending write (closing, escalating, holding) flushes first.
    pending: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)

    def write_later(self, sql: str, *args: Any) -> None:
        self.pending.setdefault(sql, []).append(args)

    async def flush(self) -> None:
        for sql, rows in self.pending.items():
            await self.conn.executemany(sql, rows)
        self.pending.clear()


def to_attempt(row: Record) -> AttemptRecord:
    return AttemptRecord(
        number=row["attempt_number"],
        purpose=row["purpose"],
        channel=row["channel"],
        state=row["state"],
        planned_at=row["planned_at"],
        window_end=row["window_end"],
        fired_at=row["fired_at"],
        outcome=row["outcome"],
        escalate_to=row["escalate_to"],
        callback_at=row["callback_at"],
    )


def to_facts(row: Record) -> CaseFacts:
    return CaseFacts(
        case_id=row["case_id"],
        patient_id=row["patient_id"],
        reason=row["reason"],
        department=row["department"],
        timezone=row["timezone"],
        practitioner_id=row["practitioner_id"],
        appointment_id=row["appointment_id"],
        appointment_start=row["appointment_start"],
        plan_id=row["plan_id"],
        stage_id=row["stage_id"],
        stage_name=row["stage_name"],
        stage_deadline=row["stage_deadline"],
        doctor_notes=row["doctor_notes"],
        opened_at=row["opened_at"],
        contacted=row["first_contact_at"] is not None,
    )


class CaseLedger:
    def __init__(
        self,
        pool: asyncpg.Pool,
        policy: CadencePolicy,
        clock: Clock,
        contact_rules: ContactRules | None = None,
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._clock = clock
        self._contact_rules = contact_rules or ContactRules()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Tx]:
        after: AfterCommit = []
        async with self._pool.acquire() as conn, conn.transaction():
            tx = Tx(conn, self._clock.now(), after)
            yield tx
            await tx.flush()
        for effect in after:
            effect()

    # --- consumed events ------------------------------------------------------------

    async def handle_trigger(self, trigger: TriggerEvent) -> None:
        async with self._tx() as tx:
            if not await _first_time(tx, "triggers", trigger.event_id):
                return
            if await _not_contactable(tx.conn, trigger.patient_id):
                log.info("trigger_ignored", reason="not_contactable", event_id=trigger.event_id)
                return
            if trigger.kind == "unanswered_call" and trigger.case_id is not None:
                own = await _lock_case(tx, trigger.case_id)
                if own is not None:
                    # Our own call task expired without a result: treat it as unanswered.
                    if own["state"] != "closed":
                        _history(tx, own["case_id"], "task_expired", own["state"], {})
                        await self._replan(tx, own["case_id"], replace_planned=True)
                    return
            await self._open(tx, trigger)

    async def _open(self, tx: Tx, trigger: TriggerEvent) -> None:
        plan = await _plan(tx.conn, trigger.plan_id) if trigger.plan_id else None
        stage_name = doctor_notes = supervisor = None
        deadline = trigger.stage_deadline
        practitioner = trigger.practitioner_id
        if plan is not None:
            supervisor = plan.supervisor_id
            practitioner = practitioner or plan.responsible_practitioner_id
            found = next_stage_deadline(plan, await _completions(tx.conn, plan.plan_id))
            stage = next((s for s in plan.stages if s.stage_id == trigger.stage_id), None)
            stage = stage or (found.stage if found is not None else None)
            if stage is not None:
                stage_name, doctor_notes = stage.name, stage.notes
                if deadline is None and found is not None and found.stage == stage:
                    deadline = found.deadline
        fact_at = trigger.detected_at
        if trigger.kind == "no_show" and trigger.appointment_start is not None:
            fact_at = trigger.appointment_start  # the first delay counts from the missed visit
        case_id = case_id_for(trigger.event_id)
        inserted = await tx.conn.fetchval(
            """INSERT INTO cases (case_id, patient_id, reason, department, timezone, state,
                   trigger_event_id, fact_at, opened_at, appointment_id, appointment_start,
                   practitioner_id, supervisor_id, plan_id, stage_id, stage_name, doctor_notes,
                   stage_deadline, updated_at)
               VALUES ($1, $2, $3, $4, $5, 'open', $6, $7, $8, $9, $10, $11, $12, $13, $14,
                   $15, $16, $17, $8)
               ON CONFLICT DO NOTHING
               RETURNING case_id""",
            case_id,
            trigger.patient_id,
            trigger.kind,
            trigger.department,
            trigger.timezone,
            trigger.event_id,
            fact_at,
            tx.now,
            trigger.appointment_id,
            trigger.appointment_start,
            practitioner,
            supervisor,
            trigger.plan_id,
            trigger.stage_id,
            stage_name,
            doctor_notes,
            deadline,
        )
        if inserted is None:
            if await tx.conn.fetchval("SELECT 1 FROM cases WHERE case_id = $1", case_id):
                return  # a replay older than the retention of processed_events
            # A second trigger for the same patient and reason joins the open case.
            joined = await tx.conn.fetchval(
                "SELECT case_id FROM cases WHERE patient_id = $1 AND reason = $2 "
                "AND state <> 'closed'",
                trigger.patient_id,
                trigger.kind,
            )
            if joined is not None:
                _history(tx, joined, "joined", "open", {"trigger": trigger.event_id})
            return
        _history(tx, case_id, "opened", "open", {"trigger": trigger.event_id})
        tx.after.append(metrics.CASES_OPENED.labels(trigger.kind).inc)
        await self._replan(tx, case_id)

    async def handle_outcome(self, outcome: OutcomeEvent) -> None:
        async with self._tx() as tx:
            if not await _first_time(tx, "outcomes", outcome.event_id):
                return
            if outcome.outcome in ("opt_out", "opt_in"):
                await self._opt(tx, outcome)
            await _note_conversation(tx, outcome)
            where = _attempt_of(outcome)
            if where is None:
                return  # not one of ours (e.g. the clinic's own call): the tracker's business
            case = await _lock_case(tx, where[0])
            if case is None:
                return
            row = await tx.conn.fetchrow(
                "SELECT * FROM attempts WHERE case_id = $1 AND attempt_number = $2",
                where[0],
                where[1],
            )
            if row is not None and should_record(row["outcome"], outcome.outcome):
                # A callback request may say when (respond_by): the next call is planned then.
                asked = outcome.respond_by if outcome.outcome == "callback_requested" else None
                await _set_outcome(tx, where, outcome.outcome, outcome.detail, asked)
            detail = {"attempt": where[1], "outcome": outcome.outcome, "detail": outcome.detail}
            _history(tx, case["case_id"], "outcome", case["state"], detail)
            if case["state"] == "closed" or outcome.outcome in ("opt_out", "opt_in"):
                return  # recorded; a closed case stays closed
            escalation = row is not None and row["purpose"] == "escalation"
            await self._apply(
                tx, case["case_id"], outcome.outcome, outcome.channel, outcome.detail, escalation
            )

    async def _apply(
        self,
        tx: Tx,
        case_id: str,
        kind: OutcomeKind,
        channel: Channel,
        detail: str | None,
        escalation: bool,
    ) -> None:
        """What an outcome of one attempt does to its open case."""
        effect = outcome_effect(kind, detail)
        if effect in ("recovered", "declined"):
            await _close(tx, case_id, cast(Resolution, effect))
        elif effect == "channel_lost":
            lost = lost_channels(kind, channel, detail)
            await tx.conn.execute(
                "UPDATE cases SET impossible_channels = ARRAY(SELECT DISTINCT unnest("
                "impossible_channels || $2::text[])) WHERE case_id = $1",
                case_id,
                sorted(lost),
            )
            await self._replan(tx, case_id, replace_planned=True)
        elif effect in ("unanswered", "callback") or escalation:
            await self._replan(tx, case_id, replace_planned=True)

    async def correct_outcome(
        self, case_id: str, attempt_number: int, correction: OutcomeCorrection
    ) -> CorrectionResult:
        """An administrator replaces a wrong outcome; the undo is itself in the history.

        A case closed by the wrong outcome itself (recovered, declined) opens again and is planned
        afresh, unless another case for the same patient and reason is open by now.
        """
        async with self._tx() as tx:
            case = await _lock_case(tx, case_id)
            row = await tx.conn.fetchrow(
                "SELECT * FROM attempts WHERE case_id = $1 AND attempt_number = $2 "
                "AND state = 'fired'",
                case_id,
                attempt_number,
            )
            if case is None or row is None:
                raise LookupError("no such fired attempt")
            key = f"{case_id}:{attempt_number}:{correction.correction_id}"
            if not await _first_time(tx, "corrections", key):
                return "duplicate"
            await _set_outcome(
                tx, (case_id, attempt_number), correction.outcome, correction.detail, None
            )
            detail = {
                "attempt": attempt_number,
                "from": row["outcome"],
                "to": correction.outcome,
                "by": correction.reported_by,
                "correction": correction.correction_id,
            }
            state = case["state"]
            _history(tx, case_id, "corrected", state, detail)
            tx.after.append(metrics.CORRECTIONS.inc)
            if state == "closed":
                closed_by_it = row["outcome"] is not None and case["resolution"] == (
                    outcome_effect(row["outcome"], row["outcome_detail"])
                )
                if not closed_by_it:
                    return "recorded"  # closed for another reason (a booking, deceased, ...)
                if not await _reopen(tx, case):
                    return "recorded"
            await self._apply(
                tx,
                case_id,
                correction.outcome,
                row["channel"],
                correction.detail,
                row["purpose"] == "escalation",
            )
            await self._replan(tx, case_id)  # a reopened case needs its next step
            return "applied"

    async def _opt(self, tx: Tx, outcome: OutcomeEvent) -> None:
        """STOP on a channel holds for every case of the patient; the cadence falls back."""
        if outcome.outcome == "opt_out":
            await tx.conn.execute(
                "INSERT INTO channel_opt_outs (patient_id, channel, opted_out_at) "
                "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                outcome.patient_id,
                outcome.channel,
                tx.now,
            )
        else:
            await tx.conn.execute(
                "DELETE FROM channel_opt_outs WHERE patient_id = $1 AND channel = $2",
                outcome.patient_id,
                outcome.channel,
            )
        for case in await _lock_open_cases(tx, outcome.patient_id):
            detail = {"channel": outcome.channel}
            _history(tx, case["case_id"], outcome.outcome, case["state"], detail)
            await self._replan(tx, case["case_id"], replace_planned=True)

    async def handle_appointment(self, appointment: AppointmentEvent) -> None:
        async with self._tx() as tx:
            if not await _first_time(tx, "appointments", appointment.event_id):
                return
            if appointment.status == "fulfilled" and appointment.plan_id and appointment.stage_id:
                await tx.conn.execute(
                    "INSERT INTO stage_completions (plan_id, stage_id, completed_at) "
                    "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    appointment.plan_id,
                    appointment.stage_id,
                    appointment.status_at or appointment.start or appointment.occurred_at,
                )
            for case in await _lock_open_cases(tx, appointment.patient_id):
                facts = to_facts(case)
                resolution = booking_resolution(facts, appointment)
                if resolution is not None:
                    detail = {"appointment": appointment.appointment_id}
                    _history(tx, case["case_id"], "booked", case["state"], detail)
                    await self._withdraw_tasks(tx, facts)  # nobody should call to rebook now
                    await _close(tx, case["case_id"], resolution)

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
            found = next_stage_deadline(plan, await _completions(tx.conn, plan.plan_id))
            if found is None:
                return
            deadline = found.deadline
            rows = await tx.conn.fetch(
                "SELECT * FROM cases WHERE plan_id = $1 AND state <> 'closed' "
                "ORDER BY case_id FOR UPDATE",  # the same order as every handler: no deadlock
                plan.plan_id,
            )
            for case in rows:
                if deadline == case["stage_deadline"]:
                    continue
                # The doctor changed the plan: the cadence is planned again against it.
                await tx.conn.execute(
                    "UPDATE cases SET stage_deadline = $2, supervisor_id = $3 WHERE case_id = $1",
                    case["case_id"],
                    deadline,
                    plan.supervisor_id,
                )
                detail = {"stage_deadline": deadline.isoformat()}
                _history(tx, case["case_id"], "deadline_changed", case["state"], detail)
                await self._replan(tx, case["case_id"], replace_planned=True)

    async def handle_patient_status(self, event: PatientStatusEvent) -> None:
        async with self._tx() as tx:
            if not await _first_time(tx, "patients", event.event_id):
                return
            await tx.conn.execute(
                """INSERT INTO patient_status (patient_id, status, effective_at)
                   VALUES ($1, $2, $3)
                   ON CONFLICT (patient_id) DO UPDATE SET status = EXCLUDED.status,
                       effective_at = EXCLUDED.effective_at
                   WHERE patient_status.effective_at <= EXCLUDED.effective_at""",
                event.patient_id,
                event.status,
                event.effective_at,
            )
            if event.status == "active":
                return
            for case in await _lock_open_cases(tx, event.patient_id):
                await self._withdraw_tasks(tx, to_facts(case))
                await _close(tx, case["case_id"], event.status)

    async def _withdraw_tasks(self, tx: Tx, facts: CaseFacts) -> None:
        """Withdraw the case's call tasks still out (window open, no result yet)."""
        attempts = await _attempts(tx, facts.case_id)
        for attempt in attempts:
            if task_still_out(attempt, tx.now):
                await self._withdraw(tx, facts, attempt, attempts)

    async def _withdraw(
        self, tx: Tx, facts: CaseFacts, attempt: AttemptRecord, attempts: Sequence[AttemptRecord]
    ) -> None:
        template = await tx.conn.fetchval(
            "UPDATE attempts SET withdrawn_at = $3 WHERE case_id = $1 AND attempt_number = $2 "
            "RETURNING template",
            facts.case_id,
            attempt.number,
            tx.now,
        )
        key = withdrawal_key(facts.case_id, attempt.number)
        command = build_command(
            facts, attempt, template, attempts, tx.now, purpose="withdrawal", key=key
        )
        _outbox(tx, command)
        _history(tx, facts.case_id, "withdrawn", "closed", {"attempt": attempt.number})

    # --- due work -------------------------------------------------------------------

    async def fire_due(self, limit: int = 200) -> int:
        """Fire the attempts due now: attempt marked fired and its command in the outbox."""
        async with self._tx() as tx:
            due = await tx.conn.fetch(
                """SELECT a.attempt_number, c.*
                     FROM attempts a JOIN cases c ON c.case_id = a.case_id
                    WHERE a.state = 'planned' AND a.planned_at <= $1
                    ORDER BY a.planned_at
                    LIMIT $2
                      FOR UPDATE OF a, c SKIP LOCKED""",
                tx.now,
                limit,
            )
            if not due:
                return 0
            cases = {r["case_id"]: r for r in due}  # locked with their due attempts above
            ids = list(cases)
            by_case: dict[str, list[AttemptRecord]] = defaultdict(list)
            templates: dict[tuple[str, int], str] = {}
            for r in await tx.conn.fetch(
                "SELECT * FROM attempts WHERE case_id = ANY($1) ORDER BY case_id, attempt_number",
                ids,
            ):
                by_case[r["case_id"]].append(to_attempt(r))
                templates[(r["case_id"], r["attempt_number"])] = r["template"]
            opted = await _opted_out_many(tx.conn, [c["patient_id"] for c in cases.values()])
            contacts = await _lock_contacts(tx, sorted({c["patient_id"] for c in cases.values()}))
            for r in due:
                case = cases[r["case_id"]]
                patient = case["patient_id"]
                attempts = by_case[r["case_id"]]
                index = next(i for i, a in enumerate(attempts) if a.number == r["attempt_number"])
                attempt = attempts[index]
                hold = None
                if attempt.purpose == "follow_up":
                    hold = contacts.hold(patient, attempt.channel, self._contact_rules, tx.now)
                if hold is not None:
                    await self._hold(tx, case, attempt, hold)
                    attempts.pop(index)
                else:
                    template = templates[(case["case_id"], attempt.number)]
                    attempts[index] = await self._fire_one(tx, case, attempt, template, attempts)
                    contacts.record(tx, case["case_id"], patient, attempts[index])
                not_before = hold.until if hold is not None else None
                await self._decide(tx, case, attempts, opted.get(patient, set()), not_before)
            return len(due)

    async def _hold(self, tx: Tx, case: Record, attempt: AttemptRecord, hold: Hold) -> None:
        """Not now: the step is planned afresh from ``hold.until`` (or escalates)."""
        await tx.flush()
        await tx.conn.execute(
            "DELETE FROM attempts WHERE case_id = $1 AND attempt_number = $2",
            case["case_id"],
            attempt.number,
        )
        detail = {"attempt": attempt.number, "rule": hold.rule, "until": hold.until.isoformat()}
        _history(tx, case["case_id"], "held", case["state"], detail)
        tx.after.append(metrics.HELD.labels(hold.rule).inc)

    async def _fire_one(
        self,
        tx: Tx,
        case: Record,
        attempt: AttemptRecord,
        template: str,
        attempts: Sequence[AttemptRecord],
    ) -> AttemptRecord:
        if tx.now >= attempt.window_end:
            # Useless now (the scheduler was away longer than the window): plan afresh.
            tx.write_later(
                "UPDATE attempts SET state = 'cancelled' WHERE case_id = $1 "
                "AND attempt_number = $2",
                case["case_id"],
                attempt.number,
            )
            _history(tx, case["case_id"], "expired", case["state"], {"attempt": attempt.number})
            return replace(attempt, state="cancelled")
        tx.write_later(
            "UPDATE attempts SET state = 'fired', fired_at = $3 WHERE case_id = $1 "
            "AND attempt_number = $2",
            case["case_id"],
            attempt.number,
            tx.now,
        )
        fired = replace(attempt, state="fired", fired_at=tx.now)
        command = build_command(to_facts(case), fired, template, attempts, tx.now)
        _outbox(tx, command)
        first = case["first_contact_at"] is None and attempt.purpose == "follow_up"
        state = "contacting" if case["state"] == "open" else case["state"]
        tx.write_later(
            "UPDATE cases SET state = $2, first_contact_at = COALESCE(first_contact_at, $3), "
            "updated_at = $4 WHERE case_id = $1",
            case["case_id"],
            state,
            tx.now if first else None,
            tx.now,
        )
        detail = {"attempt": attempt.number, "channel": attempt.channel}
        _history(tx, case["case_id"], "fired", state, detail)
        lateness = (tx.now - attempt.planned_at).total_seconds()
        tx.after.append(lambda: metrics.FIRING_LATENESS.observe(lateness))
        tx.after.append(metrics.ATTEMPTS_FIRED.labels(attempt.channel).inc)
        if first:
            waited = (tx.now - case["opened_at"]).total_seconds()
            tx.after.append(lambda: metrics.TIME_TO_FIRST_CONTACT.observe(waited))
        return fired

    async def review_due(self, limit: int = 200) -> int:
        """Cases that asked to be looked at again (a close that waits for a window to end)."""
        async with self._tx() as tx:
            rows = await tx.conn.fetch(
                """SELECT case_id FROM cases
                    WHERE review_at <= $1 AND state <> 'closed'
                    ORDER BY review_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
                tx.now,
                limit,
            )
            for r in rows:
                await tx.conn.execute(
                    "UPDATE cases SET review_at = NULL WHERE case_id = $1", r["case_id"]
                )
                await self._replan(tx, r["case_id"])
            return len(rows)

    # --- planning -------------------------------------------------------------------

    async def _replan(self, tx: Tx, case_id: str, *, replace_planned: bool = False) -> None:
        case = await _lock_case(tx, case_id)
        if case is None or case["state"] == "closed":
            return
        if replace_planned:
            # Never sent, so nothing to undo: the cadence decides afresh from what happened.
            await tx.conn.execute(
                "DELETE FROM attempts WHERE case_id = $1 AND state = 'planned'", case_id
            )
        attempts = await _attempts(tx, case_id)
        if any(a.state == "planned" for a in attempts):
            return
        opted = await _opted_out_many(tx.conn, [case["patient_id"]])
        await self._decide(tx, case, attempts, opted.get(case["patient_id"], set()))

    async def _decide(
        self,
        tx: Tx,
        case: Record,
        attempts: Sequence[AttemptRecord],
        opted: Iterable[str],
        not_before: datetime | None = None,
    ) -> None:
        rules = self._policy.rules_for(case["department"], case["reason"])
        view = CaseView(
            reason=case["reason"],
            timezone=case["timezone"],
            opened_at=case["fact_at"],
            attempts=tuple(attempts),
            stage_deadline=case["stage_deadline"],
            practitioner_id=case["practitioner_id"],
            supervisor_id=case["supervisor_id"],
            opted_out=frozenset(cast(Iterable[Channel], opted)),
            impossible=frozenset(case["impossible_channels"]),
            not_before=not_before,
        )
        decision = next_decision(rules, view, tx.now)
        number = max((a.number for a in attempts), default=0) + 1
        case_id = case["case_id"]
        if not isinstance(decision, PlanAttempt):
            await tx.flush()  # the writes below are not deferred: keep them after the pending
        if case["review_at"] is not None and not isinstance(decision, Close):
            # A step is planned again: the case no longer waits to be looked at.
            await tx.flush()
            await tx.conn.execute("UPDATE cases SET review_at = NULL WHERE case_id = $1", case_id)
        if isinstance(decision, PlanAttempt):
            _insert_attempt(
                tx,
                case_id,
                number,
                "follow_up",
                decision.channel,
                decision.template,
                decision.planned_at,
                decision.window_end,
                step_index=decision.step_index,
                tightened=decision.tightened,
            )
            detail = {
                "attempt": number,
                "channel": decision.channel,
                "planned_at": decision.planned_at.isoformat(),
                "tightened": decision.tightened,
                "moved_by": decision.moved_by,
            }
            _history(tx, case_id, "planned", case["state"], detail)
            tx.after.append(metrics.ATTEMPTS_PLANNED.labels(decision.channel).inc)
            if decision.moved_by is not None:
                tx.after.append(metrics.HELD.labels(decision.moved_by).inc)
        elif isinstance(decision, Escalate):
            _insert_attempt(
                tx,
                case_id,
                number,
                "escalation",
                "call_task",
                decision.template,
                decision.planned_at,
                decision.window_end,
                escalate_to=decision.to,
            )
            await tx.conn.execute(
                "UPDATE cases SET state = 'escalating', updated_at = $2 WHERE case_id = $1",
                case_id,
                tx.now,
            )
            detail = {"attempt": number, "reason": decision.reason, "to": decision.to}
            _history(tx, case_id, "escalation_planned", "escalating", detail)
            tx.after.append(metrics.ESCALATIONS.labels(decision.reason).inc)
            tx.after.append(metrics.ATTEMPTS_PLANNED.labels("call_task").inc)
            first_escalation = not any(a.purpose == "escalation" for a in attempts)
            if decision.reason == "deadline" and first_escalation:
                tx.after.append(metrics.DEADLINE_MISSES.inc)
        elif isinstance(decision, Close):
            if decision.at <= tx.now:
                await _close(tx, case_id, decision.resolution)
            else:
                await tx.conn.execute(
                    "UPDATE cases SET review_at = $2 WHERE case_id = $1", case_id, decision.at
                )

    async def prune(self, keep: timedelta, limit: int = 10_000) -> int:
        """Forget consumed-event notes and published commands older than ``keep``."""
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
        return int(events) + int(commands)

    # --- gauges ---------------------------------------------------------------------

    async def refresh_gauges(self) -> None:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT state, count(*) AS n FROM cases WHERE state <> 'closed' GROUP BY state"
            )
            backlog = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        counts = {r["state"]: r["n"] for r in rows}
        for state in ("open", "contacting", "escalating"):
            metrics.OPEN_CASES.labels(state).set(counts.get(state, 0))
        metrics.OUTBOX_BACKLOG.set(backlog)


# --- SQL pieces ------------------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeCorrection:
    correction_id: str
    outcome: OutcomeKind
    reported_by: str
    detail: str | None = None


CorrectionResult = Literal["applied", "recorded", "duplicate"]


async def _reopen(tx: Tx, case: Record) -> bool:
    """Open a wrongly closed case again, unless the patient has another open one for it."""
    reopened = await tx.conn.fetchval(
        """UPDATE cases SET state = 'contacting', resolution = NULL, closed_at = NULL,
               updated_at = $2
           WHERE case_id = $1 AND NOT EXISTS (
               SELECT 1 FROM cases o WHERE o.patient_id = cases.patient_id
                  AND o.reason = cases.reason AND o.state <> 'closed')
           RETURNING case_id""",
        case["case_id"],
        tx.now,
    )
    if reopened is None:
        return False
    _history(tx, case["case_id"], "reopened", "contacting", {})
    return True


@dataclass
class _Contacts:
    """The batch's patients' recent contacts and open conversations, under their locks."""

    sent: dict[tuple[str, str], list[datetime]]
    tasks: dict[str, list[tuple[datetime, datetime]]]
    replies: dict[str, datetime]

    def hold(
        self, patient: str, channel: Channel, rules: ContactRules, now: datetime
    ) -> Hold | None:
        ends = conversation_until(self.tasks[patient], self.replies.get(patient), rules, now)
        return hold_for(channel, self.sent[(patient, channel_class(channel))], ends, rules, now)

    def record(self, tx: Tx, case_id: str, patient: str, attempt: AttemptRecord) -> None:
        if attempt.state != "fired" or attempt.purpose != "follow_up":
            return
        kind = channel_class(attempt.channel)
        self.sent[(patient, kind)].append(tx.now)
        if attempt.channel == "call_task":
            self.tasks[patient].append((tx.now, attempt.window_end))
        tx.write_later(
            "INSERT INTO contact_log (case_id, attempt_number, patient_id, channel_class, "
            "sent_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            case_id,
            attempt.number,
            patient,
            kind,
            tx.now,
        )


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
    contacts = _Contacts(defaultdict(list), defaultdict(list), {})
    for r in await tx.conn.fetch(
        "SELECT patient_id, channel_class, sent_at FROM contact_log "
        "WHERE patient_id = ANY($1) AND sent_at > $2",
        patients,
        tx.now - WEEK,
    ):
        contacts.sent[(r["patient_id"], r["channel_class"])].append(r["sent_at"])
    for r in await tx.conn.fetch(
        """SELECT c.patient_id, a.fired_at, a.window_end
             FROM attempts a JOIN cases c ON c.case_id = a.case_id
            WHERE c.patient_id = ANY($1) AND c.state <> 'closed'
              AND a.channel = 'call_task' AND a.purpose = 'follow_up' AND a.state = 'fired'
              AND (a.outcome IS NULL OR a.outcome = 'task_created') AND a.window_end > $2""",
        patients,
        tx.now,
    ):
        contacts.tasks[r["patient_id"]].append((r["fired_at"], r["window_end"]))
    for r in await tx.conn.fetch(
        "SELECT patient_id, since FROM open_replies WHERE patient_id = ANY($1)", patients
    ):
        contacts.replies[r["patient_id"]] = r["since"]
    return contacts


async def _note_conversation(tx: Tx, outcome: OutcomeEvent) -> None:
    """A patient's reply opens a conversation; a call result from the front desk answers it."""
    if outcome.outcome == "reply":
        await tx.conn.execute(
            "INSERT INTO open_replies (patient_id, since) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            outcome.patient_id,
            tx.now,
        )
    elif outcome.outcome in CALL_RESULTS:
        await tx.conn.execute("DELETE FROM open_replies WHERE patient_id = $1", outcome.patient_id)


async def _first_time(tx: Tx, topic: str, event_id: str) -> bool:
    noted = await tx.conn.fetchval(
        "INSERT INTO processed_events (topic, event_id, processed_at) VALUES ($1, $2, $3) "
        "ON CONFLICT DO NOTHING RETURNING event_id",
        topic,
        event_id,
        tx.now,
    )
    return noted is not None


async def _not_contactable(conn: Conn, patient_id: str) -> bool:
    status = await conn.fetchval(
        "SELECT status FROM patient_status WHERE patient_id = $1", patient_id
    )
    return status is not None and status != "active"


async def _lock_case(tx: Tx, case_id: str) -> Record | None:
    await tx.flush()
    row: Record | None = await tx.conn.fetchrow(
        "SELECT * FROM cases WHERE case_id = $1 FOR UPDATE", case_id
    )
    return row


async def _lock_open_cases(tx: Tx, patient_id: str) -> list[Record]:
    await tx.flush()
    rows: list[Record] = await tx.conn.fetch(
        "SELECT * FROM cases WHERE patient_id = $1 AND state <> 'closed' "
        "ORDER BY case_id FOR UPDATE",
        patient_id,
    )
    return rows


async def _attempts(tx: Tx, case_id: str) -> list[AttemptRecord]:
    await tx.flush()
    rows = await tx.conn.fetch(
        "SELECT * FROM attempts WHERE case_id = $1 ORDER BY attempt_number", case_id
    )
    return [to_attempt(r) for r in rows]


async def _opted_out_many(conn: Conn, patient_ids: list[str]) -> Mapping[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for r in await conn.fetch(
        "SELECT patient_id, channel FROM channel_opt_outs WHERE patient_id = ANY($1)",
        patient_ids,
    ):
        found[r["patient_id"]].add(r["channel"])
    return found


async def _plan(conn: Conn, plan_id: str) -> TreatmentPlanEvent | None:
    payload = await conn.fetchval("SELECT payload FROM plans WHERE plan_id = $1", plan_id)
    return None if payload is None else TreatmentPlanEvent.model_validate_json(payload)


async def _completions(conn: Conn, plan_id: str) -> dict[str, datetime]:
    rows = await conn.fetch(
        "SELECT stage_id, completed_at FROM stage_completions WHERE plan_id = $1", plan_id
    )
    return {r["stage_id"]: r["completed_at"] for r in rows}


async def _set_outcome(
    tx: Tx,
    attempt: tuple[str, int],
    outcome: OutcomeKind,
    detail: str | None,
    callback_at: datetime | None,
) -> None:
    await tx.conn.execute(
        "UPDATE attempts SET outcome = $3, outcome_detail = $4, outcome_at = $5, "
        "callback_at = $6 WHERE case_id = $1 AND attempt_number = $2",
        *attempt,
        outcome,
        detail,
        tx.now,
        callback_at,
    )


def _attempt_of(outcome: OutcomeEvent) -> tuple[str, int] | None:
    if outcome.case_id is not None and outcome.attempt_number is not None:
        return outcome.case_id, outcome.attempt_number
    if outcome.idempotency_key is not None:
        return parse_idempotency_key(outcome.idempotency_key)
    return None


def _insert_attempt(
    tx: Tx,
    case_id: str,
    number: int,
    purpose: str,
    channel: Channel,
    template: str,
    planned_at: datetime,
    window_end: datetime,
    *,
    step_index: int | None = None,
    tightened: bool = False,
    escalate_to: str | None = None,
) -> None:
    tx.write_later(
        """INSERT INTO attempts (case_id, attempt_number, purpose, channel, template,
               escalate_to, state, step_index, tightened, planned_at, window_end)
           VALUES ($1, $2, $3, $4, $5, $6, 'planned', $7, $8, $9, $10)""",
        case_id,
        number,
        purpose,
        channel,
        template,
        escalate_to,
        step_index,
        tightened,
        planned_at,
        window_end,
    )


async def _close(tx: Tx, case_id: str, resolution: Resolution) -> None:
    await tx.flush()
    closed = await tx.conn.fetchval(
        """UPDATE cases SET state = 'closed', resolution = $2, closed_at = $3,
               review_at = NULL, updated_at = $3
           WHERE case_id = $1 AND state <> 'closed' RETURNING case_id""",
        case_id,
        resolution,
        tx.now,
    )
    if closed is None:
        return
    await tx.conn.execute(
        "UPDATE attempts SET state = 'cancelled' WHERE case_id = $1 AND state = 'planned'",
        case_id,
    )
    _history(tx, case_id, "closed", "closed", {"resolution": resolution})
    tx.after.append(metrics.CASES_CLOSED.labels(resolution).inc)


def _outbox(tx: Tx, command: NotificationCommand) -> None:
    tx.write_later(
        "INSERT INTO outbox (idempotency_key, patient_id, payload, created_at) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING",
        command.idempotency_key,
        command.patient_id,
        encode(command).decode(),
        tx.now,
    )


def _history(tx: Tx, case_id: str, event: str, state: str, detail: dict[str, Any]) -> None:
    tx.write_later(
        "INSERT INTO case_history (case_id, at, event, state, detail) VALUES ($1, $2, $3, $4, $5)",
        case_id,
        tx.now,
        event,
        state,
        json.dumps(detail),
    )
