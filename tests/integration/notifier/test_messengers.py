"""The patient's chat messengers end to end: the notifier on its real port, Kafka and
PostgreSQL, and stand-ins of WhatsApp's Cloud API, Telegram's Bot API and Viber's REST bot
API speaking their documented formats (standins/). Each: send, inbound reply, STOP,
receipt, signature refusal; WhatsApp also its 24-hour window and approved templates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from schemas.events import ChannelConsent, MessengerIds, StageEducation
from tests.integration.notifier.conftest import VERIFY_TOKEN, Chats, chatting_world
from tests.integration.notifier.world import World
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def chats() -> AsyncIterator[Chats]:
    approved = {("missed_visit", "lt"), ("care_follow_up", "en")}
    async with chatting_world(approved) as running:
        yield running


# --- WhatsApp ------------------------------------------------------------------------


async def test_whatsapp_writes_an_approved_template_outside_the_window_and_text_inside(
    chats: Chats,
) -> None:
    world, wa = chats.world, chats.whatsapp
    consent = ChannelConsent(whatsapp=True)
    await world.contact("p-wa1", phone="+37060000101", language="lt", consent=consent)
    await world.send(world.command("c-wa1", "p-wa1", "whatsapp"))
    sent = await eventually(lambda: world.outcome("c-wa1:1:sent"))
    assert sent.channel == "whatsapp"
    [first] = [m for m in wa.messages if m["to"] == "37060000101"]
    # The patient has not written in 24 hours: only the approved template, in their
    # language, whose parameters name the clinic and its phone, nobody and no visit.
    assert first["type"] == "template"
    assert first["template"]["name"] == "missed_visit"
    assert first["template"]["language"] == {"code": "lt"}
    parameters = first["template"]["components"][0]["parameters"]
    assert [p["text"] for p in parameters] == ["Sample Clinic", "+37052000000"]

    # Receipts: delivered, then read, each the command's outcome.
    assert await wa.deliver(first) == "delivered"
    delivered = await eventually(lambda: world.outcome("c-wa1:1:delivered"))
    assert delivered.case_id == "c-wa1" and delivered.patient_id == "p-wa1"
    assert await wa.send_status(first, "read") == 200
    await eventually(lambda: world.outcome("c-wa1:1:read"))

    # The patient answers: a reply, and their window is open for 24 hours.
    assert await wa.patient_writes("37060000101", "Ačiū, paskambinsiu") == 200
    reply = await eventually(lambda: chats.of("p-wa1", "reply") or None)
    assert reply[0].channel == "whatsapp" and reply[0].case_id is None
    world.clock.advance(timedelta(hours=2))
    await world.send(world.command("c-wa2", "p-wa1", "whatsapp"))
    await eventually(lambda: world.outcome("c-wa2:1:sent"))
    second = [m for m in wa.messages if m["to"] == "37060000101"][-1]
    assert second["type"] == "text"
    assert second["text"]["body"].startswith("Pasigedome Jūsų vizito")  # care first, lt
    assert await wa.deliver(second) == "delivered"  # inside the window the platform takes it


async def test_whatsapp_free_text_outside_the_window_fails_as_the_platform_says(
    chats: Chats,
) -> None:
    world, wa = chats.world, chats.whatsapp
    consent = ChannelConsent(whatsapp=True)
    await world.contact("p-wa2", phone="+37060000102", consent=consent)
    await world.send(world.command("c-wa3", "p-wa2", "whatsapp", reason="late_cancellation"))
    await eventually(lambda: world.outcome("c-wa3:1:sent"))
    [message] = [m for m in wa.messages if m["to"] == "37060000102"]
    # No template for this reason: the default one, approved in English.
    assert message["template"]["name"] == "care_follow_up"
    # Were it a free-form text, the platform would fail it with 131047: the outcome says so.
    assert await wa.send_status(message, "failed") == 200
    failed = await eventually(lambda: world.outcome("c-wa3:1:failed"))
    assert failed.detail == "outside_service_window"


async def test_whatsapp_stop_verification_and_signature_refusal(chats: Chats) -> None:
    world, wa = chats.world, chats.whatsapp
    consent = ChannelConsent(whatsapp=True)
    await world.contact("p-wa3", phone="+37060000103", language="ru", consent=consent)

    # Meta's subscription check: the challenge echoed for our verify token only.
    assert await wa.verify_webhook(VERIFY_TOKEN, "1158201444") == (200, "1158201444")
    assert (await wa.verify_webhook("guess", "1158201444"))[0] == 403

    # A webhook not signed with the app secret is refused and nothing is recorded.
    assert await wa.patient_writes("37060000103", "СТОП", valid_signature=False) == 403
    async with aiohttp.ClientSession() as http:
        unsigned = await http.post(f"{world.base_url}/whatsapp/webhook", data=b"{}")
        assert unsigned.status == 403
    assert chats.of("p-wa3", "opt_out") == []

    assert await wa.patient_writes("37060000103", "СТОП") == 200
    opt_out = await eventually(lambda: chats.of("p-wa3", "opt_out") or None)
    assert opt_out[0].channel == "whatsapp"
    # Confirmed on WhatsApp (inside the window the patient just opened), in Russian.
    answer = await eventually(
        lambda: next((m for m in wa.messages if m["to"] == "37060000103"), None)
    )
    assert answer["type"] == "text" and answer["text"]["body"].startswith("Здесь")
    await world.send(world.command("c-wa4", "p-wa3", "whatsapp"))
    refused = await eventually(lambda: world.outcome("c-wa4:1:channel_impossible"))
    assert refused.detail == "opted_out"
    assert [m for m in wa.messages if m["to"] == "37060000103"] == [answer]
    # SMS is another channel: the WhatsApp STOP does not stop it.
    await world.send(world.command("c-wa5", "p-wa3", "sms"))
    await eventually(lambda: world.outcome("c-wa5:1:sent"))


async def test_whatsapp_needs_the_patients_consent(chats: Chats) -> None:
    world = chats.world
    await world.contact("p-wa4", phone="+37060000104")  # consent to SMS, email, calls only
    await world.send(world.command("c-wa6", "p-wa4", "whatsapp"))
    refused = await eventually(lambda: world.outcome("c-wa6:1:channel_impossible"))
    assert refused.detail == "no_consent"
    assert not [m for m in chats.whatsapp.messages if m["to"] == "37060000104"]


# --- Telegram ------------------------------------------------------------------------


async def test_telegram_send_reply_stop_and_secret_token(chats: Chats) -> None:
    world, tg = chats.world, chats.telegram
    tg.chats.add(555001)
    await world.contact(
        "p-tg1",
        language="bg",
        consent=ChannelConsent(telegram=True),
        messengers=MessengerIds(telegram_chat_id="555001"),
    )
    await world.send(world.command("c-tg1", "p-tg1", "telegram"))
    await eventually(lambda: world.outcome("c-tg1:1:sent"))
    [message] = [m for m in tg.sent if m["chat"]["id"] == 555001]
    assert "Sample Clinic" in message["text"] and "СТОП" in message["text"]
    # The Bot API's answer is Telegram's only receipt for bots: its message id is kept.
    stored = await world.app.pool.fetchval(
        "SELECT provider_id FROM deliveries WHERE idempotency_key = 'c-tg1:1'"
    )
    assert stored == f"555001:{message['message_id']}"

    # An update without our secret token is refused (401) and nothing is recorded.
    assert await tg.patient_writes(555001, "СТОП", secret="guess") == 401
    assert chats.of("p-tg1", "opt_out") == []

    assert await tg.patient_writes(555001, "Благодаря, ще дойда") == 200
    await eventually(lambda: chats.of("p-tg1", "reply") or None)
    assert await tg.patient_writes(555001, "стоп") == 200
    opt_out = await eventually(lambda: chats.of("p-tg1", "opt_out") or None)
    assert opt_out[0].channel == "telegram"
    # Confirmed in the webhook's answer (a sendMessage Telegram performs), in Bulgarian.
    [answer] = [a for a in tg.answers if a["chat_id"] == 555001]
    assert answer["text"].startswith("Няма да получавате повече съобщения")
    await world.send(world.command("c-tg2", "p-tg1", "telegram"))
    refused = await eventually(lambda: world.outcome("c-tg2:1:channel_impossible"))
    assert refused.detail == "opted_out"


async def test_telegram_blocked_bot_is_the_patients_stop(chats: Chats) -> None:
    world, tg = chats.world, chats.telegram
    tg.chats.update({555002, 555003})
    tg.blocked.add(555002)
    for patient, chat in (("p-tg2", "555002"), ("p-tg3", "555003")):
        await world.contact(
            patient,
            consent=ChannelConsent(telegram=True),
            messengers=MessengerIds(telegram_chat_id=chat),
        )
    # Sending to a patient who blocked the bot: 403 from Telegram, their opt-out.
    await world.send(world.command("c-tg3", "p-tg2", "telegram"))
    failed = await eventually(lambda: world.outcome("c-tg3:1:failed"))
    assert failed.detail == "opted_out"
    await eventually(lambda: chats.of("p-tg2", "opt_out") or None)
    # Blocking announced by Telegram (my_chat_member kicked): the same.
    assert await tg.patient_blocks(555003) == 200
    await eventually(lambda: chats.of("p-tg3", "opt_out") or None)
    # A patient without a Telegram id is never tried there.
    await world.contact("p-tg4", consent=ChannelConsent(telegram=True))
    await world.send(world.command("c-tg4", "p-tg4", "telegram"))
    refused = await eventually(lambda: world.outcome("c-tg4:1:channel_impossible"))
    assert refused.detail == "no_chat_id"


# --- Viber ---------------------------------------------------------------------------


async def test_viber_send_receipts_reply_stop_and_signature(chats: Chats) -> None:
    world, vb = chats.world, chats.viber
    user = "01234567890A="
    vb.subscribed.add(user)
    await world.contact(
        "p-vb1",
        language="lt",
        consent=ChannelConsent(viber=True),
        messengers=MessengerIds(viber_user_id=user),
    )
    await world.send(world.command("c-vb1", "p-vb1", "viber"))
    await eventually(lambda: world.outcome("c-vb1:1:sent"))
    [message] = [m for m in vb.sent if m["receiver"] == user]
    assert message["sender"] == {"name": "Sample Clinic"} and message["type"] == "text"
    assert message["text"].startswith("Pasigedome Jūsų vizito")

    # A callback not signed with the auth token is refused and changes nothing.
    assert await vb.receipt(message, "delivered", valid_signature=False) == 403
    assert world.outcome("c-vb1:1:delivered") is None
    assert await vb.receipt(message, "delivered") == 200
    await eventually(lambda: world.outcome("c-vb1:1:delivered"))
    assert await vb.receipt(message, "seen") == 200
    await eventually(lambda: world.outcome("c-vb1:1:read"))

    assert await vb.patient_writes(user, "Gerai, ačiū") == 200
    await eventually(lambda: chats.of("p-vb1", "reply") or None)
    assert await vb.patient_writes(user, "STOP", valid_signature=False) == 403
    assert chats.of("p-vb1", "opt_out") == []
    assert await vb.patient_writes(user, "Prašau, atsisakyti!") == 200
    await eventually(lambda: chats.of("p-vb1", "opt_out") or None)
    answer = await eventually(lambda: [m for m in vb.sent if m["receiver"] == user][1:] or None)
    assert "START" in answer[0]["text"] and answer[0]["text"].startswith("Čia")
    await world.send(world.command("c-vb2", "p-vb1", "viber"))
    refused = await eventually(lambda: world.outcome("c-vb2:1:channel_impossible"))
    assert refused.detail == "opted_out"


async def test_viber_unsubscribed_is_the_patients_stop(chats: Chats) -> None:
    world, vb = chats.world, chats.viber
    for patient, user in (("p-vb2", "user-vb2="), ("p-vb3", "user-vb3=")):
        vb.subscribed.add(user)
        await world.contact(
            patient,
            consent=ChannelConsent(viber=True),
            messengers=MessengerIds(viber_user_id=user),
        )
    assert await vb.patient_unsubscribes("user-vb2=") == 200
    await eventually(lambda: chats.of("p-vb2", "opt_out") or None)
    # Unsubscribed at Viber but not yet known here: the API's status 6 says it.
    vb.subscribed.discard("user-vb3=")
    vb.unsubscribed.add("user-vb3=")
    await world.send(world.command("c-vb3", "p-vb3", "viber"))
    failed = await eventually(lambda: world.outcome("c-vb3:1:failed"))
    assert failed.detail == "opted_out"
    await eventually(lambda: chats.of("p-vb3", "opt_out") or None)


# --- feedback after a recovered visit (the question, the answer) ----------------------


def feedback_command(world: World, case_id: str, patient_id: str, channel: str) -> Any:
    return world.command(
        case_id,
        patient_id,
        channel,
        event_id=f"{case_id}:feedback",
        idempotency_key=f"{case_id}:feedback",
        attempt_number=900,
        purpose="feedback",
        template="visit_feedback",
        doctor_notes=None,
    )


async def test_feedback_question_and_answer_on_sms_once(chats: Chats) -> None:
    world = chats.world
    await world.contact("p-fb1", phone="+37060000201", language="lt")
    await world.send(feedback_command(world, "c-fb1", "p-fb1", "sms"))
    await eventually(lambda: world.outcome("c-fb1:feedback:sent"))
    [question] = [m for m in world.primary.messages if m.to == "+37060000201"]
    assert question.body.startswith("Sample Clinic: kaip vertinate savo vizitą?")
    url = f"{world.base_url}/sms/inbound"
    assert await world.primary.send_reply(url, "+37060000201", "4 - gydytoja labai maloni") == 200
    answer = await eventually(lambda: world.outcome("c-fb1:feedback:feedback"))
    assert answer.rating == 4 and answer.note == "gydytoja labai maloni"
    assert answer.case_id == "c-fb1" and answer.attempt_number == 900
    assert chats.of("p-fb1", "reply") == []  # an answer, not a conversation for the desk
    assert world.primary.answers[-1] == (
        "+37060000201",
        "Ačiū už atsakymą. Jis padeda mums geriau Jumis rūpintis.",
    )
    # Once: a second number is a plain reply.
    assert await world.primary.send_reply(url, "+37060000201", "5") == 200
    await eventually(lambda: chats.of("p-fb1", "reply") or None)
    assert len(chats.of("p-fb1", "feedback")) == 1


async def test_feedback_on_telegram_and_a_reply_that_is_no_rating(chats: Chats) -> None:
    world, tg = chats.world, chats.telegram
    tg.chats.add(555010)
    await world.contact(
        "p-fb2",
        consent=ChannelConsent(telegram=True),
        messengers=MessengerIds(telegram_chat_id="555010"),
    )
    await world.send(feedback_command(world, "c-fb2", "p-fb2", "telegram"))
    await eventually(lambda: world.outcome("c-fb2:feedback:sent"))
    [question] = [m for m in tg.sent if m["chat"]["id"] == 555010]
    assert question["text"].startswith("Sample Clinic: how was your visit?")
    assert await tg.patient_writes(555010, "can I come at 3:30?") == 200
    await eventually(lambda: chats.of("p-fb2", "reply") or None)
    assert chats.of("p-fb2", "feedback") == []
    assert await tg.patient_writes(555010, "5") == 200
    answer = await eventually(lambda: world.outcome("c-fb2:feedback:feedback"))
    assert answer.rating == 5 and answer.note is None and answer.channel == "telegram"


async def test_a_snapshot_that_says_nothing_of_messengers_keeps_the_enrolment(
    chats: Chats,
) -> None:
    world, tg = chats.world, chats.telegram
    tg.chats.add(555020)
    await world.contact(
        "p-tg5",
        consent=ChannelConsent(telegram=True),
        messengers=MessengerIds(telegram_chat_id="555020"),
    )
    # The hospital's next full snapshot (FHIR, HL7) knows nothing of messengers.
    world.clock.advance(timedelta(minutes=1))
    await world.contact("p-tg5", event_id="contact:p-tg5:2", phone="+37060000205")
    await world.send(world.command("c-tg5", "p-tg5", "telegram"))
    await eventually(lambda: world.outcome("c-tg5:1:sent"))
    assert [m for m in tg.sent if m["chat"]["id"] == 555020]
    # Saying it does change it: consent withdrawn, the next message is refused.
    world.clock.advance(timedelta(minutes=1))
    await world.contact("p-tg5", event_id="contact:p-tg5:3", consent=ChannelConsent(telegram=False))
    await world.send(world.command("c-tg6", "p-tg5", "telegram"))
    refused = await eventually(lambda: world.outcome("c-tg6:1:channel_impossible"))
    assert refused.detail == "no_consent"


async def test_a_chat_message_explains_the_stage_in_the_patients_language(
    chats: Chats,
) -> None:
    world, vb = chats.world, chats.viber
    vb.subscribed.add("user-vb-edu=")
    await world.contact(
        "p-vb-edu",
        language="lt",
        consent=ChannelConsent(viber=True),
        messengers=MessengerIds(viber_user_id="user-vb-edu="),
    )
    education = [
        StageEducation(language="en", text="The implant must heal in time."),
        StageEducation(
            language="lt", text="Implantas turi sugyti laiku.", url="https://x.example/lt"
        ),
    ]
    await world.send(world.command("c-vb-edu", "p-vb-edu", "viber", education=education))
    await eventually(lambda: world.outcome("c-vb-edu:1:sent"))
    [message] = [m for m in vb.sent if m["receiver"] == "user-vb-edu="]
    assert message["text"].endswith("\n\nImplantas turi sugyti laiku. https://x.example/lt")
    assert "The implant" not in message["text"]
