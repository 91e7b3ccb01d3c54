"""The patients' chat apps (issue 21): WhatsApp, Telegram and Viber, through the stand-ins.

A patient who prefers a messenger (``Patient.chat``) is enrolled on it before the clinic
opens (Telegram: the chat that started the clinic's bot; Viber: a subscriber). Each message
the clinic's bot sends them reaches their app (the stand-in's ``on_message``); the
platform then posts to the notifier what it documents, signed as it signs: WhatsApp a
``delivered`` then a ``read`` status, Viber ``delivered`` then ``seen`` (Telegram gives bots
no receipts). The patient answers as ``demo.chat`` scripts it: the rating after a rebooked
visit, STOP on the first message, or a few words. What each app saw and sent is kept in
``whatsapp.jsonl``, ``telegram.jsonl`` and ``viber.jsonl`` of the run, with virtual times.

Every reaction waits at least ``REAL_FLOOR`` real seconds after the message arrived: the
notifier records the platform's message id only once the API has answered, and a receipt
or an answer that came before would find no message to belong to.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from common.clock import Clock
from demo.scenario import Messenger, Patient, Scenario, e164
from demo.simulator.clinic import Simulation
from demo.simulator.patients import decide_chat_reply

if TYPE_CHECKING:
    from demo.simulator.rig import StandIns

Direction = Literal["out", "in", "receipt"]
# The templates Meta approved for the clinic, in each language the demo's patients speak:
# the follow-up (any reason) and the feedback question (FOLLOWUP_WHATSAPP_TEMPLATES).
WHATSAPP_TEMPLATES = ("care_follow_up", "visit_feedback")
TEMPLATE_LANGUAGES = ("lt", "en", "ru", "bg")
REAL_FLOOR = 1.0  # real seconds before any reaction (see the module's note)
READ_AFTER = timedelta(minutes=10)
REPLY_AFTER = timedelta(minutes=20)


@dataclass(frozen=True)
class ChatRecord:
    """One thing on one messenger, as the platform saw it."""

    channel: Messenger
    direction: Direction  # out: the clinic's bot wrote; in: the patient; receipt: platform
    address: str  # WhatsApp id (the number's digits), Telegram chat id, Viber user id
    at: datetime  # virtual time
    kind: str  # out: text or template; in: the words' kind; receipt: delivered, read, ...
    text: str = ""
    message_id: str = ""
    status: int = 0  # the notifier's HTTP answer to a webhook (in, receipt)
    # Sent while the patient's own message was being answered: the bot's confirmation of
    # STOP/START/HELP or its thanks for a rating, not a message of the cadence.
    answer: bool = False


def address_of(patient: Patient) -> str | None:
    """The patient's address on their messenger (WhatsApp: the number's digits)."""
    if patient.chat == "whatsapp":
        return e164(patient.phone).lstrip("+")
    return patient.chat_id


class ChatPhones:
    def __init__(
        self, scenario: Scenario, clock: Clock, standins: StandIns, simulation: Simulation
    ) -> None:
        self.clock = clock
        self.standins = standins
        self.simulation = simulation
        self.records: list[ChatRecord] = []
        self.patients: dict[tuple[str, str], Patient] = {}
        self.received: dict[str, int] = {}  # patient id -> messages of the cadence read
        self._answers: set[tuple[str, str]] = set()  # (channel, message id) of confirmations
        self._captures = {
            name: standins.directory / f"{name}.jsonl" for name in ("whatsapp", "telegram", "viber")
        }
        for patient in scenario.patients:
            address = address_of(patient)
            if patient.chat is None or address is None:
                continue
            self.patients[(patient.chat, address)] = patient
            if patient.chat == "telegram":
                standins.telegram.chats.add(int(address))  # opened the clinic's bot
            elif patient.chat == "viber":
                standins.viber.subscribed.add(address)
        standins.whatsapp.approved_templates.update(
            (name, language) for name in WHATSAPP_TEMPLATES for language in TEMPLATE_LANGUAGES
        )
        standins.whatsapp.on_message = self._on_whatsapp
        standins.telegram.on_message = self._on_telegram
        standins.viber.on_message = self._on_viber

    @property
    def captures(self) -> dict[str, Path]:
        return dict(self._captures)

    # --- what the apps see ---------------------------------------------------------

    async def _on_whatsapp(self, body: dict[str, Any]) -> None:
        text = str((body.get("text") or {}).get("body") or "")
        if body.get("type") == "template":
            template = body.get("template") or {}
            text = f"{template.get('name')}:{(template.get('language') or {}).get('code')}"
        record = self._note(
            "whatsapp", "out", str(body["to"]), str(body.get("type")), text, str(body["id"])
        )
        self.simulation.spawn(self._whatsapp(body, record))

    async def _on_telegram(self, message: dict[str, Any]) -> None:
        chat = str(message["chat"]["id"])
        record = self._note(
            "telegram",
            "out",
            chat,
            "text",
            str(message.get("text", "")),
            str(message["message_id"]),
        )
        self.simulation.spawn(self._react(record))

    async def _on_viber(self, body: dict[str, Any]) -> None:
        receiver = str(body.get("receiver"))
        token = str(body["message_token"])
        record = self._note("viber", "out", receiver, "text", str(body.get("text", "")), token)
        self.simulation.spawn(self._viber(body, record))

    async def _whatsapp(self, body: dict[str, Any], record: ChatRecord) -> None:
        await self._wait(timedelta(minutes=2))
        wa = self.standins.whatsapp
        # The platform's own rule: free text outside the 24-hour window fails (131047).
        outside = body.get("type") == "text" and not wa.in_window(str(body["to"]))
        status = "failed" if outside else "delivered"
        code = await wa.send_status(body, status)
        self._note("whatsapp", "receipt", record.address, status, "", record.message_id, code)
        if outside:
            return
        await self.clock.sleep(READ_AFTER.total_seconds())
        code = await wa.send_status(body, "read")
        self._note("whatsapp", "receipt", record.address, "read", "", record.message_id, code)
        await self._react(record, waited=True)

    async def _viber(self, body: dict[str, Any], record: ChatRecord) -> None:
        await self._wait(timedelta(minutes=2))
        viber = self.standins.viber
        code = await viber.receipt(body, "delivered")
        self._note("viber", "receipt", record.address, "delivered", "", record.message_id, code)
        await self.clock.sleep(READ_AFTER.total_seconds())
        code = await viber.receipt(body, "seen")
        self._note("viber", "receipt", record.address, "seen", "", record.message_id, code)
        await self._react(record, waited=True)

    async def _react(self, record: ChatRecord, waited: bool = False) -> None:
        """The patient reads the message and may answer (as ``decide_chat_reply`` says)."""
        if not waited:
            await self._wait(timedelta(minutes=2))
        if (record.channel, record.message_id) in self._answers:
            return  # the bot's confirmation of what the patient just wrote
        patient = self.patients.get((record.channel, record.address))
        if patient is None:
            return
        number = self.received.get(patient.patient_id, 0) + 1
        self.received[patient.patient_id] = number
        reply = self.simulation.feedback_reply(patient, record.at) or decide_chat_reply(
            patient, number
        )
        if reply is None:
            return
        await self.clock.sleep(REPLY_AFTER.total_seconds())
        await self.write(patient, record.channel, record.address, reply)

    async def write(self, patient: Patient, channel: Messenger, address: str, text: str) -> int:
        """The patient writes to the clinic's bot: the platform's signed webhook."""
        at = self.clock.now()
        if channel == "whatsapp":
            platform_list: list[dict[str, Any]] = self.standins.whatsapp.messages
            before = len(platform_list)
            status = await self.standins.whatsapp.patient_writes(address, text)
            found = [m for m in platform_list[before:] if str(m.get("to")) == address]
            self._answers.update(("whatsapp", str(m["id"])) for m in found)
        elif channel == "viber":
            platform_list = self.standins.viber.sent
            before = len(platform_list)
            status = await self.standins.viber.patient_writes(address, text)
            found = [m for m in platform_list[before:] if str(m.get("receiver")) == address]
            self._answers.update(("viber", str(m["message_token"])) for m in found)
        else:
            telegram = self.standins.telegram
            before = len(telegram.answers)
            status = await telegram.patient_writes(int(address), text)
            # Telegram performs the webhook's answer (a Bot API call): the confirmation.
            for call in telegram.answers[before:]:
                if str(call.get("chat_id")) == address:
                    self._note(
                        "telegram", "out", address, "text", str(call.get("text", "")), "", 0, True
                    )
        kind = (
            "stop"
            if text.strip().upper() == "STOP"
            else "rating"
            if text[:1].isdigit()
            else "reply"
        )
        self._note(channel, "in", address, kind, text, "", status, at=at)
        if kind == "stop":
            self.simulation.logs[patient.patient_id].opted_out = True
        return status

    # --- bookkeeping ---------------------------------------------------------------

    async def _wait(self, virtual: timedelta) -> None:
        speed = float(getattr(self.clock, "speed", 1.0))
        await self.clock.sleep(max(virtual.total_seconds(), REAL_FLOOR * speed))

    def _note(
        self,
        channel: Messenger,
        direction: Direction,
        address: str,
        kind: str,
        text: str = "",
        message_id: str = "",
        status: int = 0,
        answer: bool = False,
        *,
        at: datetime | None = None,
    ) -> ChatRecord:
        record = ChatRecord(
            channel,
            direction,
            address,
            at or self.clock.now(),
            kind,
            text,
            message_id,
            status,
            answer,
        )
        self.records.append(record)
        with self._captures[channel].open("a", encoding="utf-8") as f:
            row = asdict(record) | {"at": record.at.isoformat()}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return record

    def final_records(self) -> list[ChatRecord]:
        """The records, with the bot's confirmations marked as such."""
        return [
            r
            if r.direction != "out" or (r.channel, r.message_id) not in self._answers
            else ChatRecord(**(asdict(r) | {"answer": True}))
            for r in self.records
        ]
