from __future__ import annotations

from datetime import datetime, timedelta

import aiohttp
import icalendar
import pytest

from services.notifier.email_channel import message_id
from tests.integration.notifier.world import API_TOKEN, World
from tests.support.dsn import dsn_report
from tests.support.polling import eventually

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
    # In calling order: greeting and who calls, identity check, then the reason.
    assert hook["task"]["script"].startswith("1. Поздравете и кажете кой се обажда")  # noqa: RUF001
    assert "3. Защо се обаждате: „Липсвахте ни на прегледа" in hook["task"]["script"]  # noqa: RUF001
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

    # Withdrawal (its own key, as the scheduler sends it) goes out through the same sinks.
    withdrawal = "c-call:1:withdrawal"
    await world.send(
        world.command(
            "c-call",
            "p-call",
            "call_task",
            purpose="withdrawal",
            idempotency_key=withdrawal,
            event_id=withdrawal,
        )
    )
    await eventually(lambda: world.outcome(f"{withdrawal}:withdrawn"))
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


async def test_the_ticketing_tool_may_answer_the_webhook_with_the_call_result(
    world: World,
) -> None:
    await world.contact("p-reply", phone="+37060000031")
    await world.contact("p-junk", phone="+37060000032")
    asked = world.clock.now() + timedelta(days=1, hours=6)
    world.webhook.replies["c-reply:1"] = {
        "report_id": "desk-77",
        "outcome": "callback_requested",
        "reported_by": "admin-3",
        "callback_at": asked.isoformat(),
        "note": "Prefers the evening",  # free text: never forwarded
    }
    world.webhook.replies["c-junk:1"] = {"report_id": "desk-78", "outcome": "maybe"}
    await world.send(world.command("c-reply", "p-reply", "call_task"))
    await world.send(world.command("c-junk", "p-junk", "call_task"))

    result = await eventually(lambda: world.outcome("desk-77"))
    assert (result.outcome, result.channel, result.case_id, result.attempt_number) == (
        "callback_requested",
        "call_task",
        "c-reply",
        1,
    )
    assert (result.idempotency_key, result.reported_by) == ("c-reply:1", "admin-3")
    assert result.respond_by == asked and result.detail is None
    await eventually(lambda: world.outcome("c-reply:1:task_created"))
    # A reply that is not a valid report is an acknowledgement: the task is delivered, once.
    await eventually(lambda: world.outcome("c-junk:1:task_created"))
    assert world.outcome("desk-78") is None
    assert len(world.webhook.tasks("c-junk:1")) == 1
    assert "Prefers" not in repr(world.outcomes.events)


async def test_the_agreed_outcomes_route_names_the_task_by_its_key(world: World) -> None:
    await world.contact("p-route", phone="+37060000033")
    await world.send(world.command("c-route", "p-route", "call_task"))
    await eventually(lambda: world.outcome("c-route:1:task_created"))
    url = f"{world.base_url}/call-tasks/outcomes"
    report = {"report_id": "report-9", "idempotency_key": "c-route:1", "outcome": "busy"}
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=report) as r:
            assert r.status == 401
        async with http.post(url, json={**report, "idempotency_key": None}, headers=auth) as r:
            assert r.status == 400 and "idempotency_key" in await r.text()
        async with http.post(url, json={**report, "idempotency_key": "nope:1"}, headers=auth) as r:
            assert r.status == 404
        reported_at = "2026-03-02T11:05:00+02:00"
        async with http.post(url, json={**report, "reported_at": reported_at}, headers=auth) as r:
            assert r.status == 202
    result = await eventually(lambda: world.outcome("report-9"))
    assert (result.outcome, result.case_id, result.attempt_number) == ("busy", "c-route", 1)
    assert result.occurred_at == datetime.fromisoformat(reported_at)


async def test_a_bounce_report_becomes_a_bounced_outcome_of_the_email(world: World) -> None:
    await world.contact("p-bounce", email="gone@example.org")
    await world.send(world.command("c-bounce", "p-bounce", "email"))
    await eventually(lambda: world.outcome("c-bounce:1:sent"))
    [sent] = world.inbox.for_key("c-bounce:1")
    url = f"{world.base_url}/email/bounces"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    report = dsn_report(sent["Message-ID"])
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=report, headers={"Content-Type": "message/rfc822"}) as r:
            assert r.status == 401
        delayed = dsn_report(sent["Message-ID"], action="delayed", status="4.4.7")
        headers = {**auth, "Content-Type": "message/rfc822"}
        async with http.post(url, data=delayed, headers=headers) as r:
            assert r.status == 200 and (await r.json())["result"] == "ignored"
        unknown = {"message_id": "<followup.nope@clinic.example>", "status": "5.1.1"}
        async with http.post(url, json=unknown, headers=auth) as r:
            assert r.status == 404
        async with http.post(url, data=b"not mail", headers=headers) as r:
            assert r.status == 400 and "multipart/report" in await r.text()
        async with http.post(url, data=report, headers=headers) as r:
            assert r.status == 202
            assert (await r.json())["event_id"] == "c-bounce:1:bounced"
        # As a mail service forwards it: the MIME headers travel as HTTP headers.
        head, body = report.split(b"\r\n\r\n", 1)
        content_type = next(h for h in head.split(b"\r\n") if h.startswith(b"Content-Type:"))
        forwarded = {**auth, "Content-Type": content_type.split(b": ", 1)[1].decode()}
        async with http.post(url, data=body, headers=forwarded) as r:
            assert r.status == 202
    bounced = await eventually(lambda: world.outcome("c-bounce:1:bounced"))
    assert (bounced.outcome, bounced.channel, bounced.detail) == ("bounced", "email", "dsn_5.1.1")
    assert (bounced.case_id, bounced.attempt_number, bounced.patient_id) == (
        "c-bounce",
        1,
        "p-bounce",
    )
