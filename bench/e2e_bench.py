"""End to end, all three services as processes on one topic prefix: a no-show's grace end
to its call task received by the clinic's webhook, p50/p99, while background bookings
arrive at ``FOLLOWUP_BENCH_BACKGROUND`` events/s (default 1,000).

Path: booking on the appointments topic -> tracker (grace of one minute, its detection
tick) -> trigger -> scheduler (case, first step a call task) -> firing loop -> outbox
relay -> notifications topic -> notifier -> webhook. The policy is the shipped one with
the first call task due at the missed visit (``PT0S``, not ``PT1H``), business hours and one
call slot all day, so the figure is the pipeline's, not the clinic's cadence.
``FOLLOWUP_BENCH_E2E`` no-shows (default 40), their grace ends spread over 20 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from aiokafka import AIOKafkaProducer

from bench.harness import Observation, Result, percentile
from bench.notifier_bench import contact as notifier_contact
from bench.processes import REPO, ServiceProcess, unique_prefix
from common.codec import encode
from common.config import PREFIX, Settings
from common.db import drop_schema
from common.kafka import delete_topics_with_prefix, ensure_topics, make_producer
from schemas.topics import TopicNames
from tests.support.polling import free_port
from tests.unit.tracker.events import booking

GRACE = timedelta(minutes=1)
SPREAD = 20.0  # seconds over which the measured grace ends fall


def bench_policy(directory: Path) -> Path:
    """The shipped policy, first call task at the missed visit, business hours and one call
    slot all day."""
    text = (REPO / "services/scheduler/policy.yaml").read_text()
    text = text.replace("{delay: PT1H, channel: call_task}", "{delay: PT0S, channel: call_task}", 1)
    text = re.sub(r'(\n\s+(mon|tue|wed|thu|fri|sat|sun): )("[^"]*"|null)', r'\1"00:00-23:59"', text)
    # One call slot all day, and a short minimum window: the first call task is not moved
    # to the next slot when the run happens near the end of one.
    text = re.sub(
        r"call_slots:\n(\s+\w+: \"[^\"]*\"\n)+", 'call_slots:\n    all_day: "00:00-23:59"\n', text
    )
    text = text.replace("min_call_window: PT30M", "min_call_window: PT1M", 1)
    path = directory / "e2e-policy.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class EndToEnd:
    def __init__(self, bootstrap: str, dsn: str, samples: int, background: int) -> None:
        self.bootstrap = bootstrap
        self.dsn = dsn
        self.samples = samples
        self.background = background
        self.names = TopicNames(prefix=unique_prefix("e2e"))
        self.schemas = [f"bench_{uuid.uuid4().hex[:10]}" for _ in range(2)]
        self.webhook_port = free_port()
        self.received: dict[str, float] = {}  # patient -> wall clock (epoch) at receipt

    async def _webhook(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        task = body["task"]
        if task.get("action") == "create":
            self.received.setdefault(task["patient_id"], time.time())
        return web.Response(status=204)

    def processes(self, policy: Path) -> list[ServiceProcess]:
        common = {
            "FOLLOWUP_KAFKA_BOOTSTRAP": self.bootstrap,
            "FOLLOWUP_DATABASE_URL": self.dsn,
            "FOLLOWUP_TOPIC_PREFIX": self.names.prefix,
        }
        return [
            ServiceProcess(
                "services.tracker",
                common
                | {"FOLLOWUP_MLLP_PORT": str(free_port()), "FOLLOWUP_NO_SHOW_GRACE_MINUTES": "1"},
            ),
            ServiceProcess(
                "services.scheduler",
                common
                | {"FOLLOWUP_DB_SCHEMA": self.schemas[0], "FOLLOWUP_POLICY_PATH": str(policy)},
            ),
            ServiceProcess(
                "services.notifier",
                common
                | {
                    "FOLLOWUP_DB_SCHEMA": self.schemas[1],
                    "FOLLOWUP_CALL_TASK_SINKS": "webhook",
                    "FOLLOWUP_WEBHOOK_URL": f"http://127.0.0.1:{self.webhook_port}/tasks",
                    "FOLLOWUP_WEBHOOK_SECRET": "bench-secret",
                },
            ),
        ]

    async def _background(self, producer: AIOKafkaProducer, stop: asyncio.Event) -> int:
        """Future bookings (no trigger) at ``background`` events/s, in 10 bursts a second."""
        later = datetime.now(UTC) + timedelta(days=10)
        sent, tick, started = 0, 0, time.perf_counter()
        burst = max(1, self.background // 10)
        while not stop.is_set():
            for _ in range(burst):
                event = booking(f"bg-a{sent}", f"bg-p{sent}", later)
                await producer.send(
                    self.names.appointments, encode(event), key=event.patient_id.encode()
                )
                sent += 1
            tick += 1
            await asyncio.sleep(max(0.0, started + tick / 10 - time.perf_counter()))
        return sent

    async def figures(self) -> list[Result]:
        await ensure_topics(self.bootstrap, self.names)
        app = web.Application()
        app.router.add_post("/tasks", self._webhook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.webhook_port).start()
        policy_dir = tempfile.TemporaryDirectory(prefix="bench-e2e-")
        services = self.processes(bench_policy(Path(policy_dir.name)))
        producer = make_producer(self.bootstrap, linger_ms=5)
        stop = asyncio.Event()
        background: asyncio.Task[int] | None = None
        try:
            for service in services:
                await service.start()
            await producer.start()
            now = datetime.now(UTC)
            patients = [f"e2e-p{i}" for i in range(self.samples)]
            for p in patients:
                contact = notifier_contact(p, now)
                await producer.send(self.names.contacts, encode(contact), key=p.encode())
            background = asyncio.create_task(self._background(producer, stop))
            first_end = now + timedelta(seconds=15)
            grace_ends = {
                p: first_end + timedelta(seconds=SPREAD * i / self.samples)
                for i, p in enumerate(patients)
            }
            for i, p in enumerate(patients):
                event = booking(f"e2e-a{i}", p, grace_ends[p] - GRACE)
                await producer.send(self.names.appointments, encode(event), key=p.encode())
            await producer.flush()
            async with asyncio.timeout(15 + SPREAD + 120):
                while len(self.received) < self.samples:
                    await asyncio.sleep(0.1)
            stop.set()
            sent = await background
            elapsed = (datetime.now(UTC) - now).total_seconds()
        finally:
            stop.set()
            if background is not None and not background.done():
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
            await producer.stop()
            for service in reversed(services):
                await service.stop()
            await runner.cleanup()
            for schema in self.schemas:
                await drop_schema(self.dsn, schema)
            await delete_topics_with_prefix(self.bootstrap, self.names.prefix)
            policy_dir.cleanup()
        latency = [self.received[p] - grace_ends[p].timestamp() for p in patients]
        where = f"{self.samples} no-shows, background {sent / elapsed:,.0f} events/s"
        return [
            Observation(
                f"e2e: grace end -> call task p50 ({where})", percentile(latency, 0.5), "s"
            ),
            Observation(
                f"e2e: grace end -> call task p99 ({where})", percentile(latency, 0.99), "s"
            ),
        ]


def run(samples: int | None = None, background: int | None = None) -> list[Result]:
    samples = samples or int(os.environ.get(f"{PREFIX}BENCH_E2E", "40"))
    background = background or int(os.environ.get(f"{PREFIX}BENCH_BACKGROUND", "1000"))
    settings = Settings()
    dsn = os.environ.get(f"{PREFIX}DATABASE_URL", str(settings.database_url))
    return asyncio.run(EndToEnd(settings.kafka_bootstrap, dsn, samples, background).figures())
