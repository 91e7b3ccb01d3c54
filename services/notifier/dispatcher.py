"""From a NotificationCommand to one delivery and its outcome.

``decide`` is the rule, pure: may this command go out now, later, or never? The
``Dispatcher`` around it claims commands in the ledger, works through due deliveries,
hands each to its channel (``channels.MessageChannel``, chosen by name from the
registry's instances; the dispatcher never asks which one it is) and records the outcome
it then publishes.

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
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from common.clock import Clock
from common.logs import get_logger
from common.sites import SiteRegistry
from schemas.events import NotificationCommand, OutcomeEvent
from schemas.vocabulary import DeliveryHold, Hold
from services.notifier import metrics
from services.notifier.channels import (
    ChannelRules,
    Job,
    MessageChannel,
    PermanentSendError,
    Publish,
    TransientSendError,
)
from services.notifier.contacts import NOT_CONTACTABLE, Contact, why_impossible
from services.notifier.directory import Directory
from services.notifier.ledger import Delivery, Finish, FinishedDelivery, Ledger
from services.notifier.outcomes import command_outcome
from services.notifier.quiet_hours import QuietHours, next_allowed_moment

log = get_logger(__name__)

PublishMany = Callable[[Sequence[OutcomeEvent]], Awaitable[None]]


# --- the rule ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Proceed:
    pass


@dataclass(frozen=True)
class Refuse:
    outcome: str  # channel_impossible | failed
    detail: str
    rule: str | None = None  # the held_total rule it counts under, if any


Decision = Proceed | Hold[DeliveryHold] | Refuse

CONTACT_GRACE = timedelta(minutes=10)
# How long a round of sends waits for more of them to finish before recording what did
# (real time: a bound on the latency it adds, not a business time).
ROUND_SECONDS = 0.05
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
    rules: ChannelRules,
    sent_today: int = 0,
    daily_hard_cap: int | None = None,
) -> Decision:
    if command.purpose == "withdrawal":
        return Proceed()  # withdrawing never reaches the patient; always allowed
    # An escalation is a task for the doctor, not a message to the patient: it needs no
    # contact details of the patient (it often exists because none reach them: no_channel).
    for_staff = command.purpose == "escalation" and not rules.reaches_patient
    if (
        contact is None
        and not for_staff
        and patient_status not in NOT_CONTACTABLE
        and now < command.occurred_at + CONTACT_GRACE
        and now + CONTACT_RETRY < command.window_end
    ):
        # After a fresh start the compacted contacts topic is still being read while
        # commands arrive: wait a little for the contact before calling it missing.
        return Hold("awaiting_contact", now + CONTACT_RETRY)
    impossible = why_impossible(contact, command.channel, rules, patient_status)
    if impossible == "no_contact" and for_staff:
        impossible = None
    if impossible is not None:
        return Refuse("channel_impossible", impossible, _RULE_OF_DETAIL.get(impossible))
    if now >= command.window_end:
        return Refuse("failed", "window_passed")
    if not rules.reaches_patient:
        # Administrators call within the window the scheduler chose: no quiet hours, and
        # the runaway guard counts only what the patient reads.
        if now < command.window_start:
            return Hold("window", command.window_start)
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
        return Hold("window" if waiting else "quiet_hours", at)
    return Proceed()


def retry_delay(tries: int, base: float, cap: float, rnd: random.Random) -> float:
    """Exponential backoff with jitter (between half and all of the step)."""
    step = min(cap, base * 2 ** max(0, tries - 1))
    return float(step * rnd.uniform(0.5, 1.0))


def next_retry(
    now: datetime, tries: int, window_end: datetime, policy: DispatchPolicy, rnd: random.Random
) -> datetime | None:
    """When to try again after a transient failure, or None: give up.

    The budget is the command's window: backoff grows to the cap, and a retry that would
    land past the window is pulled in to one last try shortly before it ends, rather than
    giving up with hours left. ``max_tries``, when set, is an extra bound.
    """
    if policy.max_tries is not None and tries >= policy.max_tries:
        return None
    last_chance = window_end - timedelta(seconds=policy.retry_base_seconds)
    if now >= last_chance:
        return None
    delay = retry_delay(tries, policy.retry_base_seconds, policy.retry_cap_seconds, rnd)
    return min(now + timedelta(seconds=delay), last_chance)


# --- the adapter around it ---------------------------------------------------------------


@dataclass(frozen=True)
class DispatchPolicy:
    quiet: QuietHours = field(default_factory=QuietHours)
    max_tries: int | None = None  # None: retries last the whole window
    daily_hard_cap: int | None = 4
    retry_base_seconds: float = 30.0
    retry_cap_seconds: float = 3600.0


@dataclass(frozen=True)
class Recipient:
    """What a take read for one delivery, in one query per take rather than per row: the
    patient's contact and status, and the runaway guard's count of their day."""

    contact: Contact | None
    status: str | None
    sent_today: int = 0


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
        channels: Mapping[str, MessageChannel],
        policy: DispatchPolicy,
        clock: Clock,
        publish_outcome: Publish,
        publish_outcomes: PublishMany | None = None,
        concurrency: int = 8,
        rnd: random.Random | None = None,
        sites: SiteRegistry | None = None,
    ) -> None:
        # The clinics of a chain: a site's own quiet hours, the per-site counter's label.
        self._sites = sites
        self.ledger = ledger
        self.directory = directory
        self.channels = dict(channels)
        self.policy = policy
        self.clock = clock
        self._publish = publish_outcome
        # Outcomes published in one batch (sent in order, acknowledged together).
        self._publish_many = publish_outcomes
        self.concurrency = concurrency  # provider calls under way at once, per channel
        self._rnd = rnd or random.Random()
        self._wake = asyncio.Event()
        self._publishing = asyncio.Lock()
        # Rows this process is sending now (key -> patient): never taken again while under
        # way, whatever the lease says (a scaled clock makes the lease last milliseconds).
        self._in_flight: dict[str, str] = {}
        # Set by drain(): no new rows are taken; the sends under way finish and are recorded.
        self._stopping = asyncio.Event()
        # The runaway guard counts every message the patient reads, whichever channel.
        self._patient_channels = [n for n, c in self.channels.items() if c.rules.reaches_patient]

    # Commands in: claim, nothing else, so the consumer stays fast and crash-safe.
    async def accept(self, command: NotificationCommand) -> None:
        if await self.ledger.claim(command, self.clock.now()):
            self._wake.set()
        else:
            metrics.DUPLICATES_DROPPED.labels(command.channel).inc()
            log.info("duplicate_dropped", key=command.idempotency_key, purpose=command.purpose)

    async def run(self, poll_seconds: float = 0.5, most: int = 200) -> None:
        while not self._stopping.is_set():
            done = 0
            try:
                done = await self.work_once(most)
            except Exception as exc:  # a database blip must not end the worker
                log.error("dispatch_failed", error=type(exc).__name__)
            self._wake.clear()
            if self._stopping.is_set():
                break
            if done >= most:
                continue  # a backlog: look again at once rather than after the poll
            # Real-time polling interval: how often to look, not a business time.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll_seconds)

    async def drain(self, worker: asyncio.Task[None], grace_seconds: float) -> bool:
        """Stop taking rows and let ``worker`` (the task running ``run``) finish the sends
        under way and record them, for at most ``grace_seconds``; True when it did.

        Cancelling a provider call mid-way would leave its row 'sending', and the next
        notifier would resend it after the lease: a rolling deploy must not do that. Past
        the grace the worker is cancelled anyway (the platform would SIGKILL it next).
        """
        self._stopping.set()
        self._wake.set()
        done, _ = await asyncio.wait({worker}, timeout=grace_seconds)
        if done:
            return True
        log.warning("drain_timed_out", grace_seconds=grace_seconds)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        return False

    async def work_once(self, most: int = 200) -> int:
        """Sends up to ``most`` due rows, up to ``concurrency`` at once per channel and one at
        a time per patient; returns when they are all recorded (and outcomes published).

        A row is 'sending' only while its provider call is under way (which is what the
        runaway guard counts as possibly delivered): rows are taken only when their
        channel has room, so none waits for a slot once marked.
        """
        done = 0
        running: dict[asyncio.Task[Finish | None], tuple[str, str]] = {}  # -> channel, key
        failures: list[BaseException] = []

        async def record(finished: set[asyncio.Task[Finish | None]]) -> None:
            # The round's finishes in one statement; a patient stays busy until theirs is
            # written, so their next row is never taken before this one is done.
            keys, finishes = [], []
            for task in finished:
                keys.append(running.pop(task)[1])
                if task.cancelled():
                    continue
                if (error := task.exception()) is not None:
                    failures.append(error)
                elif (result := task.result()) is not None:
                    finishes.append(result)
            try:
                await self.ledger.finish_all(finishes)
            finally:
                for key in keys:
                    self._in_flight.pop(key, None)

        try:
            while done < most and not self._stopping.is_set() and not failures:
                busy = Counter(channel for channel, _ in running.values())
                room = {name: self.concurrency - busy[name] for name in self.channels}
                # (+1: a command for a channel not configured is finished at once.)
                wanted = min(sum(room.values()) + 1, most - done)
                due = []
                if wanted > 0:
                    due = await self.ledger.take_due(
                        self.clock.now(),
                        limit=wanted,
                        channel_room=room,
                        one_per_patient=True,
                        busy_keys=list(self._in_flight),
                        busy_patients=list(set(self._in_flight.values())),
                    )
                recipients = await self._recipients(due) if due else {}
                for delivery in due:
                    cmd = delivery.command
                    self._in_flight[cmd.idempotency_key] = cmd.patient_id
                    task = asyncio.create_task(
                        self.process(delivery, recipients.get(cmd.idempotency_key))
                    )
                    running[task] = (cmd.channel, cmd.idempotency_key)
                done += len(due)
                if not running:
                    break
                await record(await self._round(running))
        except asyncio.CancelledError:
            # drain() past its grace: the provider calls are cut short too.
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running)
            raise
        finally:
            # Whatever happens, what was taken is sent and recorded before returning.
            if running:
                finished, _ = await asyncio.wait(running)
                await record(finished)
        if failures:
            raise failures[0]
        await self.publish_outcomes()
        return done

    async def _round(
        self, running: Collection[asyncio.Task[Finish | None]]
    ) -> set[asyncio.Task[Finish | None]]:
        """The sends finished by now: at least one, and (a round's take and finishes cost
        four statements whatever their size) up to half the concurrency of them, waiting
        for more at most ``ROUND_SECONDS`` of real time after the first."""
        finished, pending = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        loop = asyncio.get_running_loop()
        until = loop.time() + ROUND_SECONDS
        while pending and len(finished) < max(1, self.concurrency // 2):
            left = until - loop.time()
            if left <= 0:
                break
            more, pending = await asyncio.wait(
                pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            if not more:
                break
            finished |= more
        return finished

    async def publish_outcomes(self) -> None:
        # One publisher at a time in this process (the run loop and a caller of work_once
        # would otherwise both read the same unpublished rows and publish them twice).
        async with self._publishing:
            await self._publish_outcomes()

    async def _publish_outcomes(self) -> None:
        while finished := await self.ledger.unpublished():
            events = [outcome_event(done) for done in finished]
            if self._publish_many is not None:
                await self._publish_many(events)
            else:
                for event in events:
                    await self._publish(event)
            await self.ledger.mark_all_published([done.command for done in finished])
            if len(finished) < 100:
                break

    async def _recipients(self, due: Sequence[Delivery]) -> dict[str, Recipient]:
        """Contacts and the runaway guard's counts for a take, by key: two queries.

        The count is as good read now as just before the send: the take marked each row
        'sending', and no other row of these patients is taken (here or by another
        replica) until it is done. The local midnight read a moment early only widens
        the day counted."""
        found = await self.directory.recipients([d.command.patient_id for d in due])
        now = self.clock.now()
        asked = []
        for delivery in due:
            cmd = delivery.command
            contact, _ = found.get(cmd.patient_id, (None, None))
            channel = self.channels.get(cmd.channel)
            if contact is not None and channel is not None and channel.rules.reaches_patient:
                asked.append((cmd.idempotency_key, cmd.patient_id, _midnight(now, contact)))
        counts = await self.ledger.sent_since_each(asked, self._patient_channels)
        return {
            d.command.idempotency_key: Recipient(
                *found.get(d.command.patient_id, (None, None)),
                sent_today=counts.get(d.command.idempotency_key, 0),
            )
            for d in due
        }

    async def process(
        self, delivery: Delivery, recipient: Recipient | None = None
    ) -> Finish | None:
        """Decides and sends one taken row; returns its result for the caller to record
        (None: held for later, already recorded). ``recipient``: read by the take, else here."""
        cmd = delivery.command
        now = self.clock.now()
        channel = self.channels.get(cmd.channel)
        if channel is None:
            return Finish(cmd, now, "failed", detail="channel_not_configured")
        rules = channel.rules
        withdrawal = cmd.purpose == "withdrawal"
        if delivery.recovered and not rules.resend_when_unsure and not withdrawal:
            log.warning("delivery_unknown", key=cmd.idempotency_key, channel=cmd.channel)
            return Finish(cmd, now, "failed", detail="delivery_unknown")
        if recipient is None:
            recipient = (await self._recipients([delivery]))[cmd.idempotency_key]
        contact, status, sent_today = recipient.contact, recipient.status, recipient.sent_today
        decision = decide(
            cmd,
            contact,
            status,
            now,
            self._quiet(cmd.site),
            rules=rules,
            sent_today=sent_today,
            daily_hard_cap=self.policy.daily_hard_cap,
        )
        if isinstance(decision, Hold):
            if decision.rule not in UNCOUNTED_HOLDS:
                metrics.HELD.labels(decision.rule).inc()
            await self.ledger.hold(cmd, decision.until)
            return None
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
            return Finish(cmd, now, decision.outcome, detail=decision.detail)
        return await self._send(
            channel, Job(cmd, contact, delivery.sinks_done), delivery.tries, now
        )

    def _quiet(self, site: str | None) -> QuietHours:
        """The site's own quiet hours (its profile's, the patient's zone), else the
        deployment's last line of defence."""
        profile = self._sites.current().get(site) if self._sites is not None else None
        times = profile.quiet_times() if profile is not None else None
        return QuietHours(*times) if times is not None else self.policy.quiet

    async def _send(
        self, channel: MessageChannel, job: Job, tries: int, now: datetime
    ) -> Finish | None:
        cmd = job.command
        label = self._sites.current().label(cmd.site) if self._sites is not None else "none"
        started = asyncio.get_running_loop().time()
        try:
            sent = await channel.send(job)
        except TransientSendError as exc:
            metrics.RETRIES.labels(cmd.channel).inc()
            metrics.SENDS.labels(cmd.channel, exc.provider, "transient_error", label).inc()
            retry_at = next_retry(now, tries, cmd.window_end, self.policy, self._rnd)
            if retry_at is None:
                return Finish(cmd, now, "failed", detail=f"gave_up_{exc.code}"[:200])
            log.info("send_retry", key=cmd.idempotency_key, code=exc.code, tries=tries)
            await self.ledger.hold(cmd, retry_at)
            return None
        except PermanentSendError as exc:
            metrics.SENDS.labels(cmd.channel, exc.provider, "failed", label).inc()
            return Finish(cmd, now, exc.outcome, detail=exc.detail)
        finally:
            metrics.SEND_DURATION.labels(cmd.channel).observe(
                asyncio.get_running_loop().time() - started
            )
        if sent.provider is not None:
            metrics.SENDS.labels(cmd.channel, sent.provider, "sent", label).inc()
        metrics.SITE_SENDS.labels(label, cmd.channel, sent.outcome).inc()
        return Finish(
            cmd,
            now,
            sent.outcome,
            detail=sent.detail,
            provider=sent.provider,
            provider_id=sent.provider_id,
            respond_by=sent.respond_by,
        )


def _midnight(now: datetime, contact: Contact) -> datetime:
    """The start of the patient's day (their zone): the runaway guard counts from there."""
    zone = ZoneInfo(contact.timezone)
    return datetime.combine(now.astimezone(zone).date(), time(0), tzinfo=zone)
