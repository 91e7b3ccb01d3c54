"""The scheduler's composition root: configuration, adapters and wiring live here alone."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import Field

from common import logs
from common.audit import AuditLog
from common.clock import Clock
from common.config import ConfigError, Settings, load_or_exit
from common.db import create_pool, migrate
from common.http import OpsServer
from common.kafka import EventConsumer, KafkaPublisher, ensure_topics
from common.service import run, wait_for_stop_signal
from common.sites import SiteError, SiteRegistry, Sites
from schemas.base import Envelope
from schemas.events import (
    AppointmentEvent,
    OutcomeEvent,
    PatientStatusEvent,
    TreatmentPlanEvent,
    TriggerEvent,
)
from schemas.topics import TopicNames
from services.scheduler import metrics
from services.scheduler.api import CaseApi
from services.scheduler.guards import Cap, ContactRules
from services.scheduler.ledger import CaseLedger
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy, PolicyError
from services.scheduler.relay import OutboxRelay

MIGRATIONS = Path(__file__).with_name("migrations")
log = logs.get_logger(__name__)


class SchedulerSettings(Settings):
    service: str = "scheduler"
    http_port: int = Field(default=8082, ge=0, le=65535)
    db_schema: str = "scheduler"
    policy_path: Path = DEFAULT_POLICY_PATH
    api_token: str = Field(default="", description="Bearer token of the case API.")
    consumer_group: str = "scheduler"
    fire_batch: int = Field(default=200, ge=1, le=10_000)
    # Firing loops in the process, each its own transaction (they share the due work as
    # replicas do): while one waits for PostgreSQL, the other plans its batch.
    fire_loops: int = Field(default=2, ge=1, le=16)
    relay_batch: int = Field(default=500, ge=1, le=10_000)
    poll_seconds: float = Field(default=0.5, gt=0)
    # The firing loop sleeps until the next attempt is due (at most poll_seconds), but at
    # least this long after a part batch, so a steady trickle is fired in batches.
    fire_pause_min_seconds: float = Field(default=0.05, ge=0)
    # The gauges that scan the ledger (oldest open case, call tasks past their window):
    # they watch hours and days, so a minute's staleness costs nothing.
    slow_gauge_seconds: float = Field(default=60.0, gt=0)
    # Frequency caps per patient over all cases (rolling 24 h / 7 days); calls apart.
    cap_messages_per_day: int = Field(default=1, ge=1)
    cap_messages_per_week: int = Field(default=3, ge=1)
    cap_calls_per_day: int = Field(default=2, ge=1)
    cap_calls_per_week: int = Field(default=5, ge=1)
    conversation_quiet_hours: float = Field(default=24.0, gt=0)
    # Longer than the topics' retention, so a replay still finds what it already did.
    retention_days: int = Field(default=30, ge=1)
    # The doctor's notes (and stage names) of cases closed, and of plans last changed with
    # no open case, this long ago (issue 19: free text is not kept for ever).
    retention_case_notes_days: int = Field(default=30, ge=1)
    # A graceful stop lets the loops finish their round (fire, relay) for at most this long.
    stop_grace_seconds: float = Field(default=20.0, ge=0)

    def contact_rules(self) -> ContactRules:
        return ContactRules(
            messages=Cap(self.cap_messages_per_day, self.cap_messages_per_week),
            calls=Cap(self.cap_calls_per_day, self.cap_calls_per_week),
            conversation_quiet=timedelta(hours=self.conversation_quiet_hours),
        )


class Scheduler:
    """The running service: consumers, the firing, review and relay loops, the HTTP API."""

    def __init__(
        self,
        settings: SchedulerSettings,
        clock: Clock,
        policy: CadencePolicy,
        sites: SiteRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.policy = policy
        # The clinics of a chain: each version of the sites file resolves its rules once.
        self.sites = sites if sites is not None else settings.site_registry()
        if self.sites.current().explicit:
            self.sites.on_change(policy.adopt_sites)
        metrics.start_at_zero(policy.departments, _site_labels(self.sites.current()))
        self.topics = TopicNames(prefix=settings.topic_prefix)
        self.ops = OpsServer(settings.service)
        self.pool: asyncpg.Pool | None = None
        self.ledger: CaseLedger | None = None
        self.publisher = KafkaPublisher(settings.kafka_bootstrap, client_id=settings.service)
        self._consumers: list[EventConsumer[Any]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self, *, consume: bool = True, loops: bool = True, http: bool = True) -> None:
        s = self.settings
        dsn = str(s.database_url)
        await migrate(dsn, s.db_schema, MIGRATIONS)
        self.pool = await create_pool(dsn, s.db_schema)
        self.ledger = ledger = CaseLedger(
            self.pool, self.policy, self.clock, s.contact_rules(), sites=self.sites
        )
        await ensure_topics(s.kafka_bootstrap, self.topics)
        await self.publisher.start()
        if loops:
            relay = OutboxRelay(
                self.pool, self.publisher, self.topics.notifications, self.clock, self.sites
            )
            for n in range(s.fire_loops):
                self._loop(
                    "fire" if n == 0 else f"fire{n + 1}",
                    lambda: ledger.fire_due(s.fire_batch),
                    s.fire_batch,
                    pause=lambda: self._until_due(ledger),
                )
            self._loop("review", lambda: ledger.review_due(s.fire_batch), s.fire_batch)
            self._loop("relay", lambda: relay.publish_pending(s.relay_batch), s.relay_batch)
            self._loop("gauges", _counting(ledger.refresh_gauges), 1, every=5.0)
            if self.sites.path is not None:
                # A changed sites file is taken within the recheck interval, no restart.
                self._loop("sites", _counting(self._recheck_sites), 1, every=1.0)
            self._loop(
                "slow_gauges", _counting(ledger.refresh_slow_gauges), 1, every=s.slow_gauge_seconds
            )
            keep = timedelta(days=s.retention_days)
            self._loop("prune", lambda: ledger.prune(keep), 10_000, every=60.0)
            notes = timedelta(days=s.retention_case_notes_days)
            self._loop("prune_notes", lambda: ledger.prune_free_text(notes), 1_000, every=60.0)
        if consume:
            self._consume(
                self.topics.triggers, "followup.triggers", TriggerEvent, ledger.handle_trigger
            )
            self._consume(
                self.topics.outcomes, "followup.outcomes", OutcomeEvent, ledger.handle_outcome
            )
            self._consume(
                self.topics.appointments,
                "followup.appointments",
                AppointmentEvent,
                ledger.handle_appointment,
            )
            self._consume(
                self.topics.plans, "followup.plans", TreatmentPlanEvent, ledger.handle_plan
            )
            self._consume(
                self.topics.patients,
                "followup.patients",
                PatientStatusEvent,
                ledger.handle_patient_status,
            )
            for consumer in self._consumers:
                await consumer.start()
                self.ops.supervisor.watch(consumer.tasks)
        if http:
            # The sites' tokens follow the sites file (asked per request, no restart).
            if s.api_token or self.sites.current().explicit:
                audit = await AuditLog.ready(self.pool, dsn, s.audit_schema, s.service)
                CaseApi(self.pool, s.api_token, ledger, audit, site_tokens=self.sites.tokens).mount(
                    self.ops.app
                )
            else:
                log.warning("case_api_disabled", reason="FOLLOWUP_API_TOKEN is not set")
            self.ops.add_readiness_check("database", self._database_ready)
            self.ops.add_readiness_check("kafka", self.publisher.broker_ready)
            await self.ops.start(s.http_host, s.http_port)
            log.info("started", port=self.ops.port)

    def _consume(
        self,
        topic: str,
        base_topic: str,
        model: type[Envelope],
        handler: Callable[[Any], Awaitable[None]],
    ) -> None:
        s = self.settings
        self._consumers.append(
            EventConsumer(
                bootstrap=s.kafka_bootstrap,
                topic=topic,
                base_topic=base_topic,
                model=model,
                # A group per topic: one topic's rebalance does not pause the others.
                group_id=f"{s.topic_prefix}{s.consumer_group}.{base_topic}",
                handler=handler,
                publisher=self.publisher,
                deadletter_topic=self.topics.deadletter,
                service=s.service,
                clock=self.clock,
                max_original_bytes=s.deadletter_max_original_bytes,
            )
        )

    def _loop(
        self,
        name: str,
        work: Callable[[], Awaitable[int]],
        batch: int,
        every: float | None = None,
        pause: Callable[[], Awaitable[float]] | None = None,
    ) -> None:
        poll = every or self.settings.poll_seconds

        async def forever() -> None:
            while not self._stopping.is_set():
                try:
                    done = await work()
                    wait = poll if done >= batch or pause is None else await pause()
                except Exception as exc:  # the loop outlives a database or broker hiccup
                    log.warning("loop_failed", loop=name, error=type(exc).__name__)
                    done, wait = 0, poll
                if done < batch:
                    # A polling rhythm in real seconds, not clinic time: due work is found
                    # by comparing with the injected clock inside the query.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), wait)

        self._tasks.append(asyncio.create_task(forever(), name=f"scheduler:{name}"))
        self.ops.supervisor.watch({f"scheduler:{name}": self._tasks[-1]})

    async def _until_due(self, ledger: CaseLedger) -> float:
        """Seconds to sleep after a part batch: until the next attempt is due, within
        [fire_pause_min_seconds, poll_seconds]. Clinic seconds (the injected clock): a
        faster clock (the demo's) is still looked at every poll."""
        s = self.settings
        due = await ledger.next_due()
        if due is None:
            return s.poll_seconds
        until = (due - self.clock.now()).total_seconds()
        return min(s.poll_seconds, max(s.fire_pause_min_seconds, until))

    async def _recheck_sites(self) -> None:
        self.sites.current()

    async def _database_ready(self) -> bool:
        assert self.pool is not None
        return bool(await self.pool.fetchval("SELECT true"))

    async def stop(self) -> None:
        self.ops.supervisor.closing()
        # The loops finish the round under way (a firing's publish and its commit, a relay
        # batch and its marks) instead of being cancelled mid-way, within the grace.
        self._stopping.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=self.settings.stop_grace_seconds)
            if late:
                log.warning("stop_grace_exceeded", loops=len(late))
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for consumer in self._consumers:
            await consumer.stop()
        await self.ops.stop()
        await self.publisher.stop()
        if self.pool is not None:
            await self.pool.close()

    async def consumers_assigned(self) -> None:
        await asyncio.gather(*(c.assigned.wait() for c in self._consumers))


