"""The notifier's composition root: configuration, adapters and wiring live here alone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from common import logs
from common.audit import AuditLog
from common.clock import Clock
from common.config import ConfigError, load_or_exit
from common.db import create_pool, migrate
from common.http import OpsServer
from common.kafka import EventConsumer, KafkaPublisher, ensure_topics, is_transient
from common.service import run, wait_for_stop_signal
from schemas.events import (
    AppointmentEvent,
    ContactEvent,
    NotificationCommand,
    OutcomeEvent,
    PatientStatusEvent,
)
from schemas.topics import APPOINTMENTS, CONTACTS, NOTIFICATIONS, PATIENTS, TopicNames
from services.notifier import rebook_links, rebooking, registry
from services.notifier.channels import ClinicVoice, Parts, Plugin
from services.notifier.directory import Directory
from services.notifier.dispatcher import Dispatcher, DispatchPolicy
from services.notifier.email_channel import build_mailer
from services.notifier.ledger import Ledger
from services.notifier.privacy import Privacy, RetentionPeriods
from services.notifier.quiet_hours import QuietHours
from services.notifier.settings import SCHEMA, NotifierSettings
from services.notifier.site_sinks import SiteSinks
from services.notifier.templates import SmsSample, TemplateBook, TemplateError

__all__ = ["SCHEMA", "NotifierApp", "NotifierSettings", "main", "serve"]

Consumed = ContactEvent | PatientStatusEvent | NotificationCommand | AppointmentEvent
MIGRATIONS = Path(__file__).parent / "migrations"


def _sms_sample(settings: NotifierSettings) -> SmsSample | None:
    """With rebooking on, the SMS budgets are checked with the links as long as they are
    (or the general booking URL's planned length, if longer)."""
    if not settings.slots_source:
        return None
    base = (settings.rebook_base_url or settings.public_base_url).rstrip("/")
    link = f"{base}{rebook_links.PATH}/{'x' * rebook_links.ID_LENGTH}"
    planned = SmsSample().rebook_url or ""
    return SmsSample(rebook_url=link if len(link) > len(planned) else planned)


class NotifierApp:
    """Everything the notifier runs, started and stopped together (also by tests)."""

    def __init__(self, settings: NotifierSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.topics = TopicNames(settings.topic_prefix)
        try:
            self.book = TemplateBook.load(
                settings.default_language, sms_sample=_sms_sample(settings)
            )
        except TemplateError as exc:
            raise ConfigError(f"templates: {exc}") from None
        self.sinks_wanted = registry.wanted_sinks(settings)
        # The clinics of a chain: names, phones and signatures per site, their own sinks.
        self.sites = settings.site_registry()
        self.slot_source = rebooking.build_source(settings, clock)
        self.ops = OpsServer(settings.service)
        self.publisher = KafkaPublisher(settings.kafka_bootstrap, client_id="notifier")
        self._tasks: list[asyncio.Task[None]] = []
        self._consumers: list[EventConsumer[Consumed]] = []
        self._plugins: list[Plugin] = []
        self.site_sinks: SiteSinks | None = None

    async def publish_outcome(self, outcome: OutcomeEvent) -> None:
        await self.publisher.publish(self.topics.outcomes, outcome)

    async def publish_outcomes(self, outcomes: Sequence[OutcomeEvent]) -> None:
        await self.publisher.publish_many(self.topics.outcomes, outcomes)

    async def start(self) -> None:
        s = self.settings
        dsn = str(s.database_url)
        await ensure_topics(s.kafka_bootstrap, self.topics)
        await migrate(dsn, s.db_schema, MIGRATIONS)
        # The notifier sets no session state on pooled connections (no SET, LISTEN,
        # advisory lock or cursor left open): the reset query per release was a round
        # trip per statement (~8% of the dispatcher's samples).
        self.pool = await create_pool(dsn, s.db_schema, reset_sessions=False)
        await self.publisher.start()
        self.directory = Directory(self.pool, s.default_region)
        self.ledger = Ledger(self.pool, sending_lease=timedelta(seconds=s.sending_lease_seconds))
        self.privacy = Privacy(self.pool, self.directory, self.clock, s.service)
        self.mailer = build_mailer(s)
        parts = Parts(
            settings=s,
            clock=self.clock,
            book=self.book,
            voice=ClinicVoice(
                s.clinic_name,
                s.clinic_phone,
                s.rebook_url,
                s.default_language,
                names=s.clinic_names,
                signatures=s.clinic_signatures,
                education=s.education,
                sites=self.sites if self.sites.current().explicit else None,
            ),
            ledger=self.ledger,
            directory=self.directory,
            publisher=self.publisher,
            topics=self.topics,
            publish_outcome=self.publish_outcome,
            public_base_url=s.public_base_url.rstrip("/"),
            mailer=self.mailer,
            audit=await AuditLog.ready(self.pool, dsn, s.audit_schema, s.service),
        )
        self.rebooking: rebooking.Rebooking | None = None
        if self.slot_source is not None:
            self.rebooking = rebooking.Rebooking(
                parts, self.slot_source, rebooking.RebookStore(self.pool)
            )
            parts.voice = replace(parts.voice, link_for=self.rebooking.link_for)
        channels = registry.build_all(parts, self.sinks_wanted)
        # Each site's own sinks, rebuilt when the sites file changes (no restart).
        self.site_sinks = SiteSinks(parts)
        self.sites.on_change(self.site_sinks.adopt)
        self._plugins = [*channels.values(), *parts.sinks]
        if self.rebooking is not None:
            self._plugins.append(self.rebooking)
        for plugin in self._plugins:
            for route in plugin.routes():
                self.ops.app.router.add_route(route.method, route.path, route.handler)
        self.dispatcher = Dispatcher(
            ledger=self.ledger,
            directory=self.directory,
            channels=channels,
            policy=DispatchPolicy(
                quiet=QuietHours(s.quiet_start, s.quiet_end),
                max_tries=s.max_tries,
                daily_hard_cap=s.runaway_cap_per_day,
                retry_base_seconds=s.retry_base_seconds,
                retry_cap_seconds=s.retry_cap_seconds,
            ),
            clock=self.clock,
            publish_outcome=self.publish_outcome,
            sites=self.sites,
            publish_outcomes=self.publish_outcomes,
            concurrency=s.dispatch_concurrency,
        )
        self.ops.add_readiness_check("database", self._db_ready)
        self.ops.add_readiness_check("kafka", self.publisher.broker_ready)
        group = f"{s.topic_prefix}notifier"
        accept: Callable[[NotificationCommand], Awaitable[None]] = self.dispatcher.accept
        if self.rebooking is not None:
            accept = self.rebooking.accepting(accept)  # the message's link is stored first
        wiring: list[tuple[str, str, type, object]] = [
            (self.topics.contacts, CONTACTS.name, ContactEvent, self.privacy.record_contact),
            (self.topics.patients, PATIENTS.name, PatientStatusEvent, self.privacy.record_patient_status),  # noqa: E501
            (self.topics.notifications, NOTIFICATIONS.name, NotificationCommand, accept),
        ]  # fmt: skip
        if self.rebooking is not None:
            # The hospital's booking confirms what a patient asked for by link.
            wiring.append(
                (
                    self.topics.appointments,
                    APPOINTMENTS.name,
                    AppointmentEvent,
                    self.rebooking.record_appointment,
                )
            )
        for topic, base, model, handler in wiring:
            consumer: EventConsumer[Consumed] = EventConsumer(
                bootstrap=s.kafka_bootstrap,
                topic=topic,
                base_topic=base,
                model=model,
                group_id=f"{group}.{base}",
                handler=handler,  # type: ignore[arg-type]
                publisher=self.publisher,
                deadletter_topic=self.topics.deadletter,
                service=s.service,
                clock=self.clock,
                max_original_bytes=s.deadletter_max_original_bytes,
                # The compacted contacts topic erases a patient with a tombstone.
                on_tombstone=self.privacy.forget_contact if base == CONTACTS.name else None,
            )
            await consumer.start()
            self.ops.supervisor.watch(consumer.tasks)
            self._consumers.append(consumer)
        self._tasks.append(asyncio.create_task(self.dispatcher.run(), name="dispatch"))
        self.ops.supervisor.watch({"dispatch": self._tasks[-1]})
        self._tasks.append(asyncio.create_task(self._retention(), name="retention"))
        self.ops.supervisor.watch({"retention": self._tasks[-1]})
        await self.ops.start(s.http_host, s.http_port)

    async def _retention(self) -> None:
        """The retention sweep: batches until nothing is past its period, then a pause."""
        s = self.settings
        periods = RetentionPeriods(
            message_bodies=timedelta(days=s.retention_message_body_days),
            contacts=timedelta(days=s.retention_contact_days),
            opt_outs=timedelta(days=s.retention_opt_out_days),
            rebooking=timedelta(days=s.retention_rebook_days),
        )
        log = logs.get_logger(__name__)
        while True:
            try:
                while await self.privacy.prune(periods) > 0:
                    await asyncio.sleep(0)
            except Exception as exc:
                if not is_transient(exc):
                    raise  # a bug: the supervisor turns the service unready
                log.warning("retention_retry", error=type(exc).__name__)
            await asyncio.sleep(s.retention_sweep_seconds)

    async def _db_ready(self) -> bool:
        return bool(await self.pool.fetchval("SELECT 1"))

    async def stop(self) -> None:
        self.ops.supervisor.closing()
        # Drain first: no new rows are taken, the send under way finishes and is recorded
        # (bounded by the grace, below Kubernetes' 30 s terminationGracePeriodSeconds).
        if self._tasks:
            await self.dispatcher.drain(self._tasks[0], self.settings.stop_grace_seconds)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for consumer in self._consumers:
            await consumer.stop()
        await self.ops.stop()
        for plugin in self._plugins:
            await plugin.close()
        if self.site_sinks is not None:
            await self.site_sinks.close()
        if self.mailer is not None:
            await self.mailer.close()
        await self.publisher.stop()
        await self.pool.close()


async def serve(settings: NotifierSettings) -> None:
    log = logs.get_logger(__name__)
    try:
        app = NotifierApp(settings, settings.make_clock())
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    await app.start()
    log.info("started", port=app.ops.port)
    try:
        await wait_for_stop_signal(app.ops.supervisor)
    finally:
        await app.stop()


def main() -> None:
    settings = load_or_exit(NotifierSettings)
    logs.configure(settings.service, settings.log_level, settings.log_format)
    run(lambda: serve(settings))
