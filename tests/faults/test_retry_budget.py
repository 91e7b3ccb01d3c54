"""A call-task webhook that refuses connections for hours: the notifier keeps retrying, with
backoff, for the task's whole window (the documented budget), and delivers once it is back."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from common.clock import ManualClock
from common.db import drop_schema
from common.kafka import delete_topics_with_prefix
from schemas.events import ContactEvent, NotificationCommand
from services.notifier.app import NotifierApp, NotifierSettings
from standins.calltasks import CallTaskReceiver
from standins.faults import FaultyPort
from tests.support import infra
from tests.support.polling import free_port

pytestmark = pytest.mark.integration

VILNIUS = ZoneInfo("Europe/Vilnius")
START = datetime(2026, 3, 2, 9, 0, tzinfo=VILNIUS)
SECRET = "budget-secret"


async def test_call_task_retries_last_the_window_while_the_webhook_is_down() -> None:
    infra.ensure_up()
    unique = uuid.uuid4().hex[:10]
    prefix, schema = f"t{unique}.", f"t_{unique}"
    receiver = CallTaskReceiver(secret=SECRET)
    await receiver.start()
    port = FaultyPort(receiver.port)
    await port.start()
    await port.refuse()  # the ticketing tool is down: connections refused
    settings = NotifierSettings.model_validate(
        {
            "kafka_bootstrap": infra.KAFKA_BOOTSTRAP,
            "database_url": infra.DATABASE_URL,
            "topic_prefix": prefix,
            "db_schema": schema,
            "http_host": "127.0.0.1",
            "http_port": free_port(),
            "call_task_sinks": "webhook",
            "webhook_url": f"http://127.0.0.1:{port.port}/call-tasks",
            "webhook_secret": SECRET,
            # The shipped retry settings (base 30 s, cap 1 h) and no max_tries: the defaults.
        }
    )
    clock = ManualClock(START)
    app = NotifierApp(settings, clock)
    await app.start()
    try:
        await app.directory.record_contact(
            ContactEvent(
                event_id="contact:p-budget",
                occurred_at=START,
                source="test",
                patient_id="p-budget",
                phone="+37060000072",
                timezone="Europe/Vilnius",
            )
        )
        command = NotificationCommand(
            event_id="c-budget:1",
            occurred_at=START,
            source="scheduler",
            idempotency_key="c-budget:1",
            case_id="c-budget",
            attempt_number=1,
            patient_id="p-budget",
            channel="call_task",
            template="no_show",
            reason="no_show",
            department="dental",
            timezone="Europe/Vilnius",
            window_start=START,
            window_end=START + timedelta(hours=6),
        )
        await app.dispatcher.accept(command)
        back_at = START + timedelta(hours=4, minutes=30)
        tries_while_down = 0
        for _ in range(200):
            if clock.now() >= back_at and port.mode == "refuse":
                await port.passes()
            await app.dispatcher.work_once()
            row = await app.pool.fetchrow(
                "SELECT state, due_at, outcome, detail, tries FROM deliveries"
                " WHERE idempotency_key = 'c-budget:1'"
            )
            assert row is not None
            if row["state"] == "done":
                break
            if port.mode == "refuse":
                tries_while_down = row["tries"]
            clock.set(max(row["due_at"], clock.now()))
        assert (row["outcome"], row["detail"]) == ("task_created", None)
        assert tries_while_down >= 8  # more than the old fixed count of tries
        assert row["due_at"] < command.window_end
        creates = [t for t in receiver.tasks("c-budget:1") if t["task"]["action"] == "create"]
        assert len(creates) == 1
    finally:
        await app.stop()
        await port.stop()
        await receiver.stop()
        await drop_schema(infra.DATABASE_URL, schema)
        await delete_topics_with_prefix(infra.KAFKA_BOOTSTRAP, prefix)
