"""Call-task sinks: where administrators see their tasks. One class per sink, one interface.

Each sink delivers a CallTaskEvent (create or withdraw). Sinks are idempotent on the
task id at the receiver (webhook receivers and CRMs dedupe on it, the VTODO has a stable
UID), so a redelivery after a crash updates rather than duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Protocol

import aiohttp

from common.clock import Clock
from common.kafka import KafkaPublisher
from schemas.events import CallTaskEvent
from services.notifier.calltasks import fhir_task, summary_lines, vtodo
from services.notifier.channels import PermanentSendError, SendReceipt, TransientSendError
from services.notifier.email_channel import Attachment, Email, Mailer

SIGNATURE_HEADER = "X-Followup-Signature"
TIMESTAMP_HEADER = "X-Followup-Timestamp"


class CallTaskSink(Protocol):
    name: str

    async def deliver(self, task: CallTaskEvent) -> SendReceipt: ...


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over "<timestamp>.<body>", hex, prefixed "sha256=" (receivers recompute)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookSink:
    name = "webhook"

    def __init__(self, url: str, secret: str, clock: Clock, timeout: float = 10.0) -> None:
        self._url = url
        self._secret = secret
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def deliver(self, task: CallTaskEvent) -> SendReceipt:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = json.dumps(
            {"task": task.model_dump(mode="json"), "fhir": fhir_task(task)}, ensure_ascii=False
        ).encode()
        timestamp = str(int(self._clock.now().timestamp()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: webhook_signature(self._secret, timestamp, body),
            "Idempotency-Key": f"{task.task_id}:{task.action}",
        }
        try:
            async with self._session.post(self._url, data=body, headers=headers) as response:
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientSendError(self.name, type(exc).__name__) from None
        if 200 <= status < 300:
            return SendReceipt(self.name)
        # Until a 2xx: the receiver may be misconfigured for a while; the window bounds it.
        raise TransientSendError(self.name, f"http_{status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class FrontDeskEmailSink:
    """A mail to the front desk with the task as an iCalendar VTODO attachment."""

    name = "email"

    def __init__(self, mailer: Mailer, front_desk: str, domain: str) -> None:
        self._mailer = mailer
        self._to = front_desk
        self._domain = domain

    async def deliver(self, task: CallTaskEvent) -> SendReceipt:
        withdrawn = task.action == "withdraw"
        subject = ("Withdrawn: " if withdrawn else "") + (
            f"Call task: {task.reason.replace('_', ' ')} ({task.patient_id})"
        )
        method = "CANCEL" if withdrawn else "REQUEST"
        email = Email(
            to=self._to,
            subject=subject,
            text="\n".join(summary_lines(task)),
            idempotency_key=f"calltask:{task.task_id}:{task.action}",
            attachments=(
                Attachment(
                    "call-task.ics",
                    vtodo(task, self._domain),
                    "text",
                    "calendar",
                    {"method": method},
                ),
            ),
        )
        try:
            await self._mailer.send(email)
        except PermanentSendError as exc:
            raise PermanentSendError(self.name, exc.detail) from None
        return SendReceipt(self.name)


class KafkaTopicSink:
    name = "kafka"

    def __init__(self, publisher: KafkaPublisher, topic: str) -> None:
        self._publisher = publisher
        self._topic = topic

    async def deliver(self, task: CallTaskEvent) -> SendReceipt:
        await self._publisher.publish(self._topic, task)
        return SendReceipt(self.name)
