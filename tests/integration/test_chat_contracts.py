"""Contract across services, scheduler -> notifier -> messenger: a cadence step on a chat
messenger goes from the real scheduler through the real notifications topic to the real
notifier and out to the platform's stand-in, and what the platform posts back (a receipt,
the patient's STOP) reaches the scheduler's case through the real outcomes topic.

Both services run on one topic prefix and one manual clock, each in its own PostgreSQL
schema (as ``test_outcome_contracts.py``); the WhatsApp Cloud API, Telegram Bot API and
Viber bot API stand-ins (``standins/``) speak their documented formats and sign their
webhooks as the platforms do. The policy is the shipped one with the messengers at the end
of the fallback (a preferred messenger opens the cadence) and a late cancellation's first
step on Viber (a step naming a messenger).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from schemas.events import ChannelConsent, MessengerIds
from schemas.topics import TopicNames
from services.scheduler.cases import case_id_for
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy
from standins.telegram import TelegramStandIn
from standins.viber import ViberStandIn
from standins.whatsapp import WhatsAppStandIn
from tests.integration.notifier.conftest import chatting_world
from tests.support.both import CASE_TOKEN, Both
from tests.support.polling import eventually
from tests.support.scheduler import case_from_api, case_if_open, no_show_trigger, scheduler_beside

pytestmark = pytest.mark.integration
FALLBACK = "  fallback: [call_task, sms, email]\n"
LATE_FIRST_STEP = "  late_cancellation:\n    steps:\n      - {delay: PT2H, channel: sms}\n"


def chat_policy() -> CadencePolicy:
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    assert FALLBACK in text and LATE_FIRST_STEP in text, "the shipped policy changed"
    text = text.replace(
        FALLBACK, "  fallback: [call_task, sms, email, whatsapp, telegram, viber]\n"
    )
    text = text.replace(LATE_FIRST_STEP, LATE_FIRST_STEP.replace("channel: sms", "channel: viber"))
    return CadencePolicy.from_text(text, "<messengers in the fallback, a Viber step>")


@dataclass
class Chain(Both):
    """Both services, with the three messengers' stand-ins the notifier writes to."""

    whatsapp: WhatsAppStandIn
    telegram: TelegramStandIn
    viber: ViberStandIn

    async def fired(self, case_id: str, number: int) -> dict[str, Any]:
        """Attempt ``number`` once it went out, the clock moved on to its planned moment."""

        async def planned() -> dict[str, Any] | None:
            case = await case_if_open(self.scheduler, case_id, CASE_TOKEN)
            mine = [a for a in (case or {}).get("attempts", []) if a["attempt_number"] == number]
            return mine[0] if mine else None

        attempt: dict[str, Any] = await eventually(planned, timeout=60)
        due = datetime.fromisoformat(attempt["planned_at"])
        if attempt["state"] == "planned" and due > self.world.clock.now():
            self.world.clock.advance(due - self.world.clock.now() + timedelta(minutes=1))

        async def out() -> dict[str, Any] | None:
            found = await planned()
            return found if found is not None and found["state"] == "fired" else None

        attempt = await eventually(out, timeout=60)
        return attempt


@pytest.fixture(scope="module")
async def chain() -> AsyncIterator[Chain]:
    async with chatting_world({("care_follow_up", "lt")}, templates={}) as chats:
        world = chats.world
        topics = TopicNames(prefix=world.app.topics.prefix)
        async with scheduler_beside(
            topics, world.clock, api_token=CASE_TOKEN, policy=chat_policy()
        ) as scheduler:
            yield Chain(world, scheduler, chats.whatsapp, chats.telegram, chats.viber)


async def test_a_preferred_whatsapp_opens_the_cadence_with_a_template_and_its_receipts_count(
    chain: Chain,
) -> None:
    world, wa = chain.world, chain.whatsapp
    await world.contact(
        "p-c-wa", phone="+37060000801", language="lt", consent=ChannelConsent(whatsapp=True)
    )
    await chain.prefer("p-c-wa", "whatsapp")
    trigger = no_show_trigger("p-c-wa", "appt-c-wa", missed=world.clock.now() - timedelta(hours=1))
    await world.publisher.publish(world.topics.triggers, trigger)
    case_id = case_id_for(trigger.event_id)
    await chain.fired(case_id, 1)

    # The scheduler's first step, on the patient's messenger, reaches the platform: the
    # patient has not written in 24 hours, so it is the approved template in Lithuanian.
    first = await chain.recorded(case_id, 1, "sent")
    assert first["channel"] == "whatsapp"
    [message] = await eventually(
        lambda: [m for m in wa.messages if m["to"] == "37060000801"] or None, timeout=60
    )
    assert message["type"] == "template"
    assert (message["template"]["name"], message["template"]["language"]) == (
        "care_follow_up",
        {"code": "lt"},
    )
    # The platform's signed receipts move the scheduler's attempt: delivered, then read.
    assert await wa.deliver(message) == "delivered"
    await chain.recorded(case_id, 1, "delivered")
    assert await wa.send_status(message, "read") == 200
    await chain.recorded(case_id, 1, "read")
    case = await case_from_api(chain.scheduler, case_id, CASE_TOKEN)
    assert case["state"] == "contacting"


