"""Killing the scheduler process between the database commit and the publish loses nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from common.codec import decode
from common.launcher import ServiceProcess
from schemas.events import NotificationCommand
from schemas.topics import TopicNames
from tests.integration.scheduler.conftest import seed_due_cases
from tests.support.kafka import read_all
from tests.support.polling import free_port

pytestmark = pytest.mark.integration
DUE = 1500


async def start_scheduler(
    kafka_bootstrap: str, database_url: str, topics: TopicNames, schema: str
) -> ServiceProcess:
    env = {
        "FOLLOWUP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FOLLOWUP_DATABASE_URL": database_url,
        "FOLLOWUP_TOPIC_PREFIX": topics.prefix,
        "FOLLOWUP_DB_SCHEMA": schema,
        "FOLLOWUP_FIRE_BATCH": "50",
        "FOLLOWUP_RELAY_BATCH": "20",
        "FOLLOWUP_POLL_SECONDS": "0.05",
        "FOLLOWUP_LOG_LEVEL": "WARNING",
    }
    return await ServiceProcess("scheduler", free_port(), env).started()


async def counts(pool: asyncpg.Pool) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT count(*) AS written, count(published_at) AS published FROM outbox"
    )
    assert row is not None
    return row["written"], row["published"]


async def test_sigkill_mid_relay_then_restart_resends_everything_once_per_key(
    kafka_bootstrap: str, database_url: str, topics: TopicNames, pg_schema: str, pool: asyncpg.Pool
) -> None:
    now = datetime.now(UTC)  # the subprocess runs on the system clock
    await seed_due_cases(pool, DUE, now - timedelta(minutes=1), now + timedelta(hours=12))
    first = await start_scheduler(kafka_bootstrap, database_url, topics, pg_schema)
    try:
        async with asyncio.timeout(60):
            while (await counts(pool))[1] < 100:
                await asyncio.sleep(0.01)
    finally:
        first.kill()
    _written, published = await counts(pool)
    assert published < DUE  # killed in the middle of the work

    second = await start_scheduler(kafka_bootstrap, database_url, topics, pg_schema)
    try:
        async with asyncio.timeout(90):
            while await counts(pool) != (DUE, DUE):
                await asyncio.sleep(0.1)
    finally:
        code = await second.stop(20)
    assert code == 0
    records = await read_all(kafka_bootstrap, topics.notifications, quiet=2.0)
    keys = [decode(NotificationCommand, r.value).idempotency_key for r in records]
    expected = {f"case-{n}:1" for n in range(1, DUE + 1)}
    assert set(keys) == expected  # nothing lost, nothing invented
    assert len(keys) >= DUE  # any repeat carries a key already sent: the notifier drops it
    fired = await pool.fetchval("SELECT count(*) FROM attempts WHERE state = 'fired'")
    assert fired == DUE
