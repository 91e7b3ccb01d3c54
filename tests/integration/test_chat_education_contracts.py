"""Contract across services, scheduler <-> notifier, for what issue 21 added: a cadence
step on the patient's chat messenger (WhatsApp, Telegram, Viber) and the stage explained
to the patient (education).

The real scheduler and the real notifier run on one set of topics and one manual clock,
each in its own PostgreSQL schema; the notifier writes through stand-ins of the three
platforms speaking their documented request formats, and hears the patient through their
signed webhooks. Each test reads what the other service did: the stand-in's capture, the
SMTP inbox, the scheduler's case API and tables. (Each platform's rules on the notifier
alone: ``tests/integration/notifier/test_messengers.py``; the SMS and email outcomes
across both: ``test_outcome_contracts.py``.)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest

from schemas.base import Channel
from schemas.events import (
    ChannelConsent,
    MessengerIds,
    StageEducation,
    TreatmentPlanEvent,
    TreatmentStage,
)
from schemas.topics import TopicNames
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy
from tests.integration.notifier.conftest import Chats, chatting_world
from tests.support.both import Both
from tests.support.polling import eventually
from tests.support.scheduler import scheduler_beside

pytestmark = pytest.mark.integration

# Each department's cadence opens on the messenger its patients use and writes there again
# the next day (a day apart: one automated message a day is the frequency cap); a refused
# or stopped messenger falls back to a text first.
CHAT_DEPARTMENTS: dict[str, str] = {
    "dental": "whatsapp",
    "orthodontics": "telegram",
    "surgery": "viber",
}
# The department's own explanation (the notifier's FOLLOWUP_EDUCATION), for stages whose
# plan explains nothing.
ORTHODONTICS_EDUCATION = StageEducation(
    language="lt",
    text="Breketai veikia tik reguliariai koreguojami.",
    url="https://clinic.example/lt/breketai",
)
IMPLANT_EDUCATION = [
    StageEducation(
        language="lt",
        text="Implantas turi sugyti laiku: pavėlavus gydymas užtrunka.",
        url="https://clinic.example/lt/implantas",
    ),
    StageEducation(
        language="ru",
        text="Имплант должен прижиться вовремя: иначе лечение затянется.",
        url="https://clinic.example/ru/implant",
    ),
    StageEducation(language="en", text="The implant must heal in time."),
]
# "Why it matters:" and "Read more:" as the email writes them in each language.
LEADS = {"lt": ("Kodėl tai svarbu:", "Daugiau:"), "ru": ("Почему это важно:", "Подробнее:")}


def chat_policy() -> CadencePolicy:
    """The default policy, each department opening on (and repeating) its messenger."""
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    assert text.rstrip().endswith('sat: "09:00-14:00"'), "the dental block is no longer last"
    blocks = []
    for department, channel in CHAT_DEPARTMENTS.items():
        head = "" if department == "dental" else f"  {department}:\n"
        blocks.append(
            f"{head}    steps:\n"
            f"      - {{delay: PT1H, channel: {channel}}}\n"
            f"      - {{delay: P1D, channel: {channel}}}\n"
            "      - {delay: P1D, channel: call_task}\n"
            "    fallback: [sms, call_task, email]\n"
        )
    return CadencePolicy.from_text(text.rstrip() + "\n" + "".join(blocks), "<chat steps>")


@dataclass
class Setting:
    """Both services with the messengers' stand-ins."""

    both: Both
    chats: Chats


@pytest.fixture(scope="module")
async def setting() -> AsyncIterator[Setting]:
    approved = {("missed_visit", "lt"), ("missed_visit", "en"), ("care_follow_up", "en")}
    education = {"orthodontics": [ORTHODONTICS_EDUCATION.model_dump()]}
    async with chatting_world(approved, education=education) as chats:
        world = chats.world
        topics = TopicNames(prefix=world.app.topics.prefix)
        async with scheduler_beside(
            topics, world.clock, api_token="case-api-token", policy=chat_policy()
        ) as scheduler:
            yield Setting(Both(world, scheduler), chats)


def _text(mail: EmailMessage) -> str:
    body = mail.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


# --- the stage explained (education) ---------------------------------------------------


