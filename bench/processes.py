"""Services as real processes for the benchmarks (``python -m services.<name>``), configured
from the environment and ready when their ``/readyz`` says so. The benchmarks drive them
through their wire interfaces (topics, MLLP, HTTP), so they survive a refactor of the
services' internals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp
from aiokafka import TopicPartition

from common.codec import encode
from common.config import PREFIX
from common.kafka import make_admin, make_consumer, make_producer
from schemas.events import AppointmentEvent, ContactEvent, NotificationCommand
from tests.support.polling import free_port

REPO = Path(__file__).resolve().parents[1]
# What the benchmarks produce, each keyed by its patient.
Keyed = AppointmentEvent | ContactEvent | NotificationCommand


def unique_prefix(suite: str) -> str:
    return f"bench{suite}{uuid.uuid4().hex[:8]}."


class ServiceProcess:
    """One service process; ``start`` returns when it is ready (seconds from spawn)."""

    def __init__(self, module: str, env: Mapping[str, str]) -> None:
        self.module = module
        self.http_port = free_port()
        self.env = dict(os.environ) | {
            "FOLLOWUP_HTTP_HOST": "127.0.0.1",
            "FOLLOWUP_HTTP_PORT": str(self.http_port),
            "FOLLOWUP_LOG_LEVEL": "WARNING",  # a log line per event would be what is measured
            **env,
        }
        self.process: asyncio.subprocess.Process | None = None
        self.profiler: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 120.0) -> float:
        started = time.perf_counter()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.module, cwd=REPO, env=self.env
        )
        await self._profile(self.process.pid)
        await self.wait_ready(timeout)
        return time.perf_counter() - started

    async def _profile(self, pid: int) -> None:
        """With ``FOLLOWUP_BENCH_PROFILE=<dir>``, py-spy samples the process until it ends,
        into ``<dir>/<module>-<pid>.txt`` (collapsed stacks; ``python -m bench.profile``)."""
        directory = os.environ.get(f"{PREFIX}BENCH_PROFILE")
        if not directory:
            return
        Path(directory).mkdir(parents=True, exist_ok=True)
        out = Path(directory) / f"{self.module}-{pid}.txt"
        spy = Path(sys.executable).with_name("py-spy")
        self.profiler = await asyncio.create_subprocess_exec(
            str(spy), "record", "--pid", str(pid), "--rate", "100", "--format", "raw",
            "--output", str(out), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    async def wait_ready(self, timeout: float) -> None:
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        async with aiohttp.ClientSession() as session, asyncio.timeout(timeout):
            while True:
                if self.process is not None and self.process.returncode is not None:
                    raise RuntimeError(f"{self.module} exited with {self.process.returncode}")
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    def rss(self) -> int:
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    async def kill(self) -> None:
        """kill -9: no goodbye, offsets and group membership left as they are."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        await self._profiled()

    async def _profiled(self) -> None:
        if self.profiler is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.profiler.wait(), 30)
            self.profiler = None

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                await self.kill()
        await self._profiled()


async def end_offsets(bootstrap: str, topic: str) -> int:
    """How many records a topic holds (the sum of its partitions' end offsets)."""
    consumer = make_consumer(bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(await partitions(bootstrap, topic))
        return sum(ends.values())
    finally:
        await consumer.stop()


async def partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    admin = make_admin(bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    finally:
        await admin.close()


async def committed(bootstrap: str, group_id: str, topic: str) -> int:
    admin = make_admin(bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
        return sum(m.offset for tp, m in offsets.items() if tp.topic == topic and m.offset > 0)
    finally:
        await admin.close()


async def until_committed(
    bootstrap: str, group_id: str, topic: str, count: int, timeout: float = 600.0
) -> float:
    """Seconds until ``group_id`` has committed ``count`` records of ``topic``."""
    started = time.perf_counter()
    async with asyncio.timeout(timeout):
        while await committed(bootstrap, group_id, topic) < count:
            await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def settled(bootstrap: str, topic: str, quiet: float = 2.0, timeout: float = 120.0) -> int:
    """The record count of ``topic`` once it has not grown for ``quiet`` seconds."""
    async with asyncio.timeout(timeout):
        last = await end_offsets(bootstrap, topic)
        while True:
            await asyncio.sleep(quiet)
            now = await end_offsets(bootstrap, topic)
            if now == last:
                return now
            last = now


async def produce(bootstrap: str, topic: str, events: Sequence[Keyed]) -> None:
    """Produces ``events`` keyed by patient, as the services' own publishers do, and waits
    for the broker's acknowledgement of every one."""
    producer = make_producer(bootstrap, linger_ms=20, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, encode(e), key=e.patient_id.encode()) for e in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
