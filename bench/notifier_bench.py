"""The notifier as a process (``python -m services.notifier``): commands on the
notifications topic in, deliveries out, against bare loops sending the same to the same
servers from this process.

- emails/s to a local SMTP server (aiosmtpd), against a bare aiosmtplib loop on one
  connection sending a message of the notifier's shape (same headers, text and HTML parts
  of its sizes, built with the stdlib per message); also against the smallest message
  (four headers, one short part: the baseline of the rounds before issue 16's third);
- SMS/s to the SMS provider stand-in (``standins.sms_provider``, Twilio's wire format),
  against a bare aiohttp loop posting the form the notifier posted last;
- call tasks/s to a webhook (aiohttp), against a bare aiohttp loop posting the JSON the
  webhook got last from the notifier (the task and its FHIR Task; unsigned).

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
import email.policy
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
from aiohttp import web
from aiosmtpd.controller import Controller

from bench.harness import Figure, Reading, Result
from bench.processes import ServiceProcess, produce, unique_prefix
from common.config import PREFIX, Settings
from common.db import create_pool, drop_schema
from common.kafka import delete_topics_with_prefix, ensure_topics
from schemas.events import ChannelConsent, ContactEvent, NotificationCommand
from schemas.topics import TopicNames
from standins.sms_provider import SmsProviderStandIn
from tests.support.polling import free_port

SID, TOKEN, SENDER = "ACbench", "bench-token", "+37060000000"


# The notifier's no-show email in English is ~330 characters of text and ~400 of HTML.
EMAIL_TEXT = (
    "Dear Ona,\n\nWe missed you at your visit, and we would like to help you continue your "
    "treatment.\n\nTo rebook, call us at +37052000000. You can simply reply to this email."
    '\n\nSample Clinic\nTo stop these emails, reply "unsubscribe" or open '
    "https://clinic.invalid/unsubscribe?patient=bench-0&token=0123456789abcdef0123456789abcdef\n"
)
EMAIL_HTML = (
    "<html><body>"
    + "".join(f"<p>{line}</p>" for line in EMAIL_TEXT.splitlines() if line)
    + "</body></html>"
)


def same_shape_email(i: int) -> EmailMessage:
    """What the notifier sends, by the stdlib alone: From, To, Subject, Date, Message-ID,
    the key, List-Unsubscribe (+ -Post), multipart/alternative text and HTML."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "followup@clinic.invalid"
    message["To"] = f"bench-{i}@example.org"
    message["Subject"] = "Your treatment: the next step"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = f"<bench.{i}@clinic.invalid>"
    message["X-Followup-Key"] = f"bench-{i}:1"
    message["List-Unsubscribe"] = f"<https://clinic.invalid/unsubscribe?patient=bench-{i}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(EMAIL_TEXT)
    message.add_alternative(EMAIL_HTML, subtype="html")
    return message


