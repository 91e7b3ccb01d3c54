from __future__ import annotations

import aiohttp
import pytest

from common.http import OpsServer
from common.metrics import DEAD_LETTERS

pytestmark = pytest.mark.integration


async def test_metrics_health_and_readiness_over_a_real_socket() -> None:
    ready = {"kafka": True}

    async def kafka_ready() -> bool:
        return ready["kafka"]

    server = OpsServer("test")
    server.add_readiness_check("kafka", kafka_ready)
    port = await server.start("127.0.0.1", 0)
    DEAD_LETTERS.labels("test", "invalid_json").inc()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            async with http.get("/healthz") as r:
                assert r.status == 200
            async with http.get("/readyz") as r:
                assert r.status == 200
            ready["kafka"] = False
            async with http.get("/readyz") as r:
                assert r.status == 503
                assert (await r.json())["checks"] == {"tasks": True, "kafka": False}
            async with http.get("/metrics") as r:
                text = await r.text()
                assert (
                    'followup_dead_letters_total{error_type="invalid_json",service="test"}' in text
                )
    finally:
        await server.stop()
