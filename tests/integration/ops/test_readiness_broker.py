"""/readyz checks the broker: a broker that stops turns the check false within the cache
time and the timeout. Its own broker instance, so the shared one keeps running."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from common.http import OpsServer
from common.kafka import BROKER_CHECK_CACHE_SECONDS, BROKER_CHECK_TIMEOUT_SECONDS, KafkaPublisher
from tests.support.infra import REPO
from tests.support.secure_infra import make_certificates, secure_kafka

pytestmark = pytest.mark.integration


async def readyz(url: str) -> tuple[int, dict[str, bool]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as response:
        return response.status, (await response.json())["checks"]


async def until(predicate_url: str, want: bool, patience: float) -> dict[str, bool]:
    deadline = time.monotonic() + patience
    while True:
        _status, checks = await readyz(predicate_url)
        if checks["kafka"] is want or time.monotonic() > deadline:
            return checks
        await asyncio.sleep(0.5)


async def test_readyz_names_the_broker_when_it_goes_away(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path / "tls")
    with secure_kafka(tmp_path / "kafka", certificates) as broker:
        publisher = KafkaPublisher(broker.plaintext, client_id="readiness-test")
        await publisher.start()
        ops = OpsServer("readiness-test", registry=CollectorRegistry())
        ops.add_readiness_check("kafka", publisher.broker_ready)
        port = await ops.start("127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}"
        try:
            status, checks = await readyz(url)
            assert (status, checks["kafka"]) == (200, True)
            subprocess.run(
                ["bash", str(REPO / "deploy/local/kafka.sh"), "down"],
                env={**os.environ, "FOLLOWUP_INFRA_DIR": str(tmp_path / "kafka")},
                check=True,
                capture_output=True,
            )
            patience = BROKER_CHECK_CACHE_SECONDS + BROKER_CHECK_TIMEOUT_SECONDS + 10
            checks = await until(url, False, patience)
            assert checks["kafka"] is False
            status, _ = await readyz(url)
            assert status == 503
        finally:
            await ops.stop()
            await publisher.stop()
