"""Call-task sinks: where administrators see their tasks. One class per sink, each a
``channels.CallTaskSink`` with its ``build`` and config ``check`` (registered in
``registry.SINKS``).

Each sink delivers a CallTaskEvent (create or withdraw of the same task id). Sinks are
idempotent on the task id at the receiver (webhook receivers and CRMs dedupe on it, the
VTODO has a stable UID), so a redelivery after a crash updates rather than duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import aiohttp
from standardwebhooks.webhooks import Webhook

from common.clock import Clock
from common.kafka import KafkaPublisher
from common.logs import get_logger
from schemas.events import CallTaskEvent
from services.notifier.call_reports import CallReport, ReportError, parse_call_report
from services.notifier.calltasks import (
    DeskView,
    desk_view,
    fhir_task,
    subject,
    summary_lines,
    vtodo,
)
from services.notifier.channels import (
    CallTaskSink,
    NoRoutes,
    Parts,
    PermanentSendError,
    SendReceipt,
    TransientSendError,
)
from services.notifier.email_channel import Attachment, Email, Mailer
from services.notifier.settings import NotifierSettings

log = get_logger(__name__)
SIGNATURE_HEADER = "X-Followup-Signature"
TIMESTAMP_HEADER = "X-Followup-Timestamp"


__all__ = ["CallTaskSink", "standard_webhook", "webhook_signature"]


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The legacy header (kept for one release, see the README): HMAC-SHA256 over
    "<timestamp>.<body>", hex, prefixed "sha256=". New receivers verify Standard Webhooks."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def standard_webhook(secret: str) -> Webhook:
    """The Standard Webhooks signer/verifier for ``FOLLOWUP_WEBHOOK_SECRET``: a ``whsec_``
    secret is base64 as the spec has it; any other secret is used as its UTF-8 bytes (a
    receiver whose library wants ``whsec_...`` gives it ``whsec_`` + base64 of them)."""
    return Webhook(secret if secret.startswith("whsec_") else secret.encode())


def standard_headers(signer: Webhook, message_id: str, body: bytes) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` (v1, HMAC-SHA256).

    The timestamp is the wall clock, not the injected clock: it protects the wire against
    replays, and receivers compare it with their own clock (Standard Webhooks allows five
    minutes either way), also when the clinic's clock runs scaled in a demo."""
    now = datetime.fromtimestamp(int(time.time()), UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign(message_id, now, body.decode()),
    }


