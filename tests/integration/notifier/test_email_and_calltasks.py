from __future__ import annotations

import aiohttp
import icalendar
import pytest

from services.notifier.email_channel import message_id
from tests.integration.notifier.world import API_TOKEN, World, eventually

pytestmark = pytest.mark.integration


async def test_email_reaches_a_real_smtp_server_with_its_headers(world: World) -> None:
    await world.contact("p-mail", email="Ona@Example.org", language="ru")
    await world.send(world.command("c-mail", "p-mail", "email"))
    await eventually(lambda: world.outcome("c-mail:1:sent"))
    [msg] = world.inbox.for_key("c-mail:1")
    assert msg["To"] == "ona@example.org"
    assert msg["From"] == "followup@clinic.example"
    assert msg["Message-ID"] == message_id("c-mail:1", "followup@clinic.example")
    assert msg["Subject"] == "Ваше лечение: Implant"
    unsubscribe = msg["List-Unsubscribe"]
    assert f"{world.base_url}/unsubscribe?patient=p-mail&token=" in unsubscribe
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Мы ждали вас на приёме" in text and "Sample Clinic" in text
    assert html.startswith("<p>Мы ждали вас")

    # The link in the header unsubscribes this patient's email, and a later email is refused.
    link = unsubscribe.split("<", 1)[1].split(">", 1)[0]
    async with aiohttp.ClientSession() as http:
        async with http.post(link.replace("token=", "token=x")) as bad:
            assert bad.status == 403
        async with http.post(link) as good:
            assert good.status == 200
    await eventually(lambda: world.outcome("unsubscribe:p-mail:email"))
    await world.send(world.command("c-mail2", "p-mail", "email"))
    refused = await eventually(lambda: world.outcome("c-mail2:1:channel_impossible"))
    assert refused.detail == "opted_out"


async def test_call_task_reaches_every_sink_and_results_come_back(world: World) -> None:
    await world.contact("p-call", phone="+359881234567", language="bg", timezone="Europe/Sofia")
    command = world.command("c-call", "p-call", "call_task")
    await world.send(command)
    created = await eventually(lambda: world.outcome("c-call:1:task_created"))
    assert created.respond_by == command.window_end

    # Webhook: signed (the receiver checks), JSON task with its FHIR Task.
    [hook] = world.webhook.tasks("c-call:1")
    assert hook["task"]["patient_name"] == "Ona Petraitė"
    assert hook["task"]["phone"] == "+359881234567"
    assert hook["task"]["doctor_notes"] == "Check healing first."
    assert hook["task"]["script"].startswith("Липсвахте ни на прегледа")
    assert hook["fhir"]["resourceType"] == "Task" and hook["fhir"]["status"] == "requested"
    assert world.webhook.refused == 0

    # Front desk email with a VTODO that parses back.
    [desk] = world.inbox.for_key("calltask:c-call:1:create")
    assert desk["To"] == "desk@clinic.example"
    [attachment] = list(desk.iter_attachments())
    assert attachment.get_content_type() == "text/calendar"
    todo = next(iter(icalendar.Calendar.from_ical(attachment.get_content()).walk("VTODO")))
    assert str(todo["uid"]).startswith("c-call:1@")
    assert todo.decoded("due") == command.window_end
    assert "Stage: Implant" in str(todo["description"])

    # Kafka topic for CRM connectors.
    [event] = await eventually(lambda: world.calltask_events("c-call:1") or None)
    assert event.action == "create" and event.language == "bg"

    # Administrators report the result with the bearer token.
    url = f"{world.base_url}/calltasks/c-call:1/result"
    report = {"report_id": "report-1", "outcome": "no_answer", "reported_by": "admin-3"}
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=report) as r:
            assert r.status == 401
        async with http.post(url, json={**report, "outcome": "maybe"}, headers=auth) as r:
            assert r.status == 400 and "outcome" in await r.text()
        async with http.post(url, data=b"{", headers=auth) as r:
            assert r.status == 400
        async with http.post(
            f"{world.base_url}/calltasks/nope:1/result", json=report, headers=auth
        ) as r:
            assert r.status == 404
        async with http.post(url, json=report, headers=auth) as r:
            assert r.status == 202
    result = await eventually(lambda: world.outcome("report-1"))
    assert result.outcome == "no_answer" and result.case_id == "c-call"
    assert result.reported_by == "admin-3" and result.channel == "call_task"

    # Withdrawal goes out through the same sinks.
    await world.send(world.command("c-call", "p-call", "call_task", purpose="withdrawal"))
    await eventually(lambda: world.outcome("c-call:1:withdrawn"))
    assert [h["task"]["action"] for h in world.webhook.tasks("c-call:1")] == ["create", "withdraw"]
    [cancel] = world.inbox.for_key("calltask:c-call:1:withdraw")
    [attachment] = list(cancel.iter_attachments())
    assert str(icalendar.Calendar.from_ical(attachment.get_content())["method"]) == "CANCEL"


async def test_a_webhook_receiver_that_was_down_gets_the_task_once_back(world: World) -> None:
    await world.contact("p-down", phone="+37060000021")
    await world.webhook.stop()
    try:
        await world.send(world.command("c-down", "p-down", "call_task"))
        await eventually(lambda: world.inbox.for_key("calltask:c-down:1:create") or None)
        await world.advance(5)
        await world.advance(5)
        assert world.outcome("c-down:1:task_created") is None
    finally:
        await world.webhook.start()
    await world.advance(5)
    await eventually(lambda: world.outcome("c-down:1:task_created"))
    assert len(world.webhook.tasks("c-down:1")) == 1
    # The sinks that had it already were not sent it again.
    assert len(world.inbox.for_key("calltask:c-down:1:create")) == 1
    assert len(world.calltask_events("c-down:1")) == 1
