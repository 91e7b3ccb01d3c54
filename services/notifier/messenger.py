"""What the patient's chat messengers (WhatsApp, Telegram, Viber) share, once.

Each messenger is its own plug-in (``whatsapp.py``, ``telegram.py``, ``viber.py``): its
platform's request format, its webhook and signature, its words for receipts. What they
have in common lives here:

- the text is the SMS template's (short, care first, says who writes and how to stop), in
  the patient's language, naming no one when the number is shared or a proxy reads it;
- a message the patient writes is read with the SMS reply vocabulary
  (``sms_text.read_reply``: STOP/START/HELP in en/lt/ru/bg); STOP opts the messenger
  address out at once, and every patient with that address gets the outcome;
  STOP, START and HELP are answered on the messenger in the patient's language;
- a receipt (delivered, read, failed) becomes the command's outcome;
- the platform saying the patient left (blocked the bot, unsubscribed) is their STOP;
- every signed webhook is acted on once (its key remembered, as for SMS).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from common.logs import get_logger
from schemas.base import Channel
from schemas.events import NotificationCommand, OutcomeEvent, OutcomeKind
from services.notifier import feedback, metrics
from services.notifier.channels import (
    ChannelRules,
    Job,
    Parts,
    PermanentSendError,
    RateLimiter,
    SendReceipt,
    Sent,
    TransientSendError,
)
from services.notifier.contacts import Contact
from services.notifier.outcomes import command_outcome
from services.notifier.sms_text import read_reply

log = get_logger(__name__)


@dataclass(frozen=True)
class ChatTemplate:
    """A message template the platform approved beforehand (WhatsApp, outside the
    24-hour window): its name, language and the values of its body's placeholders."""

    name: str
    language: str
    parameters: tuple[str, ...]


@dataclass(frozen=True)
class ChatMessage:
    to: str  # the patient's address on the platform (phone digits, chat id, user id)
    text: str
    template: ChatTemplate | None = None  # sent instead of ``text`` when given


class PatientLeft(Exception):
    """The platform says the patient blocked or left the clinic's bot: their STOP."""

    def __init__(self, provider: str, code: str) -> None:
        super().__init__(f"{provider}: {code}")
        self.provider = provider
        self.code = code


class MessengerClient(Protocol):
    provider: str

    async def deliver(self, message: ChatMessage) -> SendReceipt:
        """Hand over; raises TransientSendError, PermanentSendError or PatientLeft."""
        ...

    async def close(self) -> None: ...


