"""The clinic over virtual time: the front desk, the patients, and what they do.

The scenario's own actions (register, plan, book, check in, cancel, invitation calls) run
at their virtual moments; reactions to followup (answering a call task, rebooking, a STOP
reply) run when followup reaches out, through the real endpoints: the notifier's
``POST /call-tasks/outcomes`` and Twilio-format inbound SMS webhooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import aiohttp

from common.clock import Clock
from common.kafka import KafkaPublisher
from common.logs import get_logger
from common.treatment import end_of_local_day
from demo.scenario import (
    CLINIC_ZONE,
    Appointment,
    ClinicAction,
    IngestPath,
    Patient,
    Scenario,
    e164,
)
from demo.simulator import canonical
from demo.simulator.feeds import ClinicFeed
from demo.simulator.patients import (
    CONCERN_NOTE,
    LinkChoice,
    MessageReaction,
    PatientLog,
    Reactions,
    ScriptedReactions,
    decide_feedback,
)
from schemas.base import Channel
from schemas.topics import TopicNames
from standins.calltasks import ReceivedTask
from standins.mailbox import MailRecord
from standins.twilio import SmsRecord, TwilioStandIn

log = get_logger(__name__)

ARRIVE_EARLY = timedelta(minutes=30)  # patients come early to fill in the forms
DIAL_TIME = timedelta(minutes=5)  # how long after receiving a task the front desk reports
REPLY_TIME = timedelta(minutes=2)  # how long a patient takes to answer a text


def stage_deadline(patient: Patient) -> datetime:
    """End of the clinic's day ``max_interval_days`` after stage 1 (as common.treatment)."""
    first = patient.stages[0].completed_at
    interval = patient.stages[1].max_interval_days
    assert first is not None and interval is not None
    return end_of_local_day(first, ZoneInfo(CLINIC_ZONE), interval)


def rebook_slot(now: datetime, deadline: datetime) -> datetime:
    """The first free morning at least two days out, and never after the stage deadline."""
    zone = ZoneInfo(CLINIC_ZONE)
    day = (now.astimezone(zone) + timedelta(days=2)).date()
    while day.weekday() >= 5:
        day += timedelta(days=1)
    slot = datetime.combine(day, time(10, 0), tzinfo=zone)
    latest = deadline - timedelta(hours=14)  # 10:00 on the deadline's day
    if slot > latest:
        slot = max(latest, now + timedelta(hours=3))
    return slot


class LinkUser(Protocol):
    """The patients' phones opening the rebooking links of their messages (``demo.rebooking``)."""

    def received(self, patient: Patient, channel: Channel, text: str) -> None:
        """A message reached the patient (its link, if any, is the one they would tap)."""
        ...

    async def use(self, patient: Patient, choice: LinkChoice) -> None:
        """The patient opens their latest link and does ``choice`` on the page."""
        ...


@dataclass(order=True)
class _Timed:
    at: datetime
    seq: int
    patient_id: str = field(compare=False)
    label: str = field(compare=False)
    run: Callable[[], Awaitable[None]] = field(compare=False)


@dataclass
class Progress:
    actions: Counter[str] = field(default_factory=Counter)
    call_reports: Counter[str] = field(default_factory=Counter)
    sms_in: int = 0
    replies: int = 0
    rebookings: int = 0
    errors: list[str] = field(default_factory=list)


