"""Seeding the scheduler's tables in bulk, server-side (tests and the benchmark)."""

from __future__ import annotations

from datetime import datetime

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
