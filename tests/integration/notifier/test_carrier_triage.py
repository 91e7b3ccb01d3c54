"""Carrier-error triage through the Twilio-compatible stand-in and the real notifier: what
each class does to this message and to the patient's later messages."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tests.integration.notifier.world import World
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


def triaged(error_class: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "followup_notifier_carrier_errors_total", {"error_class": error_class}
        )
        or 0.0
    )


async def test_a_landline_in_a_status_callback_stops_sms_to_it_in_every_later_case(
    world: World,
) -> None:
    await world.contact("p-land", phone="+37052000001")  # a Vilnius landline
    before = triaged("landline")
    await world.send(world.command("c-land", "p-land", "sms"))
    await eventually(lambda: world.outcome("c-land:1:sent"))
    [message] = [m for m in world.primary.messages if m.to == "+37052000001"]
    assert await world.primary.send_status(message, "undelivered", error_code="30006") == 204
    refused = await eventually(lambda: world.outcome("c-land:1:channel_impossible"))
    assert refused.detail == "landline" and triaged("landline") == before + 1
    contact = await world.app.directory.contact("p-land")
    assert contact is not None and contact.phone_mark == "landline"

    # Another case of the same patient: no SMS reaches the provider, refused at once.
    await world.send(world.command("c-land2", "p-land", "sms"))
    again = await eventually(lambda: world.outcome("c-land2:1:channel_impossible"))
    assert again.detail == "landline"
    assert [m.to for m in world.primary.messages].count("+37052000001") == 1
    # A call task still goes, with the number (a landline takes calls): to confirm a mobile.
    await world.send(world.command("c-land3", "p-land", "call_task"))
    [task] = await eventually(lambda: world.calltask_events("c-land3:1") or None)
    assert task.phone == "+37052000001"

    # The hospital sends a new number: the mark is gone, SMS goes again.
    await world.contact("p-land", event_id="contact:p-land:2", phone="+37060000031")
    await world.send(world.command("c-land4", "p-land", "sms"))
    await eventually(lambda: world.outcome("c-land4:1:sent"))
    contact = await world.app.directory.contact("p-land")
    assert contact is not None and contact.phone_mark is None


async def test_an_invalid_number_at_send_is_marked_wrong_for_everyone_who_has_it(
    world: World,
) -> None:
    await world.contact("p-wrong1", phone="+37060000032")
    await world.contact("p-wrong2", phone="+37060000032")  # the same number on another record
    world.primary.fail_next(400, code=21211)
    await world.send(world.command("c-wrong", "p-wrong1", "sms"))
    refused = await eventually(lambda: world.outcome("c-wrong:1:channel_impossible"))
    assert refused.detail == "number_wrong"
    await world.send(world.command("c-wrong2", "p-wrong2", "sms"))
    other = await eventually(lambda: world.outcome("c-wrong2:1:channel_impossible"))
    assert other.detail == "number_wrong"
    # The call task goes to the front desk without the wrong number: find the right one.
    await world.send(world.command("c-wrong3", "p-wrong1", "call_task"))
    [task] = await eventually(lambda: world.calltask_events("c-wrong3:1") or None)
    assert task.phone is None
    # A partial update that does not touch the phone keeps the mark.
    await world.contact(
        "p-wrong1", event_id="contact:p-wrong1:2", language="lt", fields_sent=["language"]
    )
    contact = await world.app.directory.contact("p-wrong1")
    assert contact is not None and contact.phone_mark == "number_wrong"


async def test_a_phone_switched_off_is_failed_for_this_attempt_only(world: World) -> None:
    await world.contact("p-off", phone="+37060000033")
    await world.send(world.command("c-off", "p-off", "sms"))
    await eventually(lambda: world.outcome("c-off:1:sent"))
    [message] = [m for m in world.primary.messages if m.to == "+37060000033"]
    assert await world.primary.send_status(message, "undelivered", error_code="30003") == 204
    failed = await eventually(lambda: world.outcome("c-off:1:failed"))
    assert failed.detail == "unreachable"  # the scheduler's cadence tries again later
    await world.send(world.command("c-off2", "p-off", "sms"))
    await eventually(lambda: world.outcome("c-off2:1:sent"))
    contact = await world.app.directory.contact("p-off")
    assert contact is not None and contact.phone_mark is None


async def test_a_carrier_opt_out_in_a_status_callback_is_the_patients_opt_out(
    world: World,
) -> None:
    await world.contact("p-carrier-stop", phone="+37060000034")
    await world.send(world.command("c-cstop", "p-carrier-stop", "sms"))
    await eventually(lambda: world.outcome("c-cstop:1:sent"))
    [message] = [m for m in world.primary.messages if m.to == "+37060000034"]
    assert await world.primary.send_status(message, "failed", error_code="21610") == 204
    opt_out = await eventually(lambda: world.outcome("c-cstop:1:opt_out"))
    assert (opt_out.patient_id, opt_out.channel) == ("p-carrier-stop", "sms")
    failed = await eventually(lambda: world.outcome("c-cstop:1:failed"))
    assert failed.detail == "opted_out"
    await world.send(world.command("c-cstop2", "p-carrier-stop", "sms"))
    refused = await eventually(lambda: world.outcome("c-cstop2:1:channel_impossible"))
    assert refused.detail == "opted_out"


@pytest.mark.parametrize(
    ("language", "word", "answer"),
    [
        ("en", "STOP", "You will get no more texts from us."),
        ("lt", "atsisakyti", "SMS iš mūsų nebegausite."),
        ("ru", "СТОП", "СМС от нас больше не будет."),  # noqa: RUF001  # noqa: RUF001, RUF002
        ("bg", "стоп", "Няма да получавате повече СМС от нас."),  # noqa: RUF001  # noqa: RUF001, RUF002
    ],
)
async def test_stop_is_confirmed_in_the_patients_language(
    world: World, language: str, word: str, answer: str
) -> None:
    phone = {"en": "+37060000041", "lt": "+37060000042", "ru": "+37060000043"}.get(
        language, "+37060000044"
    )
    await world.contact(f"p-confirm-{language}", phone=phone, language=language)
    url = f"{world.base_url}/sms/inbound"
    assert await world.primary.send_reply(url, phone, word) == 200
    [(to, text)] = [a for a in world.primary.answers if a[0] == phone]
    assert to == phone and text.startswith(answer)
    # Whatever word was used, the patient's own language answers: STOP to a Russian reader.
    assert await world.primary.send_reply(url, phone, "START") == 200
    started = [a for a in world.primary.answers if a[0] == phone][-1][1]
    assert "START" not in started or language == "en"
