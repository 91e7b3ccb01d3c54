"""`python -m services.tracker` runs from the environment, answers, and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import aiohttp
import hl7
import pytest

from schemas.topics import TopicNames
from tests.support.infra import REPO

pytestmark = pytest.mark.integration

MESSAGE = (
    "MSH|^~\\&|HIS|CLINIC|FOLLOWUP|TRACKER|20260301120000+0200||SIU^S12^SIU_S12|C1|P|2.5\r"
    "SCH|A1^HIS|A1^HIS|||||||||^^^20260302093000+0200\r"
    "PID|1||PAT-1^^^HIS^MR\r"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_service_process_serves_mllp_and_ops_and_stops_cleanly(
    kafka_bootstrap: str, topics: TopicNames
) -> None:
    http_port, mllp_port = free_port(), free_port()
    env = os.environ | {
        "FOLLOWUP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FOLLOWUP_TOPIC_PREFIX": topics.prefix,
        "FOLLOWUP_HTTP_HOST": "127.0.0.1",
        "FOLLOWUP_HTTP_PORT": str(http_port),
        "FOLLOWUP_MLLP_PORT": str(mllp_port),
        "FOLLOWUP_INGEST_TOKEN": "secret-token",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.tracker", cwd=REPO, env=env
    )
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(60):
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{http_port}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", mllp_port)
        writer.write(b"\x0b" + MESSAGE.encode() + b"\x1c\x0d")
        await writer.drain()
        block = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 30)
        writer.close()
        assert str(hl7.parse(block[1:-2].decode()).segment("MSA")(1)) == "AA"
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0
