"""SIGTERM while a slow webhook holds a call task: the send finishes and is recorded before
the notifier exits, so the next notifier does not send it again (a rolling deploy)."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.db import create_pool, drop_schema
from common.kafka import KafkaPublisher, delete_topics_with_prefix, ensure_topics
from common.launcher import ServiceProcess
from schemas.topics import TopicNames
from standins.calltasks import CallTaskReceiver, ReceivedTask
from tests.faults.events import call_task, contact
from tests.support import infra
from tests.support.polling import eventually, free_port

pytestmark = pytest.mark.integration

SECRET = "drain-secret"


async def test_sigterm_during_a_slow_webhook_send_sends_it_exactly_once(tmp_path: Path) -> None:
    infra.ensure_up()
    unique = uuid.uuid4().hex[:10]
    prefix, schema = f"t{unique}.", f"t_{unique}"
    topics = TopicNames(prefix)
    await ensure_topics(infra.KAFKA_BOOTSTRAP, topics)
    holding = asyncio.Event()

    async def slow_tool(task: ReceivedTask) -> None:
        holding.set()
        await asyncio.sleep(4.0)  # the ticketing tool answers slowly

    receiver = CallTaskReceiver(secret=SECRET, on_task=slow_tool)
    await receiver.start()
    port = free_port()
    env = {
        "FOLLOWUP_KAFKA_BOOTSTRAP": infra.KAFKA_BOOTSTRAP,
        "FOLLOWUP_DATABASE_URL": infra.DATABASE_URL,
        "FOLLOWUP_TOPIC_PREFIX": prefix,
        "FOLLOWUP_DB_SCHEMA": schema,
        "FOLLOWUP_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "FOLLOWUP_CALL_TASK_SINKS": "webhook",
        "FOLLOWUP_WEBHOOK_URL": receiver.url,
        "FOLLOWUP_WEBHOOK_SECRET": SECRET,
        # A short lease: a row left 'sending' by the stop would be resent at once.
        "FOLLOWUP_SENDING_LEASE_SECONDS": "1",
        "FOLLOWUP_LOG_FORMAT": "console",
    }
    log = tmp_path / "notifier.log"
    publisher = KafkaPublisher(infra.KAFKA_BOOTSTRAP, client_id="tests")
    await publisher.start()
    pool = await create_pool(infra.DATABASE_URL, schema)
    first = await ServiceProcess("notifier", port, env, log=log).started()
    second: ServiceProcess | None = None
    try:
        now = datetime.now(UTC)
        await publisher.publish(topics.contacts, contact("p-drain", "+37060000071", now))
        command = call_task("c-drain", "p-drain", now, hours=2)
        await publisher.publish(topics.notifications, command)
        await asyncio.wait_for(holding.wait(), 60)
        assert first.process is not None
        first.process.send_signal(signal.SIGTERM)  # the platform's graceful stop
        code = await asyncio.to_thread(first.process.wait, 30)
        assert code == 0
        row = await pool.fetchrow(
            "SELECT state, outcome FROM deliveries WHERE idempotency_key = 'c-drain:1'"
        )
        assert row is not None
        assert (row["state"], row["outcome"]) == ("done", "task_created")

        second = await ServiceProcess("notifier", port, env, log=log).started()
        await eventually(
            lambda: pool.fetchval(
                "SELECT outcome_published FROM deliveries WHERE idempotency_key = 'c-drain:1'"
            )
        )
        await asyncio.sleep(3.0)  # past the lease: room for a wrong resend to show up
        creates = [t for t in receiver.tasks("c-drain:1") if t["task"]["action"] == "create"]
        assert len(creates) == 1
    finally:
        if second is not None:
            await second.stop()
        await first.stop()
        await publisher.stop()
        await pool.close()
        await receiver.stop()
        await drop_schema(infra.DATABASE_URL, schema)
        await delete_topics_with_prefix(infra.KAFKA_BOOTSTRAP, prefix)
