"""Seeding the scheduler's tables in bulk, server-side (tests and the benchmark)."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.scheduler.ledger import Conn


async def seed_open_cases(conn: Conn, count: int, opened_at: datetime) -> None:
    """``count`` open no-show cases ``case-<n>`` of distinct patients ``pat-<n>``."""
    await conn.execute(
        """INSERT INTO cases (case_id, patient_id, reason, department, timezone, state,
               trigger_event_id, fact_at, opened_at, updated_at)
           SELECT 'case-' || n, 'pat-' || n, 'no_show', 'dental', 'Europe/Vilnius', 'open',
               'no_show:appt-' || n, $1, $1, $1
           FROM generate_series(1, $2) AS n""",
        opened_at,
        count,
    )


async def seed_planned_sms(
    conn: Conn,
    count: int,
    first_due: datetime,
    window_end: datetime,
    *,
    step: timedelta = timedelta(0),
    due: int | None = None,
    later: datetime | None = None,
) -> None:
    """The first attempt of cases ``case-1..count``, a planned SMS: the first ``due`` (all
    by default) at ``first_due + step * (n - 1)``, the others at ``later``."""
    await conn.execute(
        """INSERT INTO attempts (case_id, attempt_number, purpose, channel, template, state,
               planned_at, window_end)
           SELECT 'case-' || n, 1, 'follow_up', 'sms', 'no_show_sms', 'planned',
               CASE WHEN n <= $2 THEN $1::timestamptz + $3::interval * (n - 1)
                    ELSE $4::timestamptz END,
               $5
           FROM generate_series(1, $6) AS n""",
        first_due,
        count if due is None else due,
        step,
        later,
        window_end,
        count,
    )
