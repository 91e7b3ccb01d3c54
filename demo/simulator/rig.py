"""The clinic wired to a deployment: stand-ins, ingest feeds and the simulation together.

Shared by ``make demo`` (which also starts the services) and ``python -m demo.simulator``
(which plays a clinic against any running deployment).
"""

from __future__ import annotations

import secrets as tokens
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from common.clock import Clock
from common.kafka import KafkaPublisher
from demo.scenario import IngestPath, Scenario, carrier_errors
from demo.simulator.clinic import NotifierDesk, Simulation
from demo.simulator.feeds import ClinicFeed, FhirFeed, Hl7Feed, JsonFeed
from demo.simulator.hl7v2 import MllpSender
from demo.simulator.messengers import ChatPhones
from demo.simulator.patients import Reactions
from schemas.topics import TopicNames
from standins.calltasks import CallTaskReceiver
from standins.mailbox import Mailbox
from standins.telegram import TelegramStandIn
from standins.twilio import TwilioStandIn
from standins.viber import ViberStandIn
from standins.whatsapp import WhatsAppStandIn


@dataclass(frozen=True)
class Endpoints:
    """Where the deployment listens, and the bearer token of its inbound HTTP."""

    tracker_url: str
    mllp_host: str
    mllp_port: int
    notifier_url: str
    token: str
    kafka: str
    topics: TopicNames
    sms_provider: str = "primary"


@dataclass(frozen=True)
class StandInSecrets:
    webhook_secret: str
    twilio_sid: str
    twilio_token: str
    # The chat messengers' (issue 21): WhatsApp's access token and app secret, Telegram's
    # bot token and webhook secret, Viber's auth token.
    whatsapp_token: str = field(default_factory=lambda: tokens.token_urlsafe(24))
    whatsapp_app_secret: str = field(default_factory=lambda: tokens.token_hex(16))
    whatsapp_verify_token: str = field(default_factory=lambda: tokens.token_urlsafe(16))
    telegram_bot_token: str = field(
        default_factory=lambda: f"{7000000000 + tokens.randbelow(10**9)}:{tokens.token_urlsafe(26)}"
    )
    telegram_secret: str = field(default_factory=lambda: tokens.token_urlsafe(24))
    viber_token: str = field(default_factory=lambda: tokens.token_hex(24))


class StandIns:
    """The outside world: a mailbox (SMTP), an SMS provider (Twilio format), a ticketing
    tool, and the chat messengers (WhatsApp Cloud API, Telegram Bot API, Viber bot API)."""

    def __init__(self, clock: Clock, directory: Path, secrets: StandInSecrets) -> None:
        self.directory = directory
        self.secrets = secrets
        self.whatsapp = WhatsAppStandIn(
            access_token=secrets.whatsapp_token,
            app_secret=secrets.whatsapp_app_secret,
            now=clock.now,
        )
        self.telegram = TelegramStandIn(
            bot_token=secrets.telegram_bot_token, secret_token=secrets.telegram_secret
        )
        self.viber = ViberStandIn(auth_token=secrets.viber_token)
        self.mailbox = Mailbox(clock, directory / "mailbox")
        self.calltasks = CallTaskReceiver(
            secret=secrets.webhook_secret, clock=clock, capture_file=directory / "call-tasks.jsonl"
        )
        self.sms = TwilioStandIn(
            account_sid=secrets.twilio_sid,
            auth_token=secrets.twilio_token,
            clock=clock,
            capture_dir=directory,
        )

    async def start(self, smtp_port: int = 0, sms_port: int = 0, calltask_port: int = 0) -> None:
        await self.mailbox.start(port=smtp_port)
        await self.calltasks.start(port=calltask_port)
        await self.sms.start(port=sms_port)
        for messenger in (self.whatsapp, self.telegram, self.viber):
            await messenger.start()

    async def stop(self) -> None:
        for messenger in (self.viber, self.telegram, self.whatsapp):
            await messenger.stop()
        await self.sms.stop()
        await self.calltasks.stop()
        await self.mailbox.stop()


class ClinicRig:
    """Feeds and the simulation for one run; ``open`` before, ``close`` after."""

    def __init__(
        self,
        scenario: Scenario,
        clock: Clock,
        endpoints: Endpoints,
        standins: StandIns,
        run_id: str,
        reactions: Reactions | None = None,
    ) -> None:
        self.scenario = scenario
        self.reactions = reactions
        self.clock = clock
        self.endpoints = endpoints
        self.standins = standins
        self.run_id = run_id
        self.publisher = KafkaPublisher(endpoints.kafka, client_id=f"clinic-sim-{run_id}")
        self.mllp = MllpSender(endpoints.mllp_host, endpoints.mllp_port)
        self.session: aiohttp.ClientSession | None = None
        self.chat: ChatPhones | None = None
        base = endpoints.notifier_url.rstrip("/")
        # The messengers' webhooks (set with each platform's setWebhook or app settings).
        standins.whatsapp.webhook_url = f"{base}/whatsapp/webhook"
        standins.telegram.webhook_url = f"{base}/telegram/webhook"
        standins.viber.webhook_url = f"{base}/viber/webhook"
        standins.sms.inbound_urls = [
            f"{base}/sms/{endpoints.sms_provider}/inbound",
            f"{base}/sms/inbound",
        ]
        # Landlines and wrong numbers: the carrier's answer for them, in Twilio's codes.
        standins.sms.number_errors.update(carrier_errors(scenario))

    async def open(self) -> Simulation:
        await self.publisher.start()
        self.session = aiohttp.ClientSession()
        e = self.endpoints
        json_feed = JsonFeed(self.publisher, e.topics)
        feeds: dict[IngestPath, ClinicFeed] = {
            "json": json_feed,
            "hl7": Hl7Feed(self.mllp, json_feed, self.run_id),
            "fhir": FhirFeed(self.session, e.tracker_url.rstrip("/"), e.token),
        }
        simulation = Simulation(
            self.scenario,
            self.clock,
            feeds,
            publisher=self.publisher,
            topics=e.topics,
            desk=NotifierDesk(self.session, e.notifier_url, e.token),
            sms=self.standins.sms,
            reactions=self.reactions,
        )
        self.standins.calltasks.on_task = simulation.on_call_task
        self.standins.sms.on_message = simulation.on_sms
        self.standins.mailbox.handler.on_message = simulation.on_mail
        # The patients who prefer a chat messenger read and answer there (issue 21).
        self.chat = ChatPhones(self.scenario, self.clock, self.standins, simulation)
        simulation.plan_scenario()
        return simulation

    async def close(self) -> None:
        await self.mllp.close()
        if self.session is not None:
            await self.session.close()
        await self.publisher.stop()