class NotifierDesk:
    """The front desk's way to report call results: the notifier's authenticated endpoint.

    The agreed route is ``POST /call-tasks/outcomes``; a notifier that only offers
    ``POST /calltasks/{task_id}/result`` (same body) is served through that instead.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._route: str | None = None

    async def report(
        self,
        report_id: str,
        idempotency_key: str,
        outcome: str,
        reported_at: datetime,
        task_id: str | None = None,
        note: str | None = None,
    ) -> int:
        body = {
            "report_id": report_id,
            "idempotency_key": idempotency_key,
            "outcome": outcome,
            "reported_at": reported_at.isoformat(),
            "reported_by": "front-desk",
        }
        if note is not None:  # a clinical concern: what the patient reported
            body["note"] = note
        routes = ["/call-tasks/outcomes", f"/calltasks/{task_id or idempotency_key}/result"]
        if self._route is not None:
            routes = [self._route.format(task=task_id or idempotency_key)]
        status = 0
        for route in routes:
            status = await self._post(route, body)
            if status not in (404, 405):
                if self._route is None and status < 300:
                    generic = route.replace(task_id or idempotency_key, "{task}")
                    self._route = generic
                return status
        return status

    async def _post(self, route: str, body: dict[str, str]) -> int:
        headers = {"Authorization": f"Bearer {self.token}"}
        for attempt in range(5):
            try:
                async with self.session.post(
                    self.base_url + route, json=body, headers=headers
                ) as resp:
                    if resp.status < 500:
                        return resp.status
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2 * (attempt + 1))
        return 0


def task_identity(
    payload: Mapping[str, Any],
) -> tuple[str | None, str | None, int | None, str | None]:
    """(patient_id, case_id, attempt_number, task_id) from a call-task webhook body."""
    nested = payload.get("task")
    inner: Mapping[str, Any] = nested if isinstance(nested, Mapping) else payload
    patient = inner.get("patient_id")
    case = inner.get("case_id")
    attempt = inner.get("attempt_number")
    task_id = inner.get("task_id") or inner.get("idempotency_key")
    if (case is None or attempt is None) and isinstance(task_id, str) and ":" in task_id:
        case, _, number = task_id.rpartition(":")
        attempt = int(number) if number.isdigit() else None
    number_text = str(attempt) if attempt is not None else ""
    return (
        str(patient) if patient else None,
        str(case) if case else None,
        int(number_text) if number_text.isdigit() else None,
        str(task_id) if task_id else None,
    )


class Simulation:
    def __init__(
        self,
        scenario: Scenario,
        clock: Clock,
        feeds: Mapping[IngestPath, ClinicFeed],
        *,
        publisher: KafkaPublisher,
        topics: TopicNames,
        desk: NotifierDesk,
        sms: TwilioStandIn | None = None,
        concurrency: int = 8,
        reactions: Reactions | None = None,
    ) -> None:
        self.scenario = scenario
        self.clock = clock
        self.feeds = feeds
        self.publisher = publisher
        self.topics = topics
        self.desk = desk
        self.sms = sms
        self.reactions = reactions or ScriptedReactions(scenario.unreported_call_share)
        self.rng = random.Random(scenario.seed * 7919)
        self.by_id = {p.patient_id: p for p in scenario.patients}
        # A shared phone belongs, for the replies, to the family member who slipped.
        self.by_phone = {e164(p.phone): p for p in sorted(scenario.patients, key=lambda p: p.slips)}
        self.by_email = {p.email.lower(): p for p in scenario.patients}
        self.logs: dict[str, PatientLog] = {p.patient_id: PatientLog() for p in scenario.patients}
        self.rebooked: dict[str, Appointment] = {}
        self.progress = Progress()
        self.retry_real_seconds = 0.0  # how long a failed clinic action is retried
        self._heap: list[_Timed] = []
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(concurrency)
        self._patient_locks: dict[str, asyncio.Lock] = {}
        self._rebook_counter = itertools.count(1)
        self._running = 0  # clinic actions under way (sent, not yet acknowledged)
        # The scripted patients answer the feedback question after their rebooked visit
        # (issue 21); a lab's patient model decides nothing about it, so its patients do not.
        self.answers_feedback = reactions is None
        self.feedback_answered: set[str] = set()
        self.links: LinkUser | None = None  # the rebooking links' users (issue 20)

    # --- the timeline ---------------------------------------------------------------------

    def at(
        self, moment: datetime, patient: Patient, label: str, run: Callable[[], Awaitable[None]]
    ) -> None:
        heapq.heappush(self._heap, _Timed(moment, next(self._seq), patient.patient_id, label, run))
        self._changed.set()

    def plan_scenario(self) -> None:
        for action in self.scenario.actions():
            self.at(action.at, action.patient, action.kind, self._clinic_action(action))

    def _clinic_action(self, action: ClinicAction) -> Callable[[], Awaitable[None]]:
        patient, appt = action.patient, action.appointment
        feed = self.feeds[patient.path]

        async def run() -> None:
            now = self.clock.now()
            if action.kind == "register":
                await feed.register(patient, now)
            elif action.kind == "plan":
                await feed.plan(patient, now)
            elif action.kind == "book":
                assert appt is not None
                await feed.appointment(patient, appt, "booked", now)
            elif action.kind == "check_in":
                assert appt is not None
                await feed.appointment(patient, appt, "arrived", now)
            elif action.kind == "fulfil":
                assert appt is not None
                await feed.appointment(patient, appt, "fulfilled", now)
            elif action.kind == "cancel":
                assert appt is not None
                await feed.appointment(patient, appt, "cancelled", now, by_patient=True)
            elif action.kind == "clinic_cancel":
                # The doctor is ill: the clinic cancels (FHIR reason prov, JSON clinic).
                assert appt is not None
                await feed.appointment(patient, appt, "cancelled", now, by_patient=False)
            elif action.kind == "death":
                await feed.death(patient, patient.death_at, now)
            elif action.kind == "invite_call":
                # The clinic's own call, made outside followup: reported as JSON, no case.
                event = canonical.invitation_call(patient, now, "no_answer")
                await self.publisher.publish(self.topics.outcomes, event)

        return run

    async def run(self, until: datetime) -> None:
        """Play the clinic until virtual ``until``; reactions keep coming in meanwhile."""
        while True:
            now = self.clock.now()
            if now >= until:
                break
            if self._heap and self._heap[0].at <= now:
                due: list[_Timed] = []
                while self._heap and self._heap[0].at <= now:
                    due.append(heapq.heappop(self._heap))
                await self._run_due(due)
                continue
            next_at = min(self._heap[0].at, until) if self._heap else until
            self._changed.clear()
            wait = (next_at - now).total_seconds()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait(), timeout=max(0.0, self._real(wait)) + 0.001
                )
        await self.drain()

    def behind(self, now: datetime) -> bool:
        """Whether the clinic has actions due by ``now`` that are not done yet: a pacer
        holding virtual time back (the outcome lab's) waits for them."""
        return self._running > 0 or bool(self._heap and self._heap[0].at <= now)

    def next_action_at(self) -> datetime | None:
        """When the clinic's next planned action is due (None: nothing planned)."""
        return self._heap[0].at if self._heap else None

    def _real(self, virtual_seconds: float) -> float:
        speed = getattr(self.clock, "speed", 1.0)
        return virtual_seconds / float(speed)

    async def _run_due(self, due: list[_Timed]) -> None:
        by_patient: dict[str, list[_Timed]] = {}
        for item in due:
            by_patient.setdefault(item.patient_id, []).append(item)
        self._running += 1
        try:
            await asyncio.gather(
                *(self._run_patient(pid, items) for pid, items in by_patient.items())
            )
        finally:
            self._running -= 1

    async def _run_patient(self, patient_id: str, items: list[_Timed]) -> None:
        lock = self._patient_locks.setdefault(patient_id, asyncio.Lock())
        async with self._limit, lock:
            for item in items:
                # A harness injecting faults lets an action retry for a while, as an
                # interface engine's queue does while the tracker restarts.
                give_up = asyncio.get_running_loop().time() + self.retry_real_seconds
                while True:
                    try:
                        await item.run()
                        self.progress.actions[item.label] += 1
                    except Exception as exc:  # the clinic goes on; the report shows it
                        if asyncio.get_running_loop().time() < give_up:
                            await asyncio.sleep(0.5)
                            continue
                        self.progress.errors.append(f"{item.label} {patient_id}: {exc}")
                        log.warning(
                            "clinic_action_failed", action=item.label, patient_id=patient_id
                        )
                    break

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- the front desk -------------------------------------------------------------------

    async def on_call_task(self, task: ReceivedTask) -> None:
        self.spawn(self._handle_call_task(task))

    async def _handle_call_task(self, task: ReceivedTask) -> None:
        if task.action != "create" or task.purpose != "follow_up":
            return  # withdrawals close the ticket; escalations go to the doctor
        patient_id, case_id, attempt, task_id = task_identity(task.payload)
        patient = self.by_id.get(patient_id or "")
        if patient is None or case_id is None or attempt is None:
            self.progress.errors.append("call task without patient, case or attempt")
            return
        patient_log = self.logs[patient.patient_id]
        patient_log.calls += 1
        # The front desk calls when the task's window opens (the notifier's own stamp).
        called_at = _moment(task.task.get("window_start")) or task.at
        decision = self.reactions.call(patient, patient_log.calls, called_at, self.rng)
        if decision.link is not None and self.links is not None and not patient_log.rebooked:
            # The patient picks a time by the link meanwhile: the task stays open at the
            # desk, for followup to withdraw when the hospital's booking arrives.
            self.progress.call_reports["booked_by_link"] += 1
            await self.links.use(patient, decision.link)
            return
        await self.clock.sleep(DIAL_TIME.total_seconds())
        if decision.result is None and decision.rebook and not patient_log.rebooked:
            # The patient phoned in and booked: the task stays open at the desk, for
            # followup to withdraw.
            self.progress.call_reports["booked_by_patient"] += 1
            patient_log.rebooked = True
            self._rebook(patient)
            return
        if decision.result is None:
            self.progress.call_reports["unreported"] += 1
            return
        patient_log.results.append(decision.result)
        status = await self.desk.report(
            f"frontdesk:{case_id}:{attempt}",
            f"{case_id}:{attempt}",
            decision.result,
            self.clock.now(),
            task_id,
            note=CONCERN_NOTE if decision.result == "clinical_concern" else None,
        )
        self.progress.call_reports[decision.result if status < 300 else f"refused_{status}"] += 1
        if decision.rebook and not patient_log.rebooked:
            patient_log.rebooked = True
            self._rebook(patient)

    def _rebook(self, patient: Patient) -> None:
        now = self.clock.now()
        stage = patient.stages[1]
        start = rebook_slot(now, stage_deadline(patient))
        appt = Appointment(
            f"appt-{patient.patient_id}-r{next(self._rebook_counter)}",
            patient.patient_id,
            start,
            30,
            stage.stage_id,
            patient.department,
            patient.practitioner_id,
        )
        self.book_visit(patient, appt)

    def book_visit(self, patient: Patient, appt: Appointment) -> None:
        """The clinic books ``appt`` now (its own booking on the patient's ingest path), and
        the patient comes to it."""
        now = self.clock.now()
        self.logs[patient.patient_id].rebooked = True
        self.rebooked[patient.patient_id] = appt
        self.progress.rebookings += 1
        for action in (
            ClinicAction(now, "book", patient, appt),
            ClinicAction(appt.start - ARRIVE_EARLY, "check_in", patient, appt),
            ClinicAction(appt.end, "fulfil", patient, appt),
        ):
            self.at(action.at, patient, f"re{action.kind}", self._clinic_action(action))

    # --- the patients' phones -------------------------------------------------------------

    async def on_sms(self, record: SmsRecord) -> None:
        self.progress.sms_in += 1
        patient = self.by_phone.get(e164(record.to))
        if patient is None:
            return
        patient_log = self.logs[patient.patient_id]
        patient_log.sms += 1
        reply = self._read(patient, "sms", patient_log.sms, record.at, record.body).reply
        reply = self.feedback_reply(patient, record.at) or reply
        if reply is None or self.sms is None:
            return
        await self.clock.sleep(REPLY_TIME.total_seconds())
        await self.sms.reply(from_=record.to, to=record.from_, body=reply)
        self.progress.replies += 1
        if reply.upper() == "STOP":
            patient_log.opted_out = True

    def feedback_reply(self, patient: Patient, at: datetime) -> str | None:
        """The patient's answer when a message reaches them once they came to their
        rebooked visit (the one question followup asks when the hospital says it was
        attended: from the check-in on), once; None otherwise."""
        visit = self.rebooked.get(patient.patient_id)
        if not self.answers_feedback or visit is None or at < visit.start - ARRIVE_EARLY:
            return None
        if patient.patient_id in self.feedback_answered:
            return None
        self.feedback_answered.add(patient.patient_id)
        return decide_feedback(patient)

    async def on_mail(self, record: MailRecord) -> None:
        patient = next(
            (self.by_email[r.lower()] for r in record.rcpt_to if r.lower() in self.by_email), None
        )
        if patient is None:
            return
        patient_log = self.logs[patient.patient_id]
        patient_log.emails += 1
        self._read(patient, "email", patient_log.emails, record.at, record.text)

    def _read(
        self, patient: Patient, channel: Channel, number: int, at: datetime, text: str = ""
    ) -> MessageReaction:
        reaction = self.reactions.message(patient, channel, number, at)
        if self.links is not None:
            self.links.received(patient, channel, text)
            if reaction.link is not None:
                self.spawn(self.links.use(patient, reaction.link))
        if reaction.rebook_after is not None:
            self.spawn(self._book_by_phone(patient, reaction.rebook_after))
        return reaction

    async def _book_by_phone(self, patient: Patient, after: timedelta) -> None:
        """A patient who read a message calls the clinic later and books the next visit."""
        await self.clock.sleep(after.total_seconds())
        patient_log = self.logs[patient.patient_id]
        if not patient_log.rebooked:
            patient_log.rebooked = True
            self._rebook(patient)


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
