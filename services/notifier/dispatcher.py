"""From a NotificationCommand to one delivery and its outcome.

``decide`` is the rule, pure: may this command go out now, later, or never? The
``Dispatcher`` around it claims commands in the ledger, works through due deliveries,
renders, hands them to a channel and records the outcome it then publishes.

Exactly once at the receiver: a command is claimed before anything is sent, and a row is
marked 'sending' (committed) just before the provider call. A process that dies before
'sending' leaves a 'pending' row that any worker sends later, once. A row found still
'sending' after the lease is the one ambiguous case (the provider may or may not have the
message). Email and call tasks are resent: the Message-ID and the task id are derived
from the idempotency key, so receivers dedupe them. SMS cannot be deduplicated by a
Twilio-style provider, so there we choose at most once: the row becomes "failed" with
detail "delivery_unknown" (the scheduler falls back to another channel), and if the
provider did take the message its status callback, which carries our key, still records
"delivered".
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Protocol
from urllib.parse import quote
from zoneinfo import ZoneInfo

from common.clock import Clock
from common.logs import get_logger
from schemas.events import NotificationCommand, OutcomeEvent
from services.notifier import metrics
from services.notifier.call_reports import report_outcome
from services.notifier.calltasks import build_call_task, call_script
from services.notifier.channels import PermanentSendError, SendReceipt, TransientSendError
from services.notifier.contacts import NOT_CONTACTABLE, Contact, why_impossible
from services.notifier.directory import Directory
from services.notifier.email_channel import Email, unsubscribe_token
from services.notifier.ledger import Delivery, FinishedDelivery, Ledger
from services.notifier.outcomes import command_outcome
from services.notifier.quiet_hours import QuietHours, next_allowed_moment
from services.notifier.sinks import CallTaskSink
from services.notifier.sms import SmsMessage, SmsProvider
from services.notifier.sms_text import segment_count
from services.notifier.templates import REASONS, MessageContext, TemplateBook

log = get_logger(__name__)


# --- the rule ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Proceed:
    pass


@dataclass(frozen=True)
class Hold:
    until: datetime
    rule: str


@dataclass(frozen=True)
class Refuse:
    outcome: str  # channel_impossible | failed
    detail: str
    rule: str | None = None  # the held_total rule it counts under, if any


Decision = Proceed | Hold | Refuse

CONTACT_GRACE = timedelta(minutes=10)
CONTACT_RETRY = timedelta(seconds=30)
# Waiting for the window to open or for a contact is not a rule holding a message back.
UNCOUNTED_HOLDS = frozenset({"window", "awaiting_contact"})

_RULE_OF_DETAIL = {"not_contactable": "not_contactable", "opted_out": "opted_out"}


def decide(
    command: NotificationCommand,
    contact: Contact | None,
    patient_status: str | None,
    now: datetime,
    quiet: QuietHours,
    *,
    sent_today: int = 0,
    daily_hard_cap: int | None = None,
) -> Decision:
    if command.purpose == "withdrawal":
        return Proceed()  # withdrawing never reaches the patient; always allowed
    if (
        contact is None
        and patient_status not in NOT_CONTACTABLE
        and now < command.occurred_at + CONTACT_GRACE
        and now + CONTACT_RETRY < command.window_end
    ):
        # After a fresh start the compacted contacts topic is still being read while
        # commands arrive: wait a little for the contact before calling it missing.
        return Hold(now + CONTACT_RETRY, "awaiting_contact")
    impossible = why_impossible(contact, command.channel, patient_status)
    if impossible is not None:
        return Refuse("channel_impossible", impossible, _RULE_OF_DETAIL.get(impossible))
    if now >= command.window_end:
        return Refuse("failed", "window_passed")
    if command.channel == "call_task":
        if now < command.window_start:
            return Hold(command.window_start, "window")
        return Proceed()
    assert contact is not None
    if daily_hard_cap is not None and sent_today >= daily_hard_cap:
        # The last line of defence against floods (a bug, a replayed topic): whatever the
        # cause, no patient gets more than the hard cap of messages in one of their days.
        return Refuse("failed", "runaway_guard", "runaway_guard")
    at = next_allowed_moment(
        now, command.window_start, command.window_end, ZoneInfo(contact.timezone), quiet
    )
    if at is None:
        return Refuse("failed", "quiet_hours", "quiet_hours")
    if at > now:
        # Held until the window opens (and not past it) is waiting, not quiet hours.
        waiting = now < command.window_start and at == command.window_start
        return Hold(at, "window" if waiting else "quiet_hours")
    return Proceed()


def retry_delay(tries: int, base: float, cap: float, rnd: random.Random) -> float:
    """Exponential backoff with jitter (between half and all of the step)."""
    step = min(cap, base * 2 ** max(0, tries - 1))
    return float(step * rnd.uniform(0.5, 1.0))


# --- the adapter around it ---------------------------------------------------------------


class OutcomeSink(Protocol):
    async def __call__(self, outcome: OutcomeEvent) -> None: ...


@dataclass(frozen=True)
class DispatchPolicy:
    clinic_name: str
    clinic_phone: str
    default_language: str = "en"
    rebook_url: str | None = None
    public_base_url: str = "http://127.0.0.1:8083"
    unsubscribe_mailto: str | None = None
    link_secret: str = ""
    quiet: QuietHours = field(default_factory=QuietHours)
    max_tries: int = 8
    daily_hard_cap: int | None = 4
    retry_base_seconds: float = 30.0
    retry_cap_seconds: float = 3600.0


def outcome_event(done: FinishedDelivery) -> OutcomeEvent:
    return command_outcome(
        done.command,
        done.outcome,  # type: ignore[arg-type]
        done.finished_at,
        respond_by=done.respond_by,
        detail=done.detail,
    )


class Dispatcher:
    def __init__(
        self,
        *,
        ledger: Ledger,
        directory: Directory,
        book: TemplateBook,
        policy: DispatchPolicy,
        clock: Clock,
        publish_outcome: OutcomeSink,
        sms: SmsProvider | None = None,
        mailer: _Mailer | None = None,
        sinks: list[CallTaskSink] | None = None,
        rnd: random.Random | None = None,
    ) -> None:
        self.ledger = ledger
        self.directory = directory
        self.book = book
        self.policy = policy
        self.clock = clock
        self._publish = publish_outcome
        self.sms = sms
        self.mailer = mailer
        self.sinks = sinks or []
        self._rnd = rnd or random.Random()
        self._wake = asyncio.Event()

    # Commands in: claim, nothing else, so the consumer stays fast and crash-safe.
    async def accept(self, command: NotificationCommand) -> None:
        if await self.ledger.claim(command, self.clock.now()):
            self._wake.set()
        else:
            metrics.DUPLICATES_DROPPED.labels(command.channel).inc()
            log.info("duplicate_dropped", key=command.idempotency_key, purpose=command.purpose)

    async def run(self, poll_seconds: float = 0.5) -> None:
        while True:
            try:
                await self.work_once()
            except Exception as exc:  # a database blip must not end the worker
                log.error("dispatch_failed", error=type(exc).__name__)
            self._wake.clear()
            # Real-time polling interval: how often to look, not a business time.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll_seconds)

    async def work_once(self, most: int = 50) -> int:
        # One row at a time: a row is 'sending' only while its provider call is under way,
        # which is what the runaway guard counts as possibly delivered.
        done = 0
        while done < most:
            due = await self.ledger.take_due(self.clock.now(), limit=1)
            if not due:
                break
            await self.process(due[0])
            done += 1
        await self.publish_outcomes()
        return done

    async def publish_outcomes(self) -> None:
        for done in await self.ledger.unpublished():
            await self._publish(outcome_event(done))
            await self.ledger.mark_published(done.command)

    async def process(self, delivery: Delivery) -> None:
        cmd = delivery.command
        now = self.clock.now()
        if delivery.recovered and cmd.channel == "sms" and cmd.purpose != "withdrawal":
            log.warning("sms_delivery_unknown", key=cmd.idempotency_key)
            await self.ledger.finish(cmd, now, "failed", detail="delivery_unknown")
            return
        contact, status = await self.directory.recipient(cmd.patient_id)
        sent_today = 0
        if contact is not None and cmd.channel in ("sms", "email"):
            zone = ZoneInfo(contact.timezone)
            local_midnight = datetime.combine(now.astimezone(zone).date(), time(0), tzinfo=zone)
            sent_today = await self.ledger.sent_since(
                cmd.patient_id, local_midnight, cmd.idempotency_key
            )
        decision = decide(
            cmd,
            contact,
            status,
            now,
            self.policy.quiet,
            sent_today=sent_today,
            daily_hard_cap=self.policy.daily_hard_cap,
        )
        if isinstance(decision, Hold):
            if decision.rule not in UNCOUNTED_HOLDS:
                metrics.HELD.labels(decision.rule).inc()
            await self.ledger.hold(cmd, decision.until)
            return
        if isinstance(decision, Refuse):
            if decision.rule:
                metrics.HELD.labels(decision.rule).inc()
            if decision.rule == "runaway_guard":
                metrics.RUNAWAY_GUARD_TRIPS.inc()
                log.error(
                    "runaway_guard_tripped",
                    patient_id=cmd.patient_id,
                    key=cmd.idempotency_key,
                    sent_today=sent_today,
                )
            await self.ledger.finish(cmd, now, decision.outcome, detail=decision.detail)
            return
        started = asyncio.get_running_loop().time()
        try:
            if cmd.purpose == "withdrawal":
                await self._withdraw(cmd, delivery, contact)
            elif cmd.channel == "call_task":
                await self._deliver_task(cmd, "create", delivery, contact)
                await self.ledger.finish(cmd, now, "task_created", respond_by=cmd.window_end)
            else:
                assert contact is not None
                send = self._send_sms if cmd.channel == "sms" else self._send_email
                receipt = await send(cmd, contact)
                metrics.SENDS.labels(cmd.channel, receipt.provider, "sent").inc()
                await self.ledger.finish(
                    cmd, now, "sent", provider=receipt.provider, provider_id=receipt.provider_id
                )
        except TransientSendError as exc:
            metrics.RETRIES.labels(cmd.channel).inc()
            metrics.SENDS.labels(cmd.channel, exc.provider, "transient_error").inc()
            delay = retry_delay(
                delivery.tries,
                self.policy.retry_base_seconds,
                self.policy.retry_cap_seconds,
                self._rnd,
            )
            retry_at = now + timedelta(seconds=delay)
            if delivery.tries >= self.policy.max_tries or retry_at >= cmd.window_end:
                await self.ledger.finish(cmd, now, "failed", detail=f"gave_up_{exc.code}"[:200])
            else:
                log.info("send_retry", key=cmd.idempotency_key, code=exc.code, tries=delivery.tries)
                await self.ledger.hold(cmd, retry_at)
            return
        except PermanentSendError as exc:
            metrics.SENDS.labels(cmd.channel, exc.provider, "failed").inc()
            await self.ledger.finish(cmd, now, "failed", detail=exc.detail)
            return
        finally:
            metrics.SEND_DURATION.labels(cmd.channel).observe(
                asyncio.get_running_loop().time() - started
            )

    def _context(
        self, cmd: NotificationCommand, contact: Contact, *, redacted: bool = False
    ) -> MessageContext:
        p = self.policy
        return MessageContext.for_command(
            cmd,
            contact,
            reason=cmd.template if cmd.template in REASONS else cmd.reason,
            clinic_name=p.clinic_name,
            clinic_phone=p.clinic_phone,
            rebook_url=p.rebook_url,
            redacted=redacted,
        )

    async def _send_sms(self, cmd: NotificationCommand, contact: Contact) -> SendReceipt:
        if self.sms is None:
            raise PermanentSendError("none", "channel_not_configured")
        assert contact.phone is not None
        # A number several patients share: whoever reads it may not be this patient, so
        # the text names no one and no visit (generic care-first message only).
        shared = contact.phone_shared_by > 1
        if shared:
            metrics.HELD.labels("shared_number_redacted").inc()
        context = self._context(cmd, contact, redacted=shared)
        body = self.book.render("sms", contact.language, context)
        callback = (
            f"{self.policy.public_base_url}/sms/status?key={quote(cmd.idempotency_key, safe='')}"
        )
        receipt = await self.sms.send(SmsMessage(contact.phone, body, callback))
        encoding, segments = segment_count(body)
        metrics.SMS_SEGMENTS.labels(encoding).inc(segments)
        return receipt

    async def _send_email(self, cmd: NotificationCommand, contact: Contact) -> SendReceipt:
        if self.mailer is None:
            raise PermanentSendError("none", "channel_not_configured")
        assert contact.email is not None
        context = self._context(cmd, contact)
        token = unsubscribe_token(self.policy.link_secret, cmd.patient_id)
        link = f"{self.policy.public_base_url}/unsubscribe?patient={cmd.patient_id}&token={token}"
        unsubscribe = [f"<{link}>"]
        if self.policy.unsubscribe_mailto:
            unsubscribe.insert(0, f"<mailto:{self.policy.unsubscribe_mailto}?subject=unsubscribe>")
        email = Email(
            to=contact.email,
            subject=self.book.render("email_subject", contact.language, context),
            text=self.book.render("email_text", contact.language, context),
            html=self.book.render("email_html", contact.language, context),
            idempotency_key=cmd.idempotency_key,
            list_unsubscribe=", ".join(unsubscribe),
        )
        receipt = await self.mailer.send(email)
        return receipt

    async def _deliver_task(
        self,
        cmd: NotificationCommand,
        action: str,
        delivery: Delivery,
        contact: Contact | None,
    ) -> None:
        """``cmd`` is the command that created the task (its key is the task id);
        ``delivery`` is the ledger row being worked (the create or the withdrawal)."""
        task_id = cmd.idempotency_key
        if not self.sinks:
            raise PermanentSendError("none", "no_call_task_sink")
        p = self.policy
        script = call_script(
            self.book,
            cmd,
            contact,
            clinic_name=p.clinic_name,
            clinic_phone=p.clinic_phone,
            rebook_url=p.rebook_url,
            default_language=p.default_language,
        )
        task = build_call_task(
            cmd,
            contact,
            task_id=task_id,
            action=action,
            script=script,
            now=self.clock.now(),
            report_url=f"{p.public_base_url}/calltasks/{quote(task_id, safe=':')}/result",
            default_language=p.default_language,
        )
        for sink in self.sinks:
            if sink.name in delivery.sinks_done:
                continue  # delivered before a retry or a restart
            try:
                receipt = await sink.deliver(task)
            except (TransientSendError, PermanentSendError):
                metrics.CALL_TASKS.labels(sink.name, "error").inc()
                raise
            if receipt.report is not None:
                # Published before the sink is marked done: after a crash the task goes out
                # again, the receiver answers again, and the repeated report id is dropped.
                await self._publish(report_outcome(receipt.report, cmd, self.clock.now()))
            metrics.CALL_TASKS.labels(
                sink.name, "created" if action == "create" else "withdrawn"
            ).inc()
            metrics.SENDS.labels("call_task", sink.name, "sent").inc()
            await self.ledger.sink_done(delivery.command, sink.name)

    async def _withdraw(
        self, cmd: NotificationCommand, delivery: Delivery, contact: Contact | None
    ) -> None:
        now = self.clock.now()
        original = await self.ledger.withdrawn_task(cmd)
        if original is not None and await self.ledger.cancel_if_unsent(original, now):
            # Never went out: cancelling it in the ledger is the whole withdrawal.
            await self.ledger.finish(cmd, now, "withdrawn", detail="never_sent")
            return
        if original is None:
            await self.ledger.finish(cmd, now, "withdrawn", detail="no_task")
            return
        # The receivers know the task by its own id (the create's key): the withdrawal
        # must carry that id, not the withdrawal command's key, or nobody can match it.
        await self._deliver_task(original, "withdraw", delivery, contact)
        await self.ledger.finish(cmd, now, "withdrawn")


class _Mailer(Protocol):
    async def send(self, email: Email) -> SendReceipt: ...