def _counting(work: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[int]]:
    async def counted() -> int:
        await work()
        return 0

    return counted


async def serve(
    settings: SchedulerSettings, policy: CadencePolicy, clock: Clock, sites: SiteRegistry
) -> None:
    scheduler = Scheduler(settings, clock, policy, sites)
    stop = asyncio.create_task(wait_for_stop_signal(scheduler.ops.supervisor))
    await asyncio.sleep(0)  # the signal handlers are in place before the slower start
    try:
        await scheduler.start()
        await stop
    finally:
        await scheduler.stop()


def _site_labels(sites: Sites) -> tuple[str, ...]:
    """The values the ``site`` label can take: the file's ids and "other", or "none"."""
    return (*sites.profiles, "other") if sites.explicit else ("none",)


def main() -> None:
    settings = load_or_exit(SchedulerSettings)
    logs.configure(settings.service, settings.log_level, settings.log_format)
    try:
        # A wrong policy file stops the scheduler here, naming the file and the line.
        policy = CadencePolicy.load(settings.policy_path)
        clock = settings.make_clock()
        # So does a wrong sites file, or a site's cadence override the policy refuses.
        sites = settings.site_registry()
        if sites.current().explicit:
            policy.adopt_sites(sites.current())
    except (PolicyError, ConfigError, SiteError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    run(lambda: serve(settings, policy, clock, sites))
