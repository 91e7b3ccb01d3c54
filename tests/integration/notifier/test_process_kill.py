"""The real process, killed with SIGKILL after it claimed a command and before it sent it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common.db import create_pool, drop_schema
from common.kafka import KafkaPublisher, delete_topics_with_prefix, ensure_topics
from common.launcher import ServiceProcess
from schemas.events import ContactEvent, NotificationCommand
from schemas.topics import TopicNames
from standins.sms_provider import SmsProviderStandIn
from tests.support import infra
from tests.support.polling import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def standin() -> AsyncIterator[SmsProviderStandIn]:
    provider = SmsProviderStandIn("ACkill", "tok-kill")
    await provider.start()
    yield provider
    await provider.stop()


async def start_notifier(env: dict[str, str], log: Path, port: int) -> ServiceProcess:
    return await ServiceProcess("notifier", port, env, log=log).started()


async def test_sigkill_between_claim_and_send_still_sends_exactly_once(
    standin: SmsProviderStandIn, tmp_path: Path
) -> None:
    unique = uuid.uuid4().hex[:10]
    prefix, schema = f"t{unique}.", f"t_{unique}"
    topics = TopicNames(prefix)
    await ensure_topics(infra.KAFKA_BOOTSTRAP, topics)
    port = free_port()
    env = {
        "FOLLOWUP_KAFKA_BOOTSTRAP": infra.KAFKA_BOOTSTRAP,
        "FOLLOWUP_DATABASE_URL": infra.DATABASE_URL,
        "FOLLOWUP_TOPIC_PREFIX": prefix,
        "FOLLOWUP_DB_SCHEMA": schema,
        "FOLLOWUP_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "FOLLOWUP_SMS_PRIMARY_URL": standin.base_url,
        "FOLLOWUP_SMS_PRIMARY_SID": "ACkill",
        "FOLLOWUP_SMS_PRIMARY_TOKEN": "tok-kill",
        "FOLLOWUP_SMS_PRIMARY_FROM": "+15005550006",
        # Never quiet: this test runs at whatever hour the machine has.
        "FOLLOWUP_QUIET_START": "00:00",
        "FOLLOWUP_QUIET_END": "00:00",
        "FOLLOWUP_LOG_FORMAT": "console",
    }
    log = tmp_path / "notifier.log"
    publisher = KafkaPublisher(infra.KAFKA_BOOTSTRAP, client_id="tests")
    await publisher.start()
    first = await start_notifier(env, log, port)
    pool = await create_pool(infra.DATABASE_URL, schema)
    second: ServiceProcess | None = None
    try:
        now = datetime.now(UTC)
        await publisher.publish(
            topics.contacts,
            ContactEvent(
                event_id="contact:p-kill",
                occurred_at=now,
                source="test",
                patient_id="p-kill",
                phone="+37060000061",
                timezone="Europe/Vilnius",
            ),
        )
        # The window opens in a few seconds: the first process claims the key and holds it.
        command = NotificationCommand(
            event_id="c-kill:1",
            occurred_at=now,
            source="scheduler",
            idempotency_key="c-kill:1",
            case_id="c-kill",
            attempt_number=1,
            patient_id="p-kill",
            channel="sms",
            template="no_show",
            reason="no_show",
            department="dental",
            timezone="Europe/Vilnius",
            window_start=now + timedelta(seconds=6),
            window_end=now + timedelta(hours=2),
        )
        await publisher.publish(topics.notifications, command)
        await publisher.publish(topics.notifications, command)  # delivered twice
        for _ in range(200):
            row = await pool.fetchrow(
                "SELECT state, tries FROM deliveries WHERE idempotency_key = 'c-kill:1'"
            )
            if row is not None and row["state"] == "pending" and row["tries"] >= 1:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the first process never claimed the command")
        first.kill()
        assert standin.messages == []

        second = await start_notifier(env, log, port)
        await publisher.publish(topics.notifications, command)  # and once more after restart
        for _ in range(300):
            if await pool.fetchval(
                "SELECT outcome_published FROM deliveries WHERE idempotency_key = 'c-kill:1'"
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the restarted process never sent the command")
        await asyncio.sleep(1.0)  # room for a wrong second send to show up
        assert [m.to for m in standin.messages] == ["+37060000061"]
        assert await pool.fetchval("SELECT outcome FROM deliveries") == "sent"
    finally:
        for proc in (first, second):
            if proc is not None:
                await proc.stop()
        await pool.close()
        await publisher.stop()
        await drop_schema(infra.DATABASE_URL, schema)
        await delete_topics_with_prefix(infra.KAFKA_BOOTSTRAP, prefix)
