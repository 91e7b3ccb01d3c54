"""Killing the scheduler process between the database commit and the publish loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from common.codec import decode
from schemas.events import NotificationCommand
from schemas.topics import TopicNames
from tests.integration.scheduler.conftest import seed_due_cases
from tests.support.infra import REPO
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration
DUE = 1500


def start_scheduler(
    kafka_bootstrap: str, database_url: str, topics: TopicNames, schema: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FOLLOWUP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FOLLOWUP_DATABASE_URL": database_url,
        "FOLLOWUP_TOPIC_PREFIX": topics.prefix,
        "FOLLOWUP_DB_SCHEMA": schema,
        "FOLLOWUP_HTTP_HOST": "127.0.0.1",
        "FOLLOWUP_HTTP_PORT": "0",
        "FOLLOWUP_FIRE_BATCH": "50",
        "FOLLOWUP_RELAY_BATCH": "20",
        "FOLLOWUP_POLL_SECONDS": "0.05",
        "FOLLOWUP_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.scheduler"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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
    first = start_scheduler(kafka_bootstrap, database_url, topics, pg_schema)
    try:
        async with asyncio.timeout(60):
            while (await counts(pool))[1] < 100:
                await asyncio.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    _written, published = await counts(pool)
    assert published < DUE  # killed in the middle of the work

    second = start_scheduler(kafka_bootstrap, database_url, topics, pg_schema)
    try:
        async with asyncio.timeout(90):
            while await counts(pool) != (DUE, DUE):
                await asyncio.sleep(0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
    assert second.returncode == 0
    records = await read_all(kafka_bootstrap, topics.notifications, quiet=2.0)
    keys = [decode(NotificationCommand, r.value).idempotency_key for r in records]
    expected = {f"case-{n}:1" for n in range(1, DUE + 1)}
    assert set(keys) == expected  # nothing lost, nothing invented
    assert len(keys) >= DUE  # any repeat carries a key already sent: the notifier drops it
    fired = await pool.fetchval("SELECT count(*) FROM attempts WHERE state = 'fired'")
    assert fired == DUE
