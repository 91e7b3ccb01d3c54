from __future__ import annotations

import aiohttp
import pytest
from prometheus_client import REGISTRY

from tests.integration.notifier.world import World
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_sms_goes_out_in_the_providers_format_and_signed_callbacks_count(
    world: World,
) -> None:
    await world.contact("p-sms1", phone="8 600 00011", language="lt")
    ucs2_before = metric("followup_notifier_sms_segments_total", encoding="ucs2")
    await world.send(world.command("c-sms1", "p-sms1", "sms"))

    sent = await eventually(lambda: world.outcome("c-sms1:1:sent"))
    assert sent.case_id == "c-sms1" and sent.channel == "sms" and sent.idempotency_key == "c-sms1:1"
    [message] = [m for m in world.primary.messages if m.to == "+37060000011"]
    assert message.from_ == "+15005550006"
    assert message.body.startswith("Pasigedome Jūsų vizito")  # care first, patient's language
    assert "Sample Clinic" in message.body and "STOP" in message.body
    assert message.status_callback == f"{world.base_url}/sms/status?key=c-sms1%3A1"
    assert metric("followup_notifier_sms_segments_total", encoding="ucs2") >= ucs2_before + 2

    # A callback with a bad signature is refused and changes nothing.
    assert await world.primary.send_status(message, "delivered", valid_signature=False) == 403
    assert world.outcome("c-sms1:1:delivered") is None
    assert await world.primary.send_status(message, "delivered") == 204
    delivered = await eventually(lambda: world.outcome("c-sms1:1:delivered"))
    assert delivered.outcome == "delivered" and delivered.patient_id == "p-sms1"


async def test_stop_reply_opts_out_at_once(world: World) -> None:
    await world.contact("p-stop", phone="+37060000012")
    url = f"{world.base_url}/sms/inbound"
    before = metric("followup_notifier_opt_outs_total", channel="sms")
    # Unsigned: refused, and the patient is not opted out.
    assert await world.primary.send_reply(url, "+37060000012", "STOP", valid_signature=False) == (
        403
    )
    assert await world.primary.send_reply(url, "+37060000012", "HELP") == 200
    assert await world.primary.send_reply(url, "+37060000012", "СТОП") == 200
    opt_out = await eventually(
        lambda: next((o for o in world.outcomes.events if o.outcome == "opt_out"), None)
    )
    assert opt_out.patient_id == "p-stop" and opt_out.case_id is None
    assert opt_out.event_id.startswith("SM")  # the provider's reply id
    assert any(o.outcome == "help" and o.patient_id == "p-stop" for o in world.outcomes.events)
    assert metric("followup_notifier_opt_outs_total", channel="sms") == before + 1

    sent_before = len(world.primary.messages) + len(world.secondary.messages)
    await world.send(world.command("c-stop", "p-stop", "sms"))
    refused = await eventually(lambda: world.outcome("c-stop:1:channel_impossible"))
    assert refused.detail == "opted_out"
    assert len(world.primary.messages) + len(world.secondary.messages) == sent_before

    # START opts back in.
    assert await world.primary.send_reply(url, "+37060000012", "start") == 200
    await eventually(
        lambda: next((o for o in world.outcomes.events if o.outcome == "opt_in"), None)
    )
    await world.send(world.command("c-stop2", "p-stop", "sms"))
    await eventually(lambda: world.outcome("c-stop2:1:sent"))


async def test_503_is_retried_and_400_becomes_failed(world: World) -> None:
    await world.contact("p-retry", phone="+37060000013")
    retries = metric("followup_notifier_retries_total", channel="sms")
    world.primary.fail_next(503)
    world.secondary.fail_next(503)  # both down: nothing to fail over to
    requests = world.primary.requests
    await world.send(world.command("c-retry", "p-retry", "sms"))
    await eventually(lambda: world.primary.requests > requests)
    await eventually(
        lambda: metric("followup_notifier_retries_total", channel="sms") > retries or None
    )
    assert world.outcome("c-retry:1:sent") is None
    await world.advance(5)  # past the jittered backoff
    sent = await eventually(lambda: world.outcome("c-retry:1:sent"))
    assert sent.outcome == "sent"
    assert len([m for m in world.primary.messages if m.to == "+37060000013"]) == 1

    # Our sender: the text reached nobody, so the attempt is refused (the step goes at once
    # on another channel), the code kept for the operators.
    world.primary.fail_next(400, code=21606)
    await world.send(world.command("c-400", "p-retry", "sms"))
    refused = await eventually(lambda: world.outcome("c-400:1:channel_impossible"))
    assert refused.detail == "provider_21606"


