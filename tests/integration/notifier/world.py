"""A running notifier with its outside world: SMS provider stand-ins, a real SMTP server
(aiosmtpd), a webhook receiver that checks signatures, and readers of its topics."""

from __future__ import annotations

import asyncio
import contextlib
import email
import hashlib
import hmac
import time as wall
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import default as email_policy
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from aiohttp import web
from aiokafka import AIOKafkaConsumer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from common.clock import ManualClock
from common.codec import decode
from common.kafka import KafkaPublisher
from schemas.events import (
    CallTaskEvent,
    ChannelConsent,
    ContactEvent,
    NotificationCommand,
    OutcomeEvent,
)
from services.notifier.app import NotifierApp
from standins.sms_provider import SmsProviderStandIn
from tests.support.polling import free_port

VILNIUS = ZoneInfo("Europe/Vilnius")
START = datetime(2026, 3, 2, 10, 0, tzinfo=VILNIUS)
WEBHOOK_SECRET = "webhook-secret"
API_TOKEN = "admin-token"
T = TypeVar("T")


class Inbox:
    """aiosmtpd handler: keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.connections: list[Any] = []  # the client's address per message
        self.tls: list[bool] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email_policy)
        self.messages.append(parsed)
        self.connections.append(session.peer)
        self.tls.append(session.ssl is not None)
        return "250 OK"

    def for_key(self, key: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["X-Followup-Key"] == key]


@dataclass
class WebhookReceiver:
    """The clinic's tool receiving call tasks: refuses a bad signature, dedupes nothing."""

    port: int = field(default_factory=free_port)
    received: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # where each accepted body was posted
    refused: int = 0
    # task id -> the JSON the tool answers a created task with (an administrator's report).
    replies: dict[str, Any] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/tasks", self._receive)
        app.router.add_post("/escalations", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            # As a receiver does it: the Standard Webhooks library, the shared secret's bytes.
            received = Webhook(WEBHOOK_SECRET.encode()).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.refused += 1
            return web.Response(status=401)
        stamp = request.headers.get("X-Followup-Timestamp", "")
        mac = hmac.new(WEBHOOK_SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256)
        # The legacy header, still sent for one release, must agree.
        assert hmac.compare_digest(
            "sha256=" + mac.hexdigest(), request.headers.get("X-Followup-Signature", "")
        )
        self.received.append(received)
        self.paths.append(request.path)
        task = received["task"]
        if task["action"] == "create" and task["task_id"] in self.replies:
            return web.json_response(self.replies[task["task_id"]])
        return web.Response(status=204)

    def tasks(self, task_id: str) -> list[dict[str, Any]]:
        return [r for r in self.received if r["task"]["task_id"] == task_id]


class TopicReader:
    def __init__(self, bootstrap: str, topic: str, model: type[Any]) -> None:
        self.events: list[Any] = []
        self._model = model
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=f"test-reader-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for record in self._consumer:
            self.events.append(decode(self._model, record.value))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


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
