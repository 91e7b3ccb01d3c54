"""A running notifier with its outside world: SMS provider stand-ins, a real SMTP server
(aiosmtpd), a webhook receiver that checks signatures (all from ``standins/``), and readers
of its topics."""

from __future__ import annotations

import asyncio
import time as wall
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from common.clock import ManualClock
from common.kafka import KafkaPublisher
from schemas.events import (
    CallTaskEvent,
    ChannelConsent,
    ContactEvent,
    NotificationCommand,
    OutcomeEvent,
)
from services.notifier.app import NotifierApp
from standins.calltasks import CallTaskReceiver
from standins.mailbox import Inbox as Inbox  # the tests' SMTP handler, re-exported
from standins.sms_provider import SmsProviderStandIn
from tests.support import infra
from tests.support.kafka import TopicTail

VILNIUS = ZoneInfo("Europe/Vilnius")
START = datetime(2026, 3, 2, 10, 0, tzinfo=VILNIUS)
WEBHOOK_SECRET = "webhook-secret"
API_TOKEN = "admin-token"
T = TypeVar("T")
TopicReader = TopicTail  # the name these tests know it by


class WebhookReceiver(CallTaskReceiver):
    """The clinic's tool receiving call tasks with this world's secret (dedupes nothing)."""

    def __init__(self) -> None:
        super().__init__(secret=WEBHOOK_SECRET)


@dataclass
class World:
    app: NotifierApp
    clock: ManualClock
    publisher: KafkaPublisher
    primary: SmsProviderStandIn
    secondary: SmsProviderStandIn
    inbox: Inbox
    webhook: WebhookReceiver
    outcomes: TopicReader
    calltasks: TopicReader
    base_url: str

    @property
    def topics(self) -> Any:
        return self.app.topics

    async def contact(self, patient_id: str, **changes: Any) -> ContactEvent:
        values: dict[str, Any] = {
            "event_id": f"contact:{patient_id}",
            "occurred_at": self.clock.now(),
            "source": "test",
            "patient_id": patient_id,
            "given_name": "Ona",
            "family_name": "Petraitė",
            "phone": None,
            "email": None,
            "language": "en",
            "timezone": "Europe/Vilnius",
            "consent": ChannelConsent(),
        }
        values.update(changes)
        event = ContactEvent.model_validate(values)
        await self.publisher.publish(self.topics.contacts, event)
        await self.wait_stored(patient_id, event.event_id)
        return event

    async def wait_stored(self, patient_id: str, event_id: str) -> None:
        async def stored() -> bool:
            found = await self.app.pool.fetchval(
                "SELECT event_id FROM contacts WHERE patient_id = $1", patient_id
            )
            return bool(found == event_id)

        deadline = wall.monotonic() + 20
        while not await stored():
            assert wall.monotonic() < deadline, "contact never stored"
            await asyncio.sleep(0.05)

    def command(self, case_id: str, patient_id: str, channel: str, **changes: Any) -> Any:
        now = self.clock.now()
        values: dict[str, Any] = {
            "event_id": f"{case_id}:1",
            "occurred_at": now,
            "source": "scheduler",
            "idempotency_key": f"{case_id}:1",
            "case_id": case_id,
            "attempt_number": 1,
            "patient_id": patient_id,
            "channel": channel,
            "template": "no_show",
            "reason": "no_show",
            "department": "dental",
            "timezone": "Europe/Vilnius",
            "appointment_start": now - timedelta(hours=2),
            "stage_name": "Implant",
            "stage_deadline": now + timedelta(days=20),
            "doctor_notes": "Check healing first.",
            "window_start": now,
            "window_end": now + timedelta(hours=8),
        }
        values.update(changes)
        return NotificationCommand.model_validate(values)

    async def send(self, command: NotificationCommand) -> None:
        await self.publisher.publish(self.topics.notifications, command)

    def outcome(self, event_id: str) -> OutcomeEvent | None:
        return next((o for o in self.outcomes.events if o.event_id == event_id), None)

    def outcomes_of(self, case_id: str) -> list[OutcomeEvent]:
        return [o for o in self.outcomes.events if o.case_id == case_id]

    def calltask_events(self, task_id: str) -> list[CallTaskEvent]:
        return [t for t in self.calltasks.events if t.task_id == task_id]

    async def advance(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))
        await self.app.dispatcher.work_once()


@asynccontextmanager
async def running_world(
    app: NotifierApp,
    clock: ManualClock,
    *,
    primary: SmsProviderStandIn,
    secondary: SmsProviderStandIn,
    inbox: Inbox,
    webhook: WebhookReceiver,
    base_url: str,
) -> AsyncIterator[World]:
    """``app`` started, with a publisher and readers of its outcomes and call tasks, as a
    ``World``; all stopped again after (the stand-ins are the caller's to start and stop)."""
    await app.start()
    publisher = KafkaPublisher(infra.KAFKA_BOOTSTRAP, client_id="tests")
    await publisher.start()
    outcomes = TopicReader(infra.KAFKA_BOOTSTRAP, app.topics.outcomes, OutcomeEvent)
    calltasks = TopicReader(infra.KAFKA_BOOTSTRAP, app.topics.calltasks, CallTaskEvent)
    await outcomes.start()
    await calltasks.start()
    try:
        yield World(
            app=app,
            clock=clock,
            publisher=publisher,
            primary=primary,
            secondary=secondary,
            inbox=inbox,
            webhook=webhook,
            outcomes=outcomes,
            calltasks=calltasks,
            base_url=base_url,
        )
    finally:
        await outcomes.stop()
        await calltasks.stop()
        await publisher.stop()
        await app.stop()
