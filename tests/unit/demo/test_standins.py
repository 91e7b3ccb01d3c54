"""The stand-ins on real sockets: Twilio's formats, signed webhooks, a real SMTP server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest
from aiohttp import web

from common.clock import ManualClock
from schemas.events import CallTaskEvent
from schemas.topics import CALLTASKS
from services.notifier.channels import TransientSendError
from services.notifier.sinks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSink,
    standard_headers,
    standard_webhook,
    webhook_signature,
)
from standins.calltasks import CallTaskReceiver, ReceivedTask, verify
from standins.mailbox import Mailbox
from standins.twilio import SmsRecord, TwilioStandIn, twilio_signature
from tests.support.samples import sample_events

SAMPLES = sample_events()

CLOCK = ManualClock(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
SID, TOKEN = "AC" + "1" * 32, "secret-token"


async def _sink() -> tuple[web.AppRunner, str, list[tuple[str, dict[str, str], str]]]:
    """A notifier stand-in that records what Twilio's callbacks and replies carried."""
    got: list[tuple[str, dict[str, str], str]] = []

    async def record(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        # The URL exactly as requested: Twilio signs the string it was given, byte for byte.
        url = f"{request.scheme}://{request.host}{request.raw_path}"
        got.append((url, form, request.headers.get("X-Twilio-Signature", "")))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", got


async def test_twilio_standin_accepts_calls_back_signed_and_relays_replies(tmp_path: Path) -> None:
    runner, sink, got = await _sink()
    handed: list[SmsRecord] = []

    async def phone(record: SmsRecord) -> None:
        handed.append(record)

    standin = TwilioStandIn(
        account_sid=SID,
        auth_token=TOKEN,
        clock=CLOCK,
        capture_dir=tmp_path,
        inbound_urls=[f"{sink}/sms/primary/inbound"],
        on_message=phone,
    )
    await standin.start()
    url = f"{standin.base_url}/2010-04-01/Accounts/{SID}/Messages.json"
    try:
        async with aiohttp.ClientSession() as session:
            form = {
                "To": "+37060012345",
                "From": "+37052000000",
                "Body": "Sveiki, praleidote vizitą.",
                "StatusCallback": f"{sink}/sms/primary/status?key=case-1%3A1",
            }
            async with session.post(url, data=form, auth=aiohttp.BasicAuth(SID, TOKEN)) as resp:
                assert resp.status == 201
                body = await resp.json()
            assert body["sid"].startswith("SM") and body["status"] == "queued"
            async with session.post(url, data=form, auth=aiohttp.BasicAuth(SID, "wrong")) as resp:
                assert resp.status == 401 and (await resp.json())["code"] == 20003
            bad = form | {"To": "not-a-number"}
            async with session.post(url, data=bad, auth=aiohttp.BasicAuth(SID, TOKEN)) as resp:
                assert resp.status == 400 and (await resp.json())["code"] == 21211
        for _ in range(100):
            if handed:
                break
            await asyncio.sleep(0.02)
        assert [r.sid for r in handed] == [body["sid"]]
        statuses = [form["MessageStatus"] for _, form, _ in got]
        assert statuses == ["sent", "delivered"]
        assert got[0][0] == f"{sink}/sms/primary/status?key=case-1%3A1"
        for cb_url, cb_form, signature in got:
            assert signature == twilio_signature(TOKEN, cb_url, cb_form)
        reply = await standin.reply("+37060012345", "+37052000000", "STOP")
        assert reply.status == 204
        inbound_url, inbound, signature = got[-1]
        assert inbound["Body"] == "STOP" and inbound["From"] == "+37060012345"
        assert signature == twilio_signature(TOKEN, inbound_url, inbound)
        lines = (tmp_path / "sms.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["to"] == "+37060012345"
    finally:
        await standin.stop()
        await runner.cleanup()


def test_twilio_signature_matches_twilios_documented_example() -> None:
    # The worked example of twilio.com/docs/usage/security (auth token 12345).
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675310",
        "Digits": "1234",
        "From": "+14158675310",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "GvWf1cFY/Q7PnoempGyD5oXAezc="


def test_call_task_signature_is_standard_webhooks_and_nothing_else() -> None:
    body = b'{"task_id": "case-1:1"}'
    signed = standard_headers(standard_webhook("s3cret"), "case-1:1:create", body)
    assert verify("s3cret", body, signed)
    assert not verify("other", body, signed)
    assert not verify("s3cret", body + b" ", signed)
    assert not verify("s3cret", body, signed | {"webhook-id": "case-1:1:withdraw"})
    old = str(int(signed["webhook-timestamp"]) - 3600)
    assert not verify("s3cret", body, signed | {"webhook-timestamp": old})  # a replay
    assert not verify("s3cret", body, {})
    # The legacy header alone (HMAC over "<timestamp>.<body>") is not enough any more.
    stamp = signed["webhook-timestamp"]
    legacy = {SIGNATURE_HEADER: webhook_signature("s3cret", stamp, body), TIMESTAMP_HEADER: stamp}
    assert not verify("s3cret", body, legacy)
    over_body = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert not verify("s3cret", body, signed | {"webhook-signature": "v1," + over_body})


async def test_call_task_receiver_accepts_what_the_notifiers_webhook_sink_sends() -> None:
    receiver = CallTaskReceiver(secret="s3cret", clock=CLOCK)
    await receiver.start()
    task = SAMPLES[CALLTASKS]
    assert isinstance(task, CallTaskEvent)
    right = WebhookSink(receiver.url, "s3cret", CLOCK)
    wrong = WebhookSink(receiver.url, "not-the-secret", CLOCK)
    try:
        await right.deliver(task)
        with pytest.raises(TransientSendError):
            await wrong.deliver(task)
    finally:
        await right.close()
        await wrong.close()
        await receiver.stop()
    assert [t.task["task_id"] for t in receiver.captured] == [task.task_id]
    assert receiver.refused == 1


def test_received_task_reads_the_notifiers_nested_body() -> None:
    # The notifier posts {"task": <CallTaskEvent>, "fhir": <Task>}: the front desk must see a
    # withdrawal or an escalation as such, not as a new follow-up call.
    body = {"task": {"action": "withdraw", "purpose": "withdrawal", "task_id": "c:1"}, "fhir": {}}
    task = ReceivedTask(payload=body, at=CLOCK.now())
    assert (task.action, task.purpose, task.task["task_id"]) == ("withdraw", "withdrawal", "c:1")
    flat = ReceivedTask(payload={"task_id": "c:2"}, at=CLOCK.now())
    assert (flat.action, flat.purpose) == ("create", "follow_up")


async def test_call_task_receiver_refuses_unsigned_and_records_signed(tmp_path: Path) -> None:
    seen: list[ReceivedTask] = []

    async def desk(task: ReceivedTask) -> None:
        seen.append(task)

    receiver = CallTaskReceiver(
        secret="s3cret", clock=CLOCK, capture_file=tmp_path / "tasks.jsonl", on_task=desk
    )
    await receiver.start()
    body = json.dumps({"action": "create", "task_id": "case-1:1", "patient_id": "p-1"}).encode()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(receiver.url, data=body) as resp:
                assert resp.status == 401
            headers = standard_headers(standard_webhook("s3cret"), "case-1:1:create", body)
            async with session.post(receiver.url, data=body, headers=headers) as resp:
                assert resp.status == 202
        assert receiver.refused == 1
        assert [t.payload["task_id"] for t in seen] == ["case-1:1"]
        assert len((tmp_path / "tasks.jsonl").read_text().splitlines()) == 1
    finally:
        await receiver.stop()


async def test_mailbox_keeps_what_a_real_smtp_client_sends(tmp_path: Path) -> None:
    mailbox = Mailbox(CLOCK, tmp_path / "mail")
    await mailbox.start()
    try:
        message = EmailMessage()
        message["From"] = "clinic@example.org"
        message["To"] = "patient1@example.org"
        message["Subject"] = "Пропуснат час"
        message.set_content("Здравейте, пропуснахте часа си.")
        await aiosmtplib.send(message, hostname="127.0.0.1", port=mailbox.port)
        assert len(mailbox.records) == 1
        got = mailbox.records[0]
        assert got.rcpt_to == ("patient1@example.org",)
        assert got.subject == "Пропуснат час"
        assert "пропуснахте" in got.text
        assert got.path is not None and got.path.exists()
    finally:
        await mailbox.stop()


async def test_twilio_standin_counts_segments_as_the_notifier_does(tmp_path: Path) -> None:
    # "é" is in GSM-7's basic set: 150 of them are one segment, not three UCS-2 ones.
    texts = {"é" * 150: 1, "a" * 161: 2, "ą" * 70: 1, "ą" * 71: 2, "€" * 80: 1, "€" * 81: 2}
    standin = TwilioStandIn(account_sid=SID, auth_token=TOKEN, clock=CLOCK, capture_dir=tmp_path)
    await standin.start()
    url = f"{standin.base_url}/2010-04-01/Accounts/{SID}/Messages.json"
    answered = []
    try:
        async with aiohttp.ClientSession(auth=aiohttp.BasicAuth(SID, TOKEN)) as session:
            for body in texts:
                form = {"To": "+37060012345", "From": "+37052000000", "Body": body}
                async with session.post(url, data=form) as resp:
                    answered.append(int((await resp.json())["num_segments"]))
    finally:
        await standin.stop()
    assert [r.segments for r in standin.records] == list(texts.values()) == answered


async def test_twilio_standin_answers_a_numbers_carrier_fact_with_twilios_codes(
    tmp_path: Path,
) -> None:
    runner, sink, got = await _sink()
    handed: list[SmsRecord] = []

    async def phone(record: SmsRecord) -> None:
        handed.append(record)

    standin = TwilioStandIn(
        account_sid=SID, auth_token=TOKEN, clock=CLOCK, capture_dir=tmp_path, on_message=phone
    )
    standin.number_errors = {"+37052123456": 21614, "+37060000001": 21211, "+37060000002": 30003}
    await standin.start()
    url = f"{standin.base_url}/2010-04-01/Accounts/{SID}/Messages.json"
    callback = f"{sink}/sms/primary/status?key=k"
    answers = {}
    try:
        async with aiohttp.ClientSession(auth=aiohttp.BasicAuth(SID, TOKEN)) as session:
            for to in standin.number_errors:
                form = {"To": to, "From": "+37052000000", "Body": "x", "StatusCallback": callback}
                async with session.post(url, data=form) as resp:
                    answers[to] = (resp.status, (await resp.json()).get("code"))
        for _ in range(100):
            if len(got) >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        await standin.stop()
        await runner.cleanup()
    # The API refuses a landline and a number that does not exist, as Twilio does...
    assert answers["+37052123456"] == (400, 21614)
    assert answers["+37060000001"] == (400, 21211)
    # ... and accepts a text to a phone that is off, which then comes back undelivered.
    assert answers["+37060000002"][0] == 201
    assert [(f["MessageStatus"], f.get("ErrorCode")) for _, f, _ in got] == [
        ("sent", None),
        ("undelivered", "30003"),
    ]
    assert handed == [] and [r.to for r in standin.records] == ["+37060000002"]


async def test_mailbox_reads_the_calendar_method_of_a_call_task_mail(tmp_path: Path) -> None:
    box = Mailbox(CLOCK, tmp_path)
    await box.start()
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@b.example", "desk@b.example", "t"
    message.set_content("task withdrawn")
    message.add_attachment(
        "BEGIN:VCALENDAR\r\nMETHOD:CANCEL\r\nEND:VCALENDAR\r\n",
        subtype="calendar",
        params={"method": "CANCEL"},
    )
    try:
        await aiosmtplib.send(message, hostname="127.0.0.1", port=box.port)
    finally:
        await box.stop()
    assert [r.calendar_method for r in box.records] == ["CANCEL"]