def smallest_email(i: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "followup@clinic.invalid"
    message["To"] = f"bench-{i}@example.org"
    message["Subject"] = "We missed you today"
    message.set_content("Please call the clinic to book a new time.")
    return message


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
        self.task_body = b""  # the last call task the webhook got: the bare loop posts it
        self.notifier_pid = 0
        # CPU seconds per delivery: (notifier process, bench process) for each channel, and
        # the bench process's during each bare loop (client and servers).
        self.cpu: dict[str, tuple[float, float]] = {}
        self.bare_cpu: dict[str, float] = {}

    async def _webhook(self, request: web.Request) -> web.Response:
        self.task_body = await request.read()
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
        """Deliveries/s; also notes the CPU each one cost the notifier process and the bench
        process (the servers') over the same window, in ``self.cpu[channel]``."""
        now = datetime.now(UTC)
        tag = f"{channel}-{uuid.uuid4().hex[:6]}"
        patients = [f"{tag}-p{i}" for i in range(self.count)]
        await produce(self.bootstrap, self.names.contacts, [contact(p, now) for p in patients])
        await self._contacts_stored_at_least(patients)
        commands = [command(f"{tag}-c{i}", p, channel, now) for i, p in enumerate(patients)]
        before = received()
        started = time.perf_counter()
        notifier_cpu = process_cpu(self.notifier_pid)
        await produce(self.bootstrap, self.names.notifications, commands)
        bench_cpu = time.process_time()  # after producing: the servers' share alone
        async with asyncio.timeout(600):
            while received() < before + self.count:
                await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        self.cpu[channel] = (
            (process_cpu(self.notifier_pid) - notifier_cpu) / self.count,
            (time.process_time() - bench_cpu) / self.count,
        )
        return self.count / elapsed

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

    async def bare_smtp(self, same: bool = True) -> float:
        """``same``: a message of the notifier's shape (its headers, text and HTML parts of
        its sizes), built with the stdlib per message as the notifier does; else the
        smallest one (four headers, one short text part), the baseline of earlier rounds."""
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.smtp_port, use_tls=False)
        await smtp.connect()
        started, cpu = time.perf_counter(), time.process_time()
        try:
            for i in range(self.count):
                message = same_shape_email(i) if same else smallest_email(i)
                await smtp.send_message(message)
        finally:
            await smtp.quit()
        self.bare_cpu["email" if same else "smallest"] = (time.process_time() - cpu) / self.count
        return self.count / (time.perf_counter() - started)

    async def bare_post(self, url: str, body: dict[str, Any], form: bool, channel: str) -> float:
        auth = aiohttp.BasicAuth(SID, TOKEN)
        async with aiohttp.ClientSession() as session:
            started, cpu = time.perf_counter(), time.process_time()
            for _ in range(self.count):
                kwargs: dict[str, Any] = {"data": body} if form else {"json": body}
                async with session.post(url, auth=auth, **kwargs) as response:
                    await response.read()
                    if response.status >= 300:
                        raise RuntimeError(f"the bare loop got HTTP {response.status}")
            self.bare_cpu[channel] = (time.process_time() - cpu) / self.count
            return self.count / (time.perf_counter() - started)

    def _cpu_readings(self) -> list[Result]:
        """CPU per delivery, which the machine's load moves far less than rates: the
        notifier process's plus the bench process's (its servers) over the notifier's
        window, against the bench process's in the bare loop (client and the same
        servers). PostgreSQL's and Kafka's CPU are in neither."""
        readings: list[Result] = []
        for channel, what in (("email", "email"), ("sms", "SMS"), ("call_task", "call task")):
            notifier, servers = self.cpu[channel]
            readings.append(
                Reading(
                    f"notifier: CPU per {what}, with the server",
                    (notifier + servers) * 1000,
                    "ms",
                    "bare loop and the server",
                    self.bare_cpu[channel] * 1000,
                )
            )
        return readings

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
            assert notifier.process is not None
            self.notifier_pid = notifier.process.pid
            email = await self.through_notifier("email", lambda: self.mail.count)
            sms = await self.through_notifier("sms", lambda: len(self.sms.messages))
            calls = await self.through_notifier("call_task", lambda: self.tasks.count)
            bare_email = await self.bare_smtp()
            smallest_mail = await self.bare_smtp(same=False)
            # The bare loops post what the notifier posted (its last SMS form, its last
            # call task's JSON), so each baseline sends the same bytes.
            sms_form = dict(self.sms.messages[-1].form)
            bare_sms = await self.bare_post(
                f"{sms_url}/2010-04-01/Accounts/{SID}/Messages.json", sms_form, True, "sms"
            )
            task = json.loads(self.task_body)
            bare_calls = await self.bare_post(
                f"http://127.0.0.1:{self.webhook_port}/tasks", task, False, "call_task"
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
                f"notifier: emails/s to aiosmtpd ({n})",
                email,
                "aiosmtplib, same message",
                bare_email,
            ),
            Figure(f"notifier: SMS/s to the stand-in ({n})", sms, "aiohttp, same form", bare_sms),
            Figure(
                f"notifier: call tasks/s to a webhook ({n})",
                calls,
                "aiohttp, same JSON",
                bare_calls,
            ),
            # The earlier rounds' email baseline (four headers, one short part), for comparison.
            Figure(
                f"notifier: emails/s, smallest message ({n})",
                email,
                "aiosmtplib, smallest message",
                smallest_mail,
            ),
            *self._cpu_readings(),
        ]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    count: int | None = None, bootstrap: str | None = None, dsn: str | None = None
) -> list[Result]:
    count = count or int(os.environ.get(f"{PREFIX}BENCH_NOTIFICATIONS", "1000"))
    settings = Settings()
    bootstrap = bootstrap or settings.kafka_bootstrap
    dsn = dsn or os.environ.get(f"{PREFIX}DATABASE_URL", str(settings.database_url))
    return asyncio.run(NotifierBench(bootstrap, dsn, count).figures())
