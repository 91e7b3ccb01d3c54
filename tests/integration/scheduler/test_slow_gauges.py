"""The gauges the scheduler computes from its ledger on a slow interval: the age of the
oldest open case and the call tasks past their window without a result."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from common.clock import ManualClock
from services.scheduler import metrics
from services.scheduler.ledger import CaseLedger
from tests.support.scheduler import seed_open_cases


async def add_call_task(
    pool: asyncpg.Pool,
    case_id: str,
    number: int,
    window_end: object,
    *,
    channel: str = "call_task",
    outcome: str | None = None,
    withdrawn: bool = False,
) -> None:
    await pool.execute(
        """INSERT INTO attempts (case_id, attempt_number, purpose, channel, template, state,
               planned_at, window_end, fired_at, outcome, withdrawn_at)
           VALUES ($1, $2, 'follow_up', $3, 't', 'fired', $4::timestamptz - interval '1 day',
               $4, $4::timestamptz - interval '1 day', $5,
               CASE WHEN $6 THEN $4::timestamptz END)""",
        case_id,
        number,
        channel,
        window_end,
        outcome,
        withdrawn,
    )


def gauges() -> tuple[float, float]:
    return (
        metrics.OLDEST_OPEN_CASE_AGE._value.get(),
        metrics.CALL_TASKS_PAST_WINDOW._value.get(),
    )


async def test_an_empty_ledger_has_no_old_case_and_no_overdue_task(ledger: CaseLedger) -> None:
    metrics.OLDEST_OPEN_CASE_AGE.set(123)
    metrics.CALL_TASKS_PAST_WINDOW.set(4)
    await ledger.refresh_slow_gauges()
    assert gauges() == (0.0, 0.0)


async def test_the_oldest_open_case_and_the_tasks_the_desk_still_owes(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    now = clock.now()
    async with pool.acquire() as conn:
        # case-1..2 open for three days; case-3 older still, but closed: not counted.
        await seed_open_cases(conn, 3, now - timedelta(days=3))
    await pool.execute(
        """UPDATE cases SET opened_at = $1, state = 'closed', resolution = 'recovered',
               closed_at = $2 WHERE case_id = 'case-3'""",
        now - timedelta(days=9),
        now - timedelta(days=1),
    )
    await pool.execute(
        "UPDATE cases SET opened_at = $1 WHERE case_id = 'case-2'", now - timedelta(hours=5)
    )
    past, ahead = now - timedelta(hours=1), now + timedelta(hours=1)
    await add_call_task(pool, "case-1", 1, past)  # owed
    await add_call_task(pool, "case-1", 2, past, outcome="no_answer")  # the desk reported
    await add_call_task(pool, "case-1", 3, past, outcome="task_created")  # owed
    await add_call_task(pool, "case-1", 4, past, outcome="failed")  # never reached the desk
    await add_call_task(pool, "case-2", 1, ahead, outcome="delivered")  # window still open
    await add_call_task(pool, "case-2", 2, past, withdrawn=True)  # withdrawn
    await add_call_task(pool, "case-2", 3, past, channel="sms")  # not a call task
    await add_call_task(pool, "case-3", 1, past)  # its case is closed

    await ledger.refresh_slow_gauges()
    assert gauges() == (timedelta(days=3).total_seconds(), 2.0)

    # Time passes on the injected clock: case-1 ages, case-2's task window ends.
    clock.advance(timedelta(hours=2))
    await ledger.refresh_slow_gauges()
    assert gauges() == (timedelta(days=3, hours=2).total_seconds(), 3.0)
