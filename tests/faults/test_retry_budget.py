"""A call-task webhook that refuses connections for hours: the notifier keeps retrying, with
backoff, for the task's whole window (the documented budget), and delivers once it is back."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from common.clock import ManualClock
from common.db import drop_schema
from common.kafka import delete_topics_with_prefix
from services.notifier.app import NotifierApp
from standins.calltasks import CallTaskReceiver
from standins.faults import FaultyPort
from tests.faults.events import call_task, contact, notifier_settings
from tests.support import infra

pytestmark = pytest.mark.integration

VILNIUS = ZoneInfo("Europe/Vilnius")
START = datetime(2026, 3, 2, 9, 0, tzinfo=VILNIUS)
SECRET = "budget-secret"


async def test_call_task_retries_last_the_window_while_the_webhook_is_down() -> None:
    infra.ensure_up()
    receiver = CallTaskReceiver(secret=SECRET)
    await receiver.start()
    port = FaultyPort(receiver.port)
    await port.start()
    await port.refuse()  # the ticketing tool is down: connections refused
    # The shipped retry settings (base 30 s, cap 1 h) and no max_tries: the defaults.
    settings, prefix, schema = notifier_settings(
        call_task_sinks="webhook",
        webhook_url=f"http://127.0.0.1:{port.port}/call-tasks",
        webhook_secret=SECRET,
    )
    clock = ManualClock(START)
    app = NotifierApp(settings, clock)
    await app.start()
    try:
        await app.directory.record_contact(contact("p-budget", "+37060000072", START))
        command = call_task("c-budget", "p-budget", START, hours=6)
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
