"""The notifier's composition root: configuration, adapters and wiring live here alone."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import time, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field

from common import logs
from common.clock import Clock
from common.config import ConfigError, Settings, load_or_exit
from common.db import create_pool, migrate
from common.http import OpsServer
from common.kafka import EventConsumer, KafkaPublisher, ensure_topics
from common.service import run, wait_for_stop_signal
from schemas.events import ContactEvent, NotificationCommand, OutcomeEvent, PatientStatusEvent
from schemas.topics import CONTACTS, NOTIFICATIONS, PATIENTS, TopicNames
from services.notifier.directory import Directory
from services.notifier.dispatcher import Dispatcher, DispatchPolicy
from services.notifier.email_channel import Mailer, SmtpConfig
from services.notifier.http_api import NotifierApi
from services.notifier.ledger import Ledger
from services.notifier.quiet_hours import QuietHours
from services.notifier.sinks import CallTaskSink, FrontDeskEmailSink, KafkaTopicSink, WebhookSink
from services.notifier.sms import FailoverSms, TwilioProvider
from services.notifier.templates import TemplateBook, TemplateError

Consumed = ContactEvent | PatientStatusEvent | NotificationCommand
MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA = "notifier"


class NotifierSettings(Settings):
    service: str = "notifier"
    http_port: int = Field(default=8083, ge=0, le=65535)
    db_schema: str = SCHEMA
    public_base_url: str = "http://127.0.0.1:8083"
    api_token: str = ""
    link_secret: str = ""
    clinic_name: str = "the clinic"
    clinic_phone: str = "+37052000000"
    rebook_url: str | None = None
    default_language: str = "en"
    default_region: str = "LT"
    quiet_start: time = time(21, 0)
    quiet_end: time = time(8, 0)
    max_tries: int = Field(default=8, ge=1)
    retry_base_seconds: float = Field(default=30.0, gt=0)
    retry_cap_seconds: float = Field(default=3600.0, gt=0)
    sending_lease_seconds: float = Field(default=120.0, ge=0)
    # Runaway guard: at most this many SMS+emails per patient per local day, whatever
    # asks for them (the scheduler's caps are lower; this is the last line of defence).
    runaway_cap_per_day: int = Field(default=4, ge=1)
    # SMS: a primary and an optional secondary Twilio-compatible provider.
    sms_primary_url: str | None = None
    sms_primary_sid: str = ""
    sms_primary_token: str = ""
    sms_primary_from: str = ""
    sms_secondary_url: str | None = None
    sms_secondary_sid: str = ""
    sms_secondary_token: str = ""
    sms_secondary_from: str = ""
    sms_rate_per_second: float = Field(default=10.0, ge=0)
    # Email.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: Literal["none", "starttls", "tls"] = "starttls"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_sender: str = "followup@clinic.invalid"
    smtp_validate_certs: bool = True
    unsubscribe_mailto: str | None = None
    # Call tasks: comma-separated sinks among webhook, email, kafka.
    call_task_sinks: str = "kafka"
    webhook_url: str | None = None
    webhook_secret: str = ""
    front_desk_email: str | None = None


def _sms_providers(settings: NotifierSettings, clock: Clock) -> list[TwilioProvider]:
    providers: list[TwilioProvider] = []
    for role in ("primary", "secondary"):
        url = getattr(settings, f"sms_{role}_url")
        if not url:
            continue
        providers.append(
            TwilioProvider(
                name=role,
                base_url=url,
                account_sid=getattr(settings, f"sms_{role}_sid"),
                auth_token=getattr(settings, f"sms_{role}_token"),
                from_number=getattr(settings, f"sms_{role}_from"),
                clock=clock,
                per_second=settings.sms_rate_per_second,
            )
        )
    return providers


class NotifierApp:
    """Everything the notifier runs, started and stopped together (also by tests)."""

    def __init__(self, settings: NotifierSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.topics = TopicNames(settings.topic_prefix)
        try:
            self.book = TemplateBook.load(settings.default_language)
        except TemplateError as exc:
            raise ConfigError(f"templates: {exc}") from None
        self.sinks_wanted = [s.strip() for s in settings.call_task_sinks.split(",") if s.strip()]
        unknown = set(self.sinks_wanted) - {"webhook", "email", "kafka"}
        if unknown:
            raise ConfigError(f"FOLLOWUP_CALL_TASK_SINKS: unknown sink(s) {sorted(unknown)}")
        if "webhook" in self.sinks_wanted and not (
            settings.webhook_url and settings.webhook_secret
        ):
            raise ConfigError("the webhook sink needs FOLLOWUP_WEBHOOK_URL and _SECRET")
        if "email" in self.sinks_wanted and not (settings.front_desk_email and settings.smtp_host):
            raise ConfigError("the email sink needs FOLLOWUP_FRONT_DESK_EMAIL and _SMTP_HOST")
        self.ops = OpsServer(settings.service)
        self.publisher = KafkaPublisher(settings.kafka_bootstrap, client_id="notifier")
        self._tasks: list[asyncio.Task[None]] = []
        self._consumers: list[EventConsumer[Consumed]] = []
        self._closers: list[object] = []

    async def publish_outcome(self, outcome: OutcomeEvent) -> None:
        await self.publisher.publish(self.topics.outcomes, outcome)

    async def start(self) -> None:
        s = self.settings
        dsn = str(s.database_url)
        await ensure_topics(s.kafka_bootstrap, self.topics)
        await migrate(dsn, s.db_schema, MIGRATIONS)
        self.pool = await create_pool(dsn, s.db_schema)
        await self.publisher.start()
        self.directory = Directory(self.pool, s.default_region)
        self.ledger = Ledger(self.pool, sending_lease=timedelta(seconds=s.sending_lease_seconds))
        providers = _sms_providers(s, self.clock)
        sms = FailoverSms(providers) if providers else None
        mailer = None
        if s.smtp_host:
            mailer = Mailer(
                SmtpConfig(
                    host=s.smtp_host,
                    port=s.smtp_port,
                    sender=s.smtp_sender,
                    security=s.smtp_security,
                    username=s.smtp_username,
                    password=s.smtp_password,
                    validate_certs=s.smtp_validate_certs,
                )
            )
        sinks: list[CallTaskSink] = []
        for name in self.sinks_wanted:
            if name == "webhook":
                assert s.webhook_url is not None
                sinks.append(WebhookSink(s.webhook_url, s.webhook_secret, self.clock))
            elif name == "email":
                assert mailer is not None and s.front_desk_email is not None
                domain = s.smtp_sender.rsplit("@", 1)[-1]
                sinks.append(FrontDeskEmailSink(mailer, s.front_desk_email, domain))
            else:
                sinks.append(KafkaTopicSink(self.publisher, self.topics.calltasks))
        self._closers = [c for c in [*providers, mailer, *sinks] if hasattr(c, "close")]
        self.dispatcher = Dispatcher(
            ledger=self.ledger,
            directory=self.directory,
            book=self.book,
            policy=DispatchPolicy(
                clinic_name=s.clinic_name,
                clinic_phone=s.clinic_phone,
                default_language=s.default_language,
                rebook_url=s.rebook_url,
                public_base_url=s.public_base_url.rstrip("/"),
                unsubscribe_mailto=s.unsubscribe_mailto,
                link_secret=s.link_secret,
                quiet=QuietHours(s.quiet_start, s.quiet_end),
                max_tries=s.max_tries,
                daily_hard_cap=s.runaway_cap_per_day,
                retry_base_seconds=s.retry_base_seconds,
                retry_cap_seconds=s.retry_cap_seconds,
            ),
            clock=self.clock,
            publish_outcome=self.publish_outcome,
            sms=sms,
            mailer=mailer,
            sinks=sinks,
        )
        NotifierApi(
            ledger=self.ledger,
            directory=self.directory,
            publish=self.publish_outcome,
            clock=self.clock,
            public_base_url=s.public_base_url,
            provider_tokens=[getattr(s, f"sms_{p.name}_token") for p in providers],
            api_token=s.api_token,
            link_secret=s.link_secret,
            default_region=s.default_region,
        ).mount(self.ops.app)
        self.ops.add_readiness_check("database", self._db_ready)
        group = f"{s.topic_prefix}notifier"
        wiring: list[tuple[str, str, type, object]] = [
            (self.topics.contacts, CONTACTS.name, ContactEvent, self.directory.record_contact),
            (self.topics.patients, PATIENTS.name, PatientStatusEvent, self.directory.record_patient_status),  # noqa: E501
            (self.topics.notifications, NOTIFICATIONS.name, NotificationCommand, self.dispatcher.accept),  # noqa: E501
        ]  # fmt: skip
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
            )
            await consumer.start()
            self.ops.supervisor.watch(consumer.tasks)
            self._consumers.append(consumer)
        self._tasks.append(asyncio.create_task(self.dispatcher.run(), name="dispatch"))
        self.ops.supervisor.watch({"dispatch": self._tasks[-1]})
        await self.ops.start(s.http_host, s.http_port)

    async def _db_ready(self) -> bool:
        return bool(await self.pool.fetchval("SELECT 1"))

    async def stop(self) -> None:
        self.ops.supervisor.closing()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for consumer in self._consumers:
            await consumer.stop()
        await self.ops.stop()
        for closer in self._closers:
            await closer.close()  # type: ignore[attr-defined]
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
