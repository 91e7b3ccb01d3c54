"""Several schedulers over one database: each due attempt fires exactly once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from common.clock import ManualClock
from common.db import create_pool
from services.scheduler.ledger import CaseLedger
from services.scheduler.policy import CadencePolicy
from tests.integration.scheduler.conftest import MISSED, seed_due_cases

pytestmark = pytest.mark.integration
DUE = 3000


async def test_two_replicas_fire_thousands_of_due_attempts_exactly_once(
    database_url: str, pg_schema: str, pool: asyncpg.Pool, policy: CadencePolicy
) -> None:
    await seed_due_cases(pool, DUE, MISSED, MISSED + timedelta(hours=12))
    clock = ManualClock(MISSED + timedelta(minutes=1))
    # Each replica has its own pool, as separate processes would.
    pools = [await create_pool(database_url, pg_schema, max_size=2) for _ in range(2)]
    replicas = [CaseLedger(p, policy, clock) for p in pools]

    async def drain(ledger: CaseLedger) -> int:
        total = 0
        while (fired := await ledger.fire_due(limit=100)) > 0:
            total += fired
        return total

    try:
        counts = await asyncio.gather(*(drain(r) for r in replicas))
    finally:
        for p in pools:
            await p.close()
    assert sum(counts) == DUE
    assert min(counts) > 0  # the replicas shared the work
    assert await pool.fetchval("SELECT count(*) FROM outbox") == DUE
    assert (
        await pool.fetchval(
            "SELECT count(DISTINCT idempotency_key) FROM outbox WHERE idempotency_key LIKE '%:1'"
        )
        == DUE
    )
    fired = await pool.fetchval(
        "SELECT count(*) FROM attempts WHERE attempt_number = 1 AND state = 'fired'"
    )
    assert fired == DUE
    # Every case has its next step planned, once.
    assert await pool.fetchval("SELECT count(*) FROM attempts WHERE state = 'planned'") == DUE
