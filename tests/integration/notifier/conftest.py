from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from aiosmtpd.controller import Controller

from common.clock import ManualClock
from common.db import drop_schema
from schemas.events import OutcomeEvent
from services.notifier.app import NotifierApp, NotifierSettings
from standins.sms_provider import SmsProviderStandIn
from standins.telegram import TelegramStandIn
from standins.viber import ViberStandIn
from standins.whatsapp import WhatsAppStandIn
from tests.integration.notifier.world import (
    API_TOKEN,
    START,
    WEBHOOK_SECRET,
    Inbox,
    WebhookReceiver,
    World,
    running_world,
)
from tests.support import infra
from tests.support.polling import free_port


def world_settings(prefix: str, schema: str, **extra: object) -> NotifierSettings:
    values: dict[str, object] = {
        "kafka_bootstrap": infra.KAFKA_BOOTSTRAP,
        "database_url": infra.DATABASE_URL,
        "topic_prefix": prefix,
        "db_schema": schema,
        "http_host": "127.0.0.1",
        "api_token": API_TOKEN,
        "link_secret": "link-secret",
        "clinic_name": "Sample Clinic",
        "clinic_phone": "+37052000000",
        "retry_base_seconds": 1.0,
        "retry_cap_seconds": 4.0,
        "sending_lease_seconds": 60.0,
        "webhook_secret": WEBHOOK_SECRET,
        "front_desk_email": "desk@clinic.example",
        "smtp_security": "none",
        "smtp_sender": "followup@clinic.example",
        "call_task_sinks": "kafka,email,webhook",
    }
    values.update(extra)
    return NotifierSettings.model_validate(values)


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    async with messaging_world() as running:
        yield running


@asynccontextmanager
async def messaging_world(**extra: object) -> AsyncIterator[World]:
    """The notifier with SMS providers, SMTP and the webhook receiver (``extra``: more
    settings, e.g. a slot source for the rebooking tests)."""
    infra.ensure_up()
    unique = uuid.uuid4().hex[:10]
    prefix, schema = f"t{unique}.", f"t_{unique}"
    primary, secondary = (
        SmsProviderStandIn("ACprimary", "tok-1"),
        SmsProviderStandIn("ACsecondary", "tok-2"),
    )
    await primary.start()
    await secondary.start()
    inbox = Inbox()
    smtp_port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    webhook = WebhookReceiver()
    await webhook.start()
    http_port = int(str(extra.pop("http_port", free_port())))
    base_url = f"http://127.0.0.1:{http_port}"
    settings = world_settings(
        prefix,
        schema,
        http_port=http_port,
        public_base_url=base_url,
        sms_primary_url=primary.base_url,
        sms_primary_sid="ACprimary",
        sms_primary_token="tok-1",
        sms_primary_from="+15005550006",
        sms_secondary_url=secondary.base_url,
        sms_secondary_sid="ACsecondary",
        sms_secondary_token="tok-2",
        sms_secondary_from="+15005550007",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        webhook_url=f"http://127.0.0.1:{webhook.port}/tasks",
        # Escalations: the doctor's mailbox and the tool's escalation queue.
        escalation_email="doctor@clinic.example",
        escalation_webhook_url=f"http://127.0.0.1:{webhook.port}/escalations",
        **extra,
    )
    clock = ManualClock(START)
    app = NotifierApp(settings, clock)
    running = running_world(
        app,
        clock,
        primary=primary,
        secondary=secondary,
        inbox=inbox,
        webhook=webhook,
        base_url=base_url,
    )
    try:
        async with running as world:
            yield world
    finally:
        await webhook.stop()
        smtp.stop()
        await primary.stop()
        await secondary.stop()
        await drop_schema(infra.DATABASE_URL, schema)


VERIFY_TOKEN = "wa-verify"  # the WhatsApp webhook's GET verification token


@dataclass
class Chats:
    """The notifier's world with the patients' chat messengers: stand-ins of WhatsApp's
    Cloud API, Telegram's Bot API and Viber's REST bot API, each pointed at the notifier's
    webhook."""

    world: World
    whatsapp: WhatsAppStandIn
    telegram: TelegramStandIn
    viber: ViberStandIn

    def of(self, patient_id: str, outcome: str) -> list[OutcomeEvent]:
        return [
            o
            for o in self.world.outcomes.events
            if o.patient_id == patient_id and o.outcome == outcome
        ]


@asynccontextmanager
async def chatting_world(
    approved_templates: Iterable[tuple[str, str]],
    templates: dict[str, str] | None = None,
    **extra: object,
) -> AsyncIterator[Chats]:
    """``messaging_world`` with the three messengers; ``approved_templates``: the (name,
    language) WhatsApp templates Meta approved; ``templates``: which template each reason
    is written as (default: ``no_show`` as ``missed_visit``; ``{}``: the notifier's own);
    ``extra``: more notifier settings."""
    if templates is None:
        templates = {"no_show": "missed_visit"}
    whatsapp = WhatsAppStandIn(approved_templates=set(approved_templates))
    telegram = TelegramStandIn()
    viber = ViberStandIn()
    for standin in (whatsapp, telegram, viber):
        await standin.start()
    try:
        async with messaging_world(
            whatsapp_url=f"{whatsapp.base_url}/v21.0",
            whatsapp_phone_number_id=whatsapp.phone_number_id,
            whatsapp_access_token=whatsapp.access_token,
            whatsapp_app_secret=whatsapp.app_secret,
            whatsapp_verify_token=VERIFY_TOKEN,
            **({"whatsapp_templates": templates} if templates else {}),
            telegram_url=telegram.base_url,
            telegram_bot_token=telegram.bot_token,
            telegram_webhook_secret=telegram.secret_token,
            viber_url=viber.base_url,
            viber_auth_token=viber.auth_token,
            viber_sender_name="Sample Clinic",
            **extra,
        ) as world:
            whatsapp.now = world.clock.now  # the 24-hour window on the test's clock
            whatsapp.webhook_url = f"{world.base_url}/whatsapp/webhook"
            telegram.webhook_url = f"{world.base_url}/telegram/webhook"
            viber.webhook_url = f"{world.base_url}/viber/webhook"
            yield Chats(world, whatsapp, telegram, viber)
    finally:
        for standin in (whatsapp, telegram, viber):
            await standin.stop()
