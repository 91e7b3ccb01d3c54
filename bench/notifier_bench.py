"""The notifier as a process (``python -m services.notifier``): commands on the
notifications topic in, deliveries out, against bare loops sending the same to the same
servers from this process.

- emails/s to a local SMTP server (aiosmtpd), against a bare aiosmtplib loop on one
  connection;
- SMS/s to the SMS provider stand-in (``standins.sms_provider``, Twilio's wire format),
  against a bare aiohttp loop posting the same form;
- call tasks/s to a webhook (aiohttp), against a bare aiohttp loop posting the same JSON.

The bare loops are sequential: they are the cost of the channel itself on one connection.
The notifier sends up to ``FOLLOWUP_DISPATCH_CONCURRENCY`` rows at once per channel (one at
a time per patient), so on a channel whose server answers in parallel (HTTP) it may pass
its baseline; email goes over one SMTP connection, as the baseline does. Each figure:
``N`` commands for ``N`` patients (contacts stored first), timed from the first command
produced to the last delivery received. ``FOLLOWUP_BENCH_NOTIFICATIONS`` (default 1,000
per channel).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import aiohttp
import aiosmtplib
from aiohttp import web
from aiosmtpd.controller import Controller

from bench.harness import Figure, Result
from bench.processes import ServiceProcess, produce, unique_prefix
from common.config import PREFIX, Settings
from common.db import create_pool, drop_schema
from common.kafka import delete_topics_with_prefix, ensure_topics
from schemas.events import ChannelConsent, ContactEvent, NotificationCommand
from schemas.topics import TopicNames
from standins.sms_provider import SmsProviderStandIn
from tests.support.polling import free_port

SID, TOKEN, SENDER = "ACbench", "bench-token", "+37060000000"


class Counter:
    """What the SMTP server and the webhook received, and when the last one came."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0

    def hit(self) -> None:
        self.count += 1
        self.last = time.perf_counter()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.hit()
        return "250 OK"

    async def until(self, count: int, timeout: float = 600.0) -> float:
        async with asyncio.timeout(timeout):
            while self.count < count:
                await asyncio.sleep(0.02)
        return self.last


def contact(patient_id: str, now: datetime) -> ContactEvent:
    return ContactEvent(
        event_id=f"contact:{patient_id}",
        occurred_at=now,
        source="bench",
        patient_id=patient_id,
        given_name="Ona",
        family_name="Petraitė",
        phone="+37060012345",
        email=f"{patient_id}@example.org",
        language="en",
        timezone="UTC",
        consent=ChannelConsent(),
    )


def command(case_id: str, patient_id: str, channel: str, now: datetime) -> NotificationCommand:
    return NotificationCommand.model_validate(
        {
            "event_id": f"{case_id}:1",
            "occurred_at": now,
            "source": "scheduler",
            "idempotency_key": f"{case_id}:1",
            "case_id": case_id,
            "attempt_number": 1,
            "patient_id": patient_id,
            "channel": channel,
            "template": "no_show",
            "reason": "no_show",
            "department": "dental",
            "timezone": "UTC",
            "appointment_start": now - timedelta(hours=2),
            "window_start": now,
            "window_end": now + timedelta(hours=8),
        }
    )


