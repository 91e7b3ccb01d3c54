"""The end-to-end benchmark runs on a small size: each no-show's call task reached the
webhook through the tracker, scheduler and notifier processes, never before its grace
ended. No duration is asserted (the machine is shared)."""

from __future__ import annotations

import pytest

from bench.__main__ import SUITES
from bench.e2e_bench import EndToEnd
from bench.harness import Observation

pytestmark = pytest.mark.integration


async def test_e2e_bench_gets_every_call_task(kafka_bootstrap: str, database_url: str) -> None:
    assert "e2e" in SUITES
    bench = EndToEnd(kafka_bootstrap, database_url, samples=4, background=50)
    results = await bench.figures()
    assert [r.name.split(" (")[0] for r in results] == [
        "e2e: grace end -> call task p50",
        "e2e: grace end -> call task p99",
    ]
    assert len(bench.received) == 4
    # A call task cannot come before the grace it follows has ended.
    p50, p99 = results
    assert isinstance(p50, Observation) and isinstance(p99, Observation)
    assert 0 < p50.value <= p99.value