async def test_a_stop_on_telegram_takes_the_messenger_out_of_the_cadence(chain: Chain) -> None:
    world, tg = chain.world, chain.telegram
    chat_id = 5100000802
    tg.chats.add(chat_id)  # the patient opened the clinic's bot
    await world.contact(
        "p-c-tg",
        language="en",
        consent=ChannelConsent(telegram=True),
        messengers=MessengerIds(telegram_chat_id=str(chat_id)),
    )
    await chain.prefer("p-c-tg", "telegram")
    trigger = no_show_trigger("p-c-tg", "appt-c-tg", missed=world.clock.now() - timedelta(hours=1))
    await world.publisher.publish(world.topics.triggers, trigger)
    case_id = case_id_for(trigger.event_id)
    await chain.fired(case_id, 1)
    first = await chain.recorded(case_id, 1, "sent")
    assert first["channel"] == "telegram"
    [message] = await eventually(
        lambda: [m for m in tg.sent if m["chat"]["id"] == chat_id] or None, timeout=60
    )
    assert "STOP" in message["text"]  # says how to stop, in the patient's language (en)

    # STOP on Telegram: the notifier confirms it in its webhook answer (a Bot API call) and
    # tells the scheduler; the case goes on, never again on Telegram.
    assert await tg.patient_writes(chat_id, "STOP") == 200
    assert [a["chat_id"] for a in tg.answers] == [chat_id]
    await eventually(
        lambda: next(
            (
                o
                for o in world.outcomes.events
                if o.patient_id == "p-c-tg" and o.outcome == "opt_out" and o.channel == "telegram"
            ),
            None,
        ),
        timeout=60,
    )
    # The patient has no phone and no email: once the other channels prove impossible
    # (the notifier refuses each), the only one left is the one they stopped, and the
    # scheduler closes the case as opted out. Telegram hears nothing more.
    case: dict[str, Any] = {}
    for _ in range(16):
        world.clock.advance(timedelta(hours=6))
        try:
            case = await eventually(lambda: closed(chain, case_id), timeout=8)
            break
        except TimeoutError:
            continue
    assert case.get("resolution") == "opted_out", case
    channels = {a["channel"] for a in case["attempts"]}
    assert "telegram" in channels and len(channels) > 1
    assert len([m for m in tg.sent if m["chat"]["id"] == chat_id]) == 1


async def closed(chain: Chain, case_id: str) -> dict[str, Any] | None:
    case = await case_from_api(chain.scheduler, case_id, CASE_TOKEN)
    return case if case["state"] == "closed" else None


async def test_a_cadence_step_on_viber_goes_out_and_its_seen_receipt_reads(chain: Chain) -> None:
    world, viber = chain.world, chain.viber
    user = "vb-c-0803Kq=="
    viber.subscribed.add(user)
    await world.contact(
        "p-c-vb",
        phone="+37060000803",
        language="lt",
        consent=ChannelConsent(viber=True),
        messengers=MessengerIds(viber_user_id=user),
    )
    cancelled = world.clock.now() - timedelta(hours=3)
    trigger = no_show_trigger(
        "p-c-vb",
        "appt-c-vb",
        missed=cancelled + timedelta(days=1),
        event_id="late_cancellation:appt-c-vb",
        kind="late_cancellation",
        occurred_at=cancelled,
        detected_at=cancelled,
    )
    await world.publisher.publish(world.topics.triggers, trigger)
    case_id = case_id_for(trigger.event_id)

    # The reason's first step names Viber: no preference needed, the consent is enough.
    await chain.fired(case_id, 1)
    first = await chain.recorded(case_id, 1, "sent")
    assert first["channel"] == "viber"
    [message] = await eventually(
        lambda: [m for m in viber.sent if m["receiver"] == user] or None, timeout=60
    )
    assert message["sender"] == {"name": "Sample Clinic"} and message["type"] == "text"
    assert await viber.receipt(message, "delivered") == 200
    await chain.recorded(case_id, 1, "delivered")
    assert await viber.receipt(message, "seen") == 200
    await chain.recorded(case_id, 1, "read")