async def test_the_providers_unsubscribed_error_is_the_patients_opt_out(world: World) -> None:
    # Twilio 21610: the patient sent STOP to the provider, not to us. It counts as theirs.
    await world.contact("p-21610", phone="+37060000017")
    world.primary.fail_next(400, code=21610)
    await world.send(world.command("c-21610", "p-21610", "sms"))
    failed = await eventually(lambda: world.outcome("c-21610:1:failed"))
    assert failed.detail == "opted_out"
    opt_out = await eventually(lambda: world.outcome("c-21610:1:opt_out"))
    assert (opt_out.patient_id, opt_out.channel) == ("p-21610", "sms")
    await world.send(world.command("c-21610b", "p-21610", "sms"))
    refused = await eventually(lambda: world.outcome("c-21610b:1:channel_impossible"))
    assert refused.detail == "opted_out"
    assert "+37060000017" not in [m.to for m in world.primary.messages]


async def test_failover_to_the_second_provider(world: World) -> None:
    await world.contact("p-failover", phone="+37060000014")
    world.primary.fail_next(503)
    await world.send(world.command("c-failover", "p-failover", "sms"))
    await eventually(lambda: world.outcome("c-failover:1:sent"))
    assert [m.to for m in world.secondary.messages].count("+37060000014") == 1
    assert [m.to for m in world.primary.messages].count("+37060000014") == 0
    assert (
        metric(
            "followup_notifier_sends_total",
            channel="sms",
            provider="secondary",
            result="sent",
            site="none",  # one clinic, no sites file
        )
        >= 1
    )


async def test_invalid_phone_and_deceased_patient_are_never_sent(world: World) -> None:
    from schemas.events import PatientStatusEvent

    await world.contact("p-badphone", phone="12-34")
    await world.send(world.command("c-badphone", "p-badphone", "sms"))
    impossible = await eventually(lambda: world.outcome("c-badphone:1:channel_impossible"))
    assert impossible.detail == "invalid_phone"

    await world.contact("p-dead", phone="+37060000015")
    for patient_id in ("p-dead", "p-ghost"):  # p-ghost: a status but no contact
        await world.publisher.publish(
            world.topics.patients,
            PatientStatusEvent(
                event_id=f"status:{patient_id}",
                occurred_at=world.clock.now(),
                source="tracker",
                patient_id=patient_id,
                status="deceased",
                effective_at=world.clock.now(),
            ),
        )

    async def status_stored() -> bool:
        statuses = [await world.app.directory.patient_status(p) for p in ("p-dead", "p-ghost")]
        return statuses == ["deceased", "deceased"]

    while not await status_stored():
        await world.advance(0)
    assert await world.app.directory.recipient("p-ghost") == (None, "deceased")
    dead, status = await world.app.directory.recipient("p-dead")
    assert dead is not None and dead.phone == "+37060000015" and status == "deceased"
    await world.send(world.command("c-dead", "p-dead", "sms"))
    refused = await eventually(lambda: world.outcome("c-dead:1:channel_impossible"))
    assert refused.detail == "not_contactable"
    assert all(m.to != "+37060000015" for m in world.primary.messages + world.secondary.messages)


async def test_a_bad_command_is_dead_lettered_and_the_consumer_goes_on(world: World) -> None:
    await world.publisher.publish_raw(world.topics.notifications, b"{not json", b"p-x")
    await world.contact("p-after", phone="+37060000016")
    await world.send(world.command("c-after", "p-after", "sms"))
    await eventually(lambda: world.outcome("c-after:1:sent"))
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{world.base_url}/metrics") as response,
    ):
        text = await response.text()
    assert 'followup_dead_letters_total{error_type="invalid_json",service="notifier"}' in text
