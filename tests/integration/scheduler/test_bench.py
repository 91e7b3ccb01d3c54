"""The scheduler benchmark runs end to end on a small size and reports what it measured.

No duration is asserted (the machine is shared); the benchmark itself checks that every
seeded due attempt fired and that each tick fired exactly what was due.
"""

from __future__ import annotations

import asyncpg
import pytest

from bench import scheduler_bench
from bench.__main__ import SUITES
from bench.harness import Figure, Observation
from bench.scheduler_bench import Sizes

pytestmark = pytest.mark.integration


def test_scheduler_bench_is_registered() -> None:
    assert "scheduler" in SUITES


async def test_scheduler_bench_measures_firing_ticks_lateness_and_wake_up(
    database_url: str, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_bench, "TICKS", 3)
    sizes = Sizes(
        open_cases=600, due=120, steady_rate=50, steady_seconds=2, wake_up=200, other_rate=10
    )
    bench = scheduler_bench.Bench(database_url, sizes, kafka_bootstrap)
    results = await bench.figures()
    figures = [f for f in results if isinstance(f, Figure)]
    assert [f.name for f in figures] == [
        "scheduler: fire, 1 loop (120 due/600 open)",
        "scheduler: fire, 2 loops (120 due/600 open)",
        "scheduler: tick of 50 due among 600 open",
    ]
    assert all(f.ops_per_second > 0 and f.baseline_ops_per_second > 0 for f in figures)
    # Both firing figures stand beside the bare claim loop of the same run.
    assert figures[0].baseline_name == figures[1].baseline_name == "bare SKIP LOCKED claim+done"
    observed = {r.name: r.value for r in results if isinstance(r, Observation)}
    assert len(observed) == 4
    # Work fires after it is due, never before (the process's own clock against the seed's).
    assert all(value >= 0 for value in observed.values())
    # Nothing is left behind: every benchmark schema was dropped.
    conn = await asyncpg.connect(database_url)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1::text[])", bench.schemas
        )
    finally:
        await conn.close()
    assert len(bench.schemas) == 5
    assert left == 0


async def test_statements_per_handler_are_the_readme_s_figures(
    database_url: str,
) -> None:
    # Not a timing: the round trips each handler sends (12, 17 and 15 before the Case; 8,
    # 14 and 8 before the writes went as one statement; a change here is a change of the
    # scheduler README's table).
    found = await scheduler_bench.statements_per_handler(database_url)
    assert found == {"trigger": 7, "one firing": 9, "no_answer outcome": 7}