class MessengerApi:
    """What the three platforms' send APIs share: one lazily opened HTTP session, the
    platform's rate limit on the injected clock, and one rule for a send whose answer did
    not arrive. A subclass builds its request and reads the platform's answer."""

    provider: str

    def __init__(self, per_second: float, parts: Parts, timeout: float = 10.0) -> None:
        self._limit = RateLimiter(per_second, parts.clock)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(
        self, url: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """The HTTP status and the JSON object answered (empty when it is not one)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        await self._limit.wait()
        try:
            async with self._session.post(url, json=body, headers=headers) as response:
                payload = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise TransientSendError(self.provider, type(exc).__name__) from None
        except (TimeoutError, aiohttp.ClientError, ValueError):
            # Sent, answer lost: no platform deduplicates a resend, so never a second copy.
            raise PermanentSendError(self.provider, "delivery_unknown") from None
        return status, payload if isinstance(payload, dict) else {}


CONFIRMATIONS = {"opt_out": "chat_stopped", "opt_in": "chat_started", "help": "chat_help"}


def read_json(body: bytes) -> Any:
    """A webhook's JSON, or 400 naming what is wrong (never what it says)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        raise web.HTTPBadRequest(text="the body is not JSON") from None


def missing_chat_id(channel: Channel) -> ChannelRules:
    """The rules of a messenger that writes to an id the patient enrolled with."""

    def missing(contact: Contact) -> str | None:
        return None if contact.chat_ids.get(channel) else "no_chat_id"

    return ChannelRules(
        consent=channel, reaches_patient=True, resend_when_unsure=False, missing=missing
    )


class Messenger:
    """The part every messenger channel shares; a platform module subclasses it."""

    name: Channel
    rules: ChannelRules

    def __init__(self, parts: Parts, client: MessengerClient | None) -> None:
        self._parts = parts
        self._client = client

    # --- sending -------------------------------------------------------------------

    def address(self, contact: Contact) -> str | None:
        """The patient's address on this platform (``rules.missing`` is None then)."""
        return contact.chat_ids.get(self.name)

    def redacted(self, contact: Contact) -> bool:
        """Whoever reads it may not be the patient: name no one and no visit."""
        return contact.proxy is not None

    def render(self, command: NotificationCommand, contact: Contact) -> ChatMessage:
        address = self.address(contact)
        assert address is not None
        if feedback.is_feedback(command):
            return ChatMessage(address, feedback.question(self._parts, contact, command))
        context = self._parts.voice.context(command, contact, redacted=self.redacted(contact))
        text = self._parts.book.render("sms", contact.language, context)
        if context.education and not context.redacted:
            # A chat costs no segments: the stage explained follows the message.
            link = f" {context.education_url}" if context.education_url else ""
            text = f"{text}\n\n{context.education}{link}"
        return ChatMessage(address, text)

    async def prepare(self, command: NotificationCommand, contact: Contact) -> ChatMessage:
        """What goes out now (WhatsApp picks a template outside its window)."""
        return self.render(command, contact)

    async def send(self, job: Job) -> Sent:
        if self._client is None:
            raise PermanentSendError("none", "channel_not_configured")
        assert job.contact is not None
        message = await self.prepare(job.command, job.contact)
        try:
            receipt = await self._client.deliver(message)
        except PatientLeft as exc:
            await self.patient_left(message.to, f"{job.command.idempotency_key}:opt_out")
            raise PermanentSendError(exc.provider, "opted_out") from None
        return Sent("sent", provider=receipt.provider, provider_id=receipt.provider_id)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    # --- inbound -------------------------------------------------------------------

    async def patients_at(self, address: str) -> list[str]:
        return await self._parts.directory.patients_with_chat_id(self.name, address)

    async def first_time(self, key: str) -> bool:
        """Replay protection, as for SMS: a webhook acted on once is acknowledged after."""
        retention = timedelta(days=self._parts.settings.callback_retention_days)
        fresh = await self._parts.ledger.first_callback(key, self._parts.clock.now(), retention)
        if not fresh:
            log.warning("callback_repeated", route=self.name)
        return fresh

    async def once(self, key: str, act: Callable[[], Awaitable[None]]) -> None:
        """``act()`` for a webhook seen the first time; forgotten again if it fails."""
        if not await self.first_time(key):
            return
        try:
            await act()
        except BaseException:
            await self._parts.ledger.forget_callback(key)
            raise

    async def patient_wrote(self, address: str, message_id: str, text: str) -> str | None:
        """A message from the patient: STOP/START/HELP or a reply, as for SMS. Returns the
        confirmation to send back (in the patient's language), if any."""
        now = self._parts.clock.now()
        await self._parts.directory.patient_wrote(self.name, address, now)
        reading = read_reply(text)
        meaning = reading.meaning
        if meaning in ("opt_out", "opt_in"):
            # STOP wins at once, for whoever holds this address, before anything else.
            await self._parts.directory.set_opt_out(
                address, self.name, meaning == "opt_out", now, f"{self.name}:{message_id}"
            )
            if meaning == "opt_out":
                metrics.OPT_OUTS.labels(self.name).inc()
        patients = await self.patients_at(address)
        answered: list[str] = []
        if meaning == "reply":  # "4, thank you": the answer to an open feedback question
            answered = await feedback.take_answer(self._parts, patients, self.name, text)
        others = [p for p in patients if p not in answered]
        await self._tell(others, f"{self.name}:{message_id}", meaning)
        log.info("chat_reply", channel=self.name, meaning=meaning, patients=len(patients))
        phrase = CONFIRMATIONS.get(meaning) or ("feedback_thanks" if answered else None)
        if phrase is None:
            return None
        contacts = [await self._parts.directory.contact(p) for p in patients]
        languages = {c.language for c in contacts if c is not None}
        language = languages.pop() if len(languages) == 1 else reading.language
        return self._parts.book.phrase(language or self._parts.book.default_language, phrase)

    async def answer(self, address: str, text: str) -> None:
        """Send a confirmation back; a failure is logged, the patient's word already counts."""
        if self._client is None:
            return
        try:
            await self._client.deliver(ChatMessage(address, text))
        except Exception as exc:  # the opt-out is recorded whatever happens to the answer
            log.warning("chat_answer_failed", channel=self.name, error=type(exc).__name__)

    async def patient_left(self, address: str, event_id: str) -> None:
        """The platform says the patient left the bot (blocked, unsubscribed): STOP."""
        now = self._parts.clock.now()
        await self._parts.directory.set_opt_out(address, self.name, True, now, event_id)
        metrics.OPT_OUTS.labels(self.name).inc()
        await self._tell(await self.patients_at(address), event_id, "opt_out")
        log.info("chat_patient_left", channel=self.name)

    async def _tell(self, patients: list[str], event_id: str, outcome: OutcomeKind) -> None:
        now = self._parts.clock.now()
        for patient_id in patients:
            await self._parts.publish_outcome(
                OutcomeEvent(
                    event_id=event_id if len(patients) == 1 else f"{event_id}:{patient_id}",
                    occurred_at=now,
                    source="notifier",
                    outcome=outcome,
                    patient_id=patient_id,
                    channel=self.name,
                )
            )

    async def receipt(
        self, provider_id: str, outcome: OutcomeKind, detail: str | None = None
    ) -> bool:
        """The platform's receipt of one message: its command's outcome. False when no
        message of ours has that id."""
        command = await self._parts.ledger.sent_command(self.name, provider_id=provider_id)
        if command is None:
            return False
        now = self._parts.clock.now()
        await self._parts.publish_outcome(command_outcome(command, outcome, now, detail=detail))
        return True
