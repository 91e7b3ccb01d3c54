"""Issue 8 on real PostgreSQL: caps across replicas and channels, conversations, late outcomes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from common.clock import ManualClock
from common.db import create_pool
from services.scheduler.cases import case_id_for
from services.scheduler.ledger import CaseLedger, OutcomeCorrection
from services.scheduler.policy import CadencePolicy
from tests.integration.scheduler.conftest import (
    MISSED,
    late_cancellation,
    no_show,
    outcome,
    patient_outcome,
)

pytestmark = pytest.mark.integration
PATIENTS = 40
REASONS = ("no_show", "late_cancellation", "stage_window_at_risk", "unanswered_call")


async def seed_four_messages_per_patient(pool: asyncpg.Pool) -> None:
    """Each patient has four open cases, each with an SMS or an email due now."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO cases (case_id, patient_id, reason, department, timezone, state,
                   trigger_event_id, fact_at, opened_at, updated_at)
               SELECT 'case-' || p || '-' || r, 'pat-' || p, ($1::text[])[r], 'dental',
                   'Europe/Vilnius', 'open', 'trigger-' || p || '-' || r, $2, $2, $2
               FROM generate_series(1, $3) AS p, generate_series(1, 4) AS r""",
            list(REASONS),
            MISSED,
            PATIENTS,
        )
        await conn.execute(
            """INSERT INTO attempts (case_id, attempt_number, purpose, channel, template, state,
                   planned_at, window_end)
               SELECT case_id, 1, 'follow_up', CASE WHEN reason IN ('no_show',
                   'stage_window_at_risk') THEN 'sms' ELSE 'email' END, 'x', 'planned', $1, $2
               FROM cases""",
            MISSED + timedelta(hours=1),
            MISSED + timedelta(hours=12),
        )


async def first_call_out(ledger: CaseLedger, clock: ManualClock) -> str:
    """A no-show case whose first call task went out to the front desk."""
    await ledger.handle_trigger(no_show())
    clock.set(MISSED + timedelta(hours=1))
    assert await ledger.fire_due() == 1
    return case_id_for("no_show:appt-1")


async def messages_per_patient(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT patient_id, count(*) AS n FROM contact_log WHERE channel_class = 'message' "
        "GROUP BY patient_id"
    )
    return {r["patient_id"]: r["n"] for r in rows}


async def test_caps_hold_across_two_replicas_and_across_channels(
    database_url: str, pg_schema: str, pool: asyncpg.Pool, policy: CadencePolicy
) -> None:
    await seed_four_messages_per_patient(pool)
    clock = ManualClock(MISSED + timedelta(hours=2))
    pools = [await create_pool(database_url, pg_schema, max_size=2) for _ in range(2)]
    replicas = [CaseLedger(p, policy, clock) for p in pools]

    async def drain(ledger: CaseLedger) -> None:
        while await ledger.fire_due(limit=7) > 0:
            pass

    try:
        await asyncio.gather(*(drain(r) for r in replicas))
        first_day = await messages_per_patient(pool)
        # One automated message per patient in the day, whichever replica and channel.
        assert first_day == {f"pat-{p}": 1 for p in range(1, PATIENTS + 1)}
        held = await pool.fetchval("SELECT count(*) FROM case_history WHERE event = 'held'")
        assert held == 3 * PATIENTS
        # The held steps moved past the cap's day, none was dropped.
        earliest = await pool.fetchval(
            "SELECT min(planned_at) FROM attempts a JOIN cases c USING (case_id) "
            "WHERE a.state = 'planned' AND c.case_id NOT IN (SELECT case_id FROM contact_log)"
        )
        assert earliest >= clock.now() + timedelta(hours=24)
        # A day and a bit later: at most one more message each, never two, and every
        # patient contacted again (a held step's replan may be a message or a call: which
        # case of the patient fired first is the batch's order, taken in turn by channel).
        clock.advance(timedelta(hours=26))
        await asyncio.gather(*(drain(r) for r in replicas))
        second = await messages_per_patient(pool)
        assert set(second.values()) <= {1, 2} and len(second) == PATIENTS
        again = await pool.fetch(
            "SELECT DISTINCT patient_id FROM contact_log WHERE sent_at = $1", clock.now()
        )
        assert len(again) == PATIENTS
    finally:
        for p in pools:
            await p.close()


async def test_an_open_call_task_or_an_unanswered_reply_holds_messages(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    # A no-show (call first) and a late cancellation (SMS first) of the same patient.
    await ledger.handle_trigger(no_show())
    await ledger.handle_trigger(late_cancellation())
    clock.set(MISSED + timedelta(hours=1))
    await ledger.fire_due()  # the call task goes out to the front desk
    # The late cancellation's SMS is due (11:50) while the call task is open (to 12:00).
    clock.set(MISSED + timedelta(hours=2, minutes=25))
    await ledger.fire_due()
    other = case_id_for("late_cancellation:appt-9")
    rows = await pool.fetch(
        "SELECT channel, state, planned_at FROM attempts WHERE case_id = $1", other
    )
    assert [(r["channel"], r["state"]) for r in rows] == [("sms", "planned")]
    assert rows[0]["planned_at"] > clock.now()
    assert (
        await pool.fetchval(
            "SELECT detail->>'rule' FROM case_history WHERE case_id = $1 AND event = 'held'", other
        )
        == "conversation_open"
    )
    assert (
        await pool.fetchval("SELECT count(*) FROM contact_log WHERE channel_class = 'message'") == 0
    )

    # A patient reply holds messages too, until the front desk reports back.
    case = case_id_for("no_show:appt-1")
    await ledger.handle_outcome(patient_outcome("reply", clock.now(), "sms", "provider-reply-1"))
    assert await pool.fetchval("SELECT count(*) FROM open_replies") == 1
    await ledger.handle_outcome(outcome(case, 1, "no_answer", clock.now()))
    assert await pool.fetchval("SELECT count(*) FROM open_replies") == 0


async def test_an_outcome_after_the_task_window_still_advances_the_case(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    case = await first_call_out(ledger, clock)
    # The task's window ends without a result; the case goes on with its next step.
    next_step = await pool.fetchval(
        "SELECT planned_at FROM attempts WHERE case_id = $1 AND attempt_number = 2", case
    )
    clock.set(next_step)
    assert await ledger.fire_due() == 1
    # The call was made after all, and reported late: it still counts.
    clock.advance(timedelta(hours=20))
    await ledger.handle_outcome(outcome(case, 1, "answered_rebooked", clock.now()))
    row = await pool.fetchrow("SELECT state, resolution FROM cases WHERE case_id = $1", case)
    assert (row["state"], row["resolution"]) == ("closed", "recovered")
    states = [r["state"] for r in await pool.fetch("SELECT state FROM attempts ORDER BY 1")]
    assert "planned" not in states


async def test_an_administrator_corrects_a_wrong_outcome_and_the_case_opens_again(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    case = await first_call_out(ledger, clock)
    await ledger.handle_outcome(outcome(case, 1, "answered_rebooked", clock.now()))
    assert await pool.fetchval("SELECT state FROM cases") == "closed"

    correction = OutcomeCorrection("fix-1", "no_answer", "admin-3")
    assert await ledger.correct_outcome(case, 1, correction) == "applied"
    assert await ledger.correct_outcome(case, 1, correction) == "duplicate"
    row = await pool.fetchrow("SELECT state, resolution FROM cases")
    assert (row["state"], row["resolution"]) == ("contacting", None)
    rows = await pool.fetch("SELECT state, outcome FROM attempts ORDER BY attempt_number")
    assert rows[0]["outcome"] == "no_answer" and rows[-1]["state"] == "planned"
    events = [r["event"] for r in await pool.fetch("SELECT event FROM case_history ORDER BY id")]
    assert events[-5:] == ["outcome", "closed", "corrected", "reopened", "planned"]
    with pytest.raises(LookupError):
        await ledger.correct_outcome(case, 9, OutcomeCorrection("fix-2", "no_answer", "a"))