class WebhookSink(NoRoutes):
    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: str,
        clock: Clock,
        timeout: float = 10.0,
        escalation_url: str | None = None,
    ) -> None:
        self._url = url
        self._escalation_url = escalation_url or url
        self._secret = secret
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._signer = standard_webhook(secret)

    async def deliver(self, task: CallTaskEvent) -> SendReceipt:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = json.dumps(
            {"task": task.model_dump(mode="json"), "fhir": fhir_task(task)}, ensure_ascii=False
        ).encode()
        timestamp = str(int(self._clock.now().timestamp()))
        message_id = f"{task.task_id}:{task.action}"  # the same on every retry
        headers = {
            "Content-Type": "application/json",
            **standard_headers(self._signer, message_id, body),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: webhook_signature(self._secret, timestamp, body),
            "Idempotency-Key": message_id,
        }
        url = self._escalation_url if task.purpose == "escalation" else self._url
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                status = response.status
                reply = await response.read() if 200 <= status < 300 else b""
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientSendError(self.name, type(exc).__name__) from None
        if 200 <= status < 300:
            report = _reported(task, reply) if task.action == "create" else None
            return SendReceipt(self.name, report=report)
        # Until a 2xx: the receiver may be misconfigured for a while; the window bounds it.
        raise TransientSendError(self.name, f"http_{status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _reported(task: CallTaskEvent, reply: bytes) -> CallReport | None:
    """The call's result when the ticketing tool answered the task with one (same shape as
    the report endpoints); any other reply body is an ordinary acknowledgement. A report
    that does not hold is logged and dropped: the task itself was delivered."""
    try:
        body = json.loads(reply) if reply.strip() else None
    except ValueError:
        return None
    if not isinstance(body, dict) or "outcome" not in body:
        return None
    try:
        return parse_call_report(body)
    except ReportError as exc:
        log.warning("webhook_reply_refused", task_id=task.task_id, reason=str(exc))
        return None


class FrontDeskEmailSink(NoRoutes):
    """A mail to the front desk with the task as an iCalendar VTODO attachment."""

    name = "email"

    def __init__(
        self,
        mailer: Mailer,
        front_desk: str,
        sender: str,
        view: DeskView,
        escalation_to: str | None = None,
        notes_in_calendar: bool = False,
    ) -> None:
        self._mailer = mailer
        self._to = front_desk
        self._escalation_to = escalation_to or front_desk
        self._sender = sender
        self._domain = sender.rsplit("@", 1)[-1]
        self._view = view
        self._calendar_view = view if notes_in_calendar else view.without_notes()

    async def deliver(self, task: CallTaskEvent) -> SendReceipt:
        withdrawn = task.action == "withdraw"
        escalation = task.purpose == "escalation"
        to = self._escalation_to if escalation else self._to
        method = "CANCEL" if withdrawn else "REQUEST"
        ics = vtodo(
            task, self._domain, view=self._calendar_view, organizer=self._sender, attendee=to
        )
        email = Email(
            to=to,
            subject=subject(task, self._view),
            text="\n".join(summary_lines(task, self._view)),
            idempotency_key=f"calltask:{task.task_id}:{task.action}",
            date=task.occurred_at,  # when the task was made: a resend carries the same Date
            attachments=(Attachment("call-task.ics", ics, "text", "calendar", {"method": method}),),
            # Mail clients sort and flag by these (RFC 2156 Importance, the X-Priority habit).
            headers=(("Importance", "high"), ("X-Priority", "1")) if escalation else (),
        )
        try:
            await self._mailer.send(email)
        except PermanentSendError as exc:
            raise PermanentSendError(self.name, exc.detail) from None
        return SendReceipt(self.name)


class KafkaTopicSink(NoRoutes):
    name = "kafka"

    def __init__(self, publisher: KafkaPublisher, topic: str) -> None:
        self._publisher = publisher
        self._topic = topic

    async def deliver(self, task: CallTaskEvent) -> SendReceipt:
        await self._publisher.publish(self._topic, task)
        return SendReceipt(self.name)


# --- configuration -----------------------------------------------------------------------


def check_webhook(s: NotifierSettings) -> str | None:
    if s.webhook_url and s.webhook_secret:
        return None
    return "the webhook sink needs FOLLOWUP_WEBHOOK_URL and _SECRET"


def build_webhook(parts: Parts) -> WebhookSink:
    s = parts.settings
    assert s.webhook_url is not None
    return WebhookSink(
        s.webhook_url, s.webhook_secret, parts.clock, escalation_url=s.escalation_webhook_url
    )


def check_front_desk_email(s: NotifierSettings) -> str | None:
    if s.front_desk_email and s.smtp_host:
        return None
    return "the email sink needs FOLLOWUP_FRONT_DESK_EMAIL and _SMTP_HOST"


def build_front_desk_email(parts: Parts) -> FrontDeskEmailSink:
    s = parts.settings
    assert parts.mailer is not None and s.front_desk_email is not None
    if not s.escalation_email and "email" in s.sinks_for("escalation"):
        # Still marked as escalations (subject, priority), but the doctor should get them.
        log.warning("escalations_to_front_desk", setting="FOLLOWUP_ESCALATION_EMAIL")
    return FrontDeskEmailSink(
        parts.mailer,
        s.front_desk_email,
        s.smtp_sender,
        desk_view(s),
        escalation_to=s.escalation_email,
        notes_in_calendar=s.notes_in_calendar,
    )


def build_topic(parts: Parts) -> KafkaTopicSink:
    return KafkaTopicSink(parts.publisher, parts.topics.calltasks)