async def _plan(setting: Setting, patient: str, department: str, **stage: Any) -> str:
    """The tracker's plan of ``patient``: the extraction done, the implant next (``stage``:
    more of it, e.g. its education); returns the plan id once the scheduler holds it."""
    world = setting.both.world
    now = world.clock.now()
    plan = TreatmentPlanEvent(
        event_id=f"plan-{patient}:v1",
        occurred_at=now - timedelta(days=1),
        source="tracker",
        plan_id=f"plan-{patient}",
        patient_id=patient,
        department=department,
        timezone="Europe/Vilnius",
        responsible_practitioner_id="dr-7",
        stages=[
            TreatmentStage(
                stage_id="stage-1",
                sequence=1,
                name="Extraction",
                completed_at=now - timedelta(days=10),
            ),
            TreatmentStage(
                stage_id="stage-2", sequence=2, name="Implant", max_interval_days=90, **stage
            ),
        ],
    )
    await world.publisher.publish(world.topics.plans, plan)
    pool = setting.both.scheduler.pool
    assert pool is not None

    async def held() -> bool:
        found = await pool.fetchval("SELECT count(*) FROM plans WHERE plan_id = $1", plan.plan_id)
        return bool(found)

    await eventually(held, timeout=30)
    return plan.plan_id


async def _open_on(
    setting: Setting, patient: str, channel: Channel, department: str, plan_id: str, **contact: Any
) -> str:
    """The no-show of the plan's implant visit; the patient prefers ``channel``. Returns the
    case id once its first attempt went out on that channel."""
    both = setting.both
    case_id = await both.open_case(
        patient,
        prefers=channel,
        trigger_fields={"department": department, "plan_id": plan_id, "stage_id": "stage-2"},
        **contact,
    )
    first = await both.attempt(case_id, 1, lambda a: a["state"] == "fired")
    assert first["channel"] == channel
    await eventually(lambda: both.world.outcome(f"{case_id}:1:sent"), timeout=60)
    return case_id


@pytest.mark.parametrize("language", ["lt", "ru"])
async def test_the_plans_explanation_reaches_the_email_in_the_patients_language(
    setting: Setting, language: str
) -> None:
    world = setting.both.world
    patient = f"p-edu-mail-{language}"
    plan_id = await _plan(setting, patient, "dental", education=IMPLANT_EDUCATION)
    case_id = await _open_on(
        setting,
        patient,
        "email",
        "dental",
        plan_id,
        email=f"{patient}@example.org",
        language=language,
    )
    [mail] = world.inbox.for_key(f"{case_id}:1")
    [mine] = [e for e in IMPLANT_EDUCATION if e.language == language]
    lead, more = LEADS[language]
    assert f"{lead} {mine.text} {more} {mine.url}" in _text(mail)
    html = mail.get_body(("html",))
    assert html is not None and f'href="{mine.url}"' in str(html.get_content())
    others = [e.text for e in IMPLANT_EDUCATION if e.language != language]
    assert not any(text in _text(mail) for text in others)  # never another language's


async def test_the_plans_explanation_follows_the_chat_message(setting: Setting) -> None:
    viber = setting.chats.viber
    patient, user = "p-edu-viber", "user-edu-viber="
    viber.subscribed.add(user)
    plan_id = await _plan(setting, patient, "surgery", education=IMPLANT_EDUCATION)
    await _open_on(
        setting,
        patient,
        "viber",
        "surgery",
        plan_id,
        language="lt",
        consent=ChannelConsent(viber=True),
        messengers=MessengerIds(viber_user_id=user),
    )
    [message] = [m for m in viber.sent if m["receiver"] == user]
    [lt] = [e for e in IMPLANT_EDUCATION if e.language == "lt"]
    assert message["text"].endswith(f"\n\n{lt.text} {lt.url}")
    assert "Имплант" not in message["text"]


async def test_the_text_message_keeps_to_its_budget_without_the_explanation(
    setting: Setting,
) -> None:
    """As documented (docs/integration/kafka-json.md): the SMS does not carry the stage's
    explanation, its segments are billed; the case still holds it for email and chat."""
    world = setting.both.world
    patient, phone = "p-edu-sms", "+37060000901"
    plan_id = await _plan(setting, patient, "dental", education=IMPLANT_EDUCATION)
    case_id = await _open_on(setting, patient, "sms", "dental", plan_id, phone=phone, language="lt")
    [text] = [m for m in world.primary.messages if m.to == phone]
    assert "Implantas turi sugyti" not in text.body and "clinic.example" not in text.body
    pool = setting.both.scheduler.pool
    assert pool is not None
    held = await pool.fetchval("SELECT education FROM cases WHERE case_id = $1", case_id)
    assert [e["language"] for e in json.loads(held)] == ["lt", "ru", "en"]


async def test_a_stage_without_an_explanation_gets_none(setting: Setting) -> None:
    world = setting.both.world
    patient = "p-edu-none"
    plan_id = await _plan(setting, patient, "dental")
    case_id = await _open_on(
        setting, patient, "email", "dental", plan_id, email=f"{patient}@example.org", language="lt"
    )
    [mail] = world.inbox.for_key(f"{case_id}:1")
    assert "Kodėl tai svarbu" not in _text(mail)
    assert "clinic.example" not in _text(mail)