class NotifierBench:
    def __init__(self, bootstrap: str, dsn: str, count: int) -> None:
        self.bootstrap = bootstrap
        self.dsn = dsn
        self.count = count
        self.names = TopicNames(prefix=unique_prefix("notifier"))
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"
        self.mail = Counter()
        self.tasks = Counter()
        self.sms = SmsProviderStandIn(account_sid=SID, auth_token=TOKEN)
        self.smtp_port = free_port()
        self.webhook_port = free_port()

    async def _webhook(self, request: web.Request) -> web.Response:
        await request.read()
        self.tasks.hit()
        return web.Response(status=204)

    def process(self, sms_url: str) -> ServiceProcess:
        now = datetime.now(UTC)
        # Never quiet while the bench runs: a minute of quiet hours, twelve hours from now.
        quiet = (now + timedelta(hours=12)).time().replace(second=0, microsecond=0)
        quiet_end = (now + timedelta(hours=12, minutes=1)).time().replace(second=0)
        return ServiceProcess(
            "services.notifier",
            {
                "FOLLOWUP_KAFKA_BOOTSTRAP": self.bootstrap,
                "FOLLOWUP_DATABASE_URL": self.dsn,
                "FOLLOWUP_DB_SCHEMA": self.schema,
                "FOLLOWUP_TOPIC_PREFIX": self.names.prefix,
                "FOLLOWUP_QUIET_START": quiet.isoformat(timespec="minutes"),
                "FOLLOWUP_QUIET_END": quiet_end.isoformat(timespec="minutes"),
                "FOLLOWUP_RUNAWAY_CAP_PER_DAY": "1000",
                "FOLLOWUP_SMTP_HOST": "127.0.0.1",
                "FOLLOWUP_SMTP_PORT": str(self.smtp_port),
                "FOLLOWUP_SMTP_SECURITY": "none",
                "FOLLOWUP_SMS_PRIMARY_URL": sms_url,
                "FOLLOWUP_SMS_PRIMARY_SID": SID,
                "FOLLOWUP_SMS_PRIMARY_TOKEN": TOKEN,
                "FOLLOWUP_SMS_PRIMARY_FROM": SENDER,
                "FOLLOWUP_SMS_RATE_PER_SECOND": "0",
                "FOLLOWUP_CALL_TASK_SINKS": "webhook",
                "FOLLOWUP_WEBHOOK_URL": f"http://127.0.0.1:{self.webhook_port}/tasks",
                "FOLLOWUP_WEBHOOK_SECRET": "bench-secret",
            },
        )

    async def through_notifier(self, channel: str, received: Any) -> float:
        now = datetime.now(UTC)
        tag = f"{channel}-{uuid.uuid4().hex[:6]}"
        patients = [f"{tag}-p{i}" for i in range(self.count)]
        await produce(self.bootstrap, self.names.contacts, [contact(p, now) for p in patients])
        await self._contacts_stored_at_least(patients)
        commands = [command(f"{tag}-c{i}", p, channel, now) for i, p in enumerate(patients)]
        before = received()
        started = time.perf_counter()
        await produce(self.bootstrap, self.names.notifications, commands)
        async with asyncio.timeout(600):
            while received() < before + self.count:
                await asyncio.sleep(0.02)
        return self.count / (time.perf_counter() - started)

    async def _contacts_stored_at_least(self, patients: list[str]) -> None:
        pool = await create_pool(self.dsn, self.schema, max_size=1)
        try:
            async with asyncio.timeout(300):
                while await pool.fetchval(
                    "SELECT count(*) FROM contacts WHERE patient_id = ANY($1)", patients
                ) < len(patients):
                    await asyncio.sleep(0.2)
        finally:
            await pool.close()

    async def bare_smtp(self) -> float:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.smtp_port, use_tls=False)
        await smtp.connect()
        started = time.perf_counter()
        try:
            for i in range(self.count):
                message = EmailMessage()
                message["From"] = "followup@clinic.invalid"
                message["To"] = f"bench-{i}@example.org"
                message["Subject"] = "We missed you today"
                message.set_content("Please call the clinic to book a new time.")
                await smtp.send_message(message)
        finally:
            await smtp.quit()
        return self.count / (time.perf_counter() - started)

    async def bare_post(self, url: str, body: dict[str, Any], form: bool) -> float:
        auth = aiohttp.BasicAuth(SID, TOKEN)
        async with aiohttp.ClientSession() as session:
            started = time.perf_counter()
            for _ in range(self.count):
                kwargs: dict[str, Any] = {"data": body} if form else {"json": body}
                async with session.post(url, auth=auth, **kwargs) as response:
                    await response.read()
                    if response.status >= 300:
                        raise RuntimeError(f"the bare loop got HTTP {response.status}")
            return self.count / (time.perf_counter() - started)

    async def figures(self) -> list[Result]:
        await ensure_topics(self.bootstrap, self.names)
        smtp = Controller(self.mail, hostname="127.0.0.1", port=self.smtp_port)
        smtp.start()
        app = web.Application()
        app.router.add_post("/tasks", self._webhook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.webhook_port).start()
        sms_url = await self.sms.start()
        notifier = self.process(sms_url)
        try:
            await notifier.start()
            email = await self.through_notifier("email", lambda: self.mail.count)
            sms = await self.through_notifier("sms", lambda: len(self.sms.messages))
            calls = await self.through_notifier("call_task", lambda: self.tasks.count)
            bare_email = await self.bare_smtp()
            sms_form = {"To": "+37060012345", "From": SENDER, "Body": "We missed you today."}
            bare_sms = await self.bare_post(
                f"{sms_url}/2010-04-01/Accounts/{SID}/Messages.json", sms_form, form=True
            )
            task = {"task": {"action": "create", "task_id": "t", "script": "Call the patient."}}
            bare_calls = await self.bare_post(
                f"http://127.0.0.1:{self.webhook_port}/tasks", task, form=False
            )
        finally:
            await notifier.stop()
            await self.sms.stop()
            await runner.cleanup()
            smtp.stop()
            await drop_schema(self.dsn, self.schema)
            await delete_topics_with_prefix(self.bootstrap, self.names.prefix)
        n = self.count
        return [
            Figure(
                f"notifier: emails/s to aiosmtpd ({n})", email, "bare aiosmtplib loop", bare_email
            ),
            Figure(f"notifier: SMS/s to the stand-in ({n})", sms, "bare aiohttp loop", bare_sms),
            Figure(
                f"notifier: call tasks/s to a webhook ({n})", calls, "bare aiohttp loop", bare_calls
            ),
        ]


def run(
    count: int | None = None, bootstrap: str | None = None, dsn: str | None = None
) -> list[Result]:
    count = count or int(os.environ.get(f"{PREFIX}BENCH_NOTIFICATIONS", "1000"))
    settings = Settings()
    bootstrap = bootstrap or settings.kafka_bootstrap
    dsn = dsn or os.environ.get(f"{PREFIX}DATABASE_URL", str(settings.database_url))
    return asyncio.run(NotifierBench(bootstrap, dsn, count).figures())