async def test_the_departments_explanation_for_a_stage_the_plan_leaves_unexplained(
    setting: Setting,
) -> None:
    world = setting.both.world
    patient = "p-edu-department"
    plan_id = await _plan(setting, patient, "orthodontics")
    case_id = await _open_on(
        setting,
        patient,
        "email",
        "orthodontics",
        plan_id,
        email=f"{patient}@example.org",
        language="lt",
    )
    [mail] = world.inbox.for_key(f"{case_id}:1")
    education = ORTHODONTICS_EDUCATION
    assert f"Kodėl tai svarbu: {education.text} Daugiau: {education.url}" in _text(mail)


# --- a cadence step on the patient's messenger ---------------------------------------


@dataclass(frozen=True)
class Messenger:
    """One messenger's patient, how to find what the notifier sent them on it, and how the
    platform tells the notifier what the patient did."""

    channel: Channel
    department: str
    phone: str
    recipient: str  # the platform's id: the number's digits, the chat id, the user id

    def contact(self) -> dict[str, Any]:
        consent = ChannelConsent.model_validate({self.channel: True})
        ids = {"telegram": "telegram_chat_id", "viber": "viber_user_id"}
        messengers = (
            MessengerIds.model_validate({ids[self.channel]: self.recipient})
            if self.channel in ids
            else None
        )
        return {"phone": self.phone, "language": "lt", "consent": consent, "messengers": messengers}

    def enrol(self, chats: Chats) -> None:
        """The patient opened the clinic's bot (Telegram, Viber)."""
        if self.channel == "telegram":
            chats.telegram.chats.add(int(self.recipient))
        elif self.channel == "viber":
            chats.viber.subscribed.add(self.recipient)

    def sent(self, chats: Chats) -> list[dict[str, Any]]:
        """What the platform accepted for the patient from the notifier."""
        if self.channel == "whatsapp":
            return [m for m in chats.whatsapp.messages if m["to"] == self.recipient]
        if self.channel == "telegram":
            return [m for m in chats.telegram.sent if str(m["chat"]["id"]) == self.recipient]
        return [m for m in chats.viber.sent if m["receiver"] == self.recipient]

    async def writes(self, chats: Chats, text: str) -> int:
        """The patient writes; the platform posts it, signed as it signs, to the notifier."""
        if self.channel == "whatsapp":
            return await chats.whatsapp.patient_writes(self.recipient, text)
        if self.channel == "telegram":
            return await chats.telegram.patient_writes(int(self.recipient), text)
        return await chats.viber.patient_writes(self.recipient, text)


MESSENGERS = [
    Messenger("whatsapp", "dental", "+37060000911", "37060000911"),
    Messenger("telegram", "orthodontics", "+37060000912", "555911"),
    Messenger("viber", "surgery", "+37060000913", "user-contract-vb="),
]


def _assert_platform_format(messenger: Messenger, message: dict[str, Any]) -> None:
    """The request as the platform documents it, outside the 24-hour window on WhatsApp."""
    if messenger.channel == "whatsapp":
        # The patient has not written in 24 hours: only the approved template, in their
        # language, naming the clinic and its phone, nobody and no visit.
        assert message["messaging_product"] == "whatsapp" and message["type"] == "template"
        assert message["template"]["name"] == "missed_visit"
        assert message["template"]["language"] == {"code": "lt"}
        parameters = message["template"]["components"][0]["parameters"]
        assert [p["text"] for p in parameters] == ["Sample Clinic", "+37052000000"]
    elif messenger.channel == "telegram":
        assert message["chat"] == {"id": int(messenger.recipient), "type": "private"}
        assert message["text"].startswith("Pasigedome Jūsų vizito")
    else:
        assert message["sender"] == {"name": "Sample Clinic"} and message["type"] == "text"
        assert message["text"].startswith("Pasigedome Jūsų vizito")


async def _receipt(messenger: Messenger, chats: Chats, message: dict[str, Any]) -> str:
    """The platform's receipt of the message; returns the outcome the scheduler should hold.
    Telegram gives bots none: the Bot API's acceptance (``sent``) is all there is."""
    if messenger.channel == "whatsapp":
        assert await chats.whatsapp.deliver(message) == "delivered"
        return "delivered"
    if messenger.channel == "viber":
        assert await chats.viber.receipt(message, "delivered") == 200
        return "delivered"
    return "sent"


@pytest.mark.parametrize("messenger", MESSENGERS, ids=lambda m: m.channel)
async def test_a_messenger_step_goes_out_comes_back_and_stop_moves_the_cadence(
    setting: Setting, messenger: Messenger
) -> None:
    both, chats = setting.both, setting.chats
    world = both.world
    patient = f"p-chat-{messenger.channel}"
    messenger.enrol(chats)
    case_id = await both.open_case(
        patient,
        prefers=messenger.channel,
        trigger_fields={"department": messenger.department},
        **messenger.contact(),
    )
    first = await both.attempt(case_id, 1, lambda a: a["state"] == "fired")
    assert first["channel"] == messenger.channel
    assert first["template"] == f"no_show_{messenger.channel}"

    # The scheduler's command, through the real topic, reaches the platform.
    sent = await eventually(lambda: world.outcome(f"{case_id}:1:sent"), timeout=60)
    assert sent.channel == messenger.channel
    [message] = messenger.sent(chats)
    _assert_platform_format(messenger, message)
    assert not [m for m in world.primary.messages if m.to == messenger.phone]

    # The platform's receipt is the attempt's outcome in the scheduler.
    receipt = await _receipt(messenger, chats, message)
    await both.recorded(case_id, 1, receipt)

    # STOP, from the platform's signed webhook: the scheduler records it for the case and
    # plans its next step on another channel.
    assert await messenger.writes(chats, "STOP") == 200
    opt_out = await eventually(lambda: chats.of(patient, "opt_out") or None, timeout=60)
    assert opt_out[0].channel == messenger.channel
    pool = both.scheduler.pool
    assert pool is not None

    async def opted() -> bool:
        found = await pool.fetchval(
            "SELECT count(*) FROM channel_opt_outs WHERE patient_id = $1 AND channel = $2",
            patient,
            messenger.channel,
        )
        return bool(found)

    await eventually(opted, timeout=60)
    second = await both.attempt(case_id, 2, lambda a: a["state"] == "planned")
    assert second["channel"] == "sms"  # the step names the messenger; the fallback's first
    case = await both.case(case_id)
    stops = [h for h in case["history"] if h["event"] == "opt_out"]
    assert [h["detail"]["channel"] for h in stops] == [messenger.channel]

    # The next attempt goes out as a text; nothing more on the messenger.
    on_messenger = len(messenger.sent(chats))  # with the platform's STOP confirmation
    due = datetime.fromisoformat(second["planned_at"])
    await world.advance((due - world.clock.now()).total_seconds() + 1)
    await both.attempt(case_id, 2, lambda a: a["state"] == "fired")
    await eventually(lambda: world.outcome(f"{case_id}:2:sent"), timeout=60)
    [text] = [m for m in world.primary.messages if m.to == messenger.phone]
    assert text.body.startswith("Pasigedome Jūsų vizito")  # in the patient's language
    assert len(messenger.sent(chats)) == on_messenger


# --- a patient the messenger may not be used for ------------------------------------


@pytest.mark.parametrize(
    ("channel", "department", "contact", "detail"),
    [
        # Consent to SMS, email and calls only (the messengers are off until given).
        ("whatsapp", "dental", {}, "no_consent"),
        # Consent given, but the patient never opened the clinic's bot: no chat id.
        ("telegram", "orthodontics", {"consent": ChannelConsent(telegram=True)}, "no_chat_id"),
    ],
)
async def test_a_messenger_the_patient_cannot_be_written_on_falls_back_to_the_next_channel(
    setting: Setting, channel: Channel, department: str, contact: dict[str, Any], detail: str
) -> None:
    both, chats = setting.both, setting.chats
    world = both.world
    patient = f"p-chat-refused-{channel}"
    phone = {"whatsapp": "+37060000921", "telegram": "+37060000922"}[channel]
    before = len(chats.whatsapp.messages), len(chats.telegram.sent)
    case_id = await both.open_case(
        patient, prefers=channel, trigger_fields={"department": department}, phone=phone, **contact
    )
    refused = await eventually(lambda: world.outcome(f"{case_id}:1:channel_impossible"), timeout=60)
    assert refused.channel == channel and refused.detail == detail
    attempt = await both.recorded(case_id, 1, "channel_impossible")
    assert attempt["channel"] == channel
    # The same step at once on the policy's next channel: a text.
    second = await both.attempt(case_id, 2, lambda a: a["state"] == "fired")
    assert second["channel"] == "sms"
    await eventually(lambda: world.outcome(f"{case_id}:2:sent"), timeout=60)
    assert [m.to for m in world.primary.messages].count(phone) == 1
    case = await both.case(case_id)
    assert channel in (case["impossible_channels"] or [])
    assert (len(chats.whatsapp.messages), len(chats.telegram.sent)) == before
