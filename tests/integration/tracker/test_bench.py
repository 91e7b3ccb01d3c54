"""The tracker benchmark runs on a small size and reports what it measured.

No duration is asserted (the machine is shared); the benchmark itself checks that due()
found exactly what was due, and this test checks that the worker consumed every produced
event, wrote the changelog, and left no topic behind.
"""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from bench import tracker_bench, tracker_ops_bench, tracker_restore_bench
from bench.__main__ import SUITES
from bench.harness import Figure, Observation, Reading
from bench.tracker_bench import DUE, BrokerBench

pytestmark = pytest.mark.integration


def test_tracker_benches_are_registered() -> None:
    assert {"tracker", "tracker-ops", "tracker-restore"} <= set(SUITES)


def test_in_memory_figures_name_their_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracker_bench, "N", 200)
    figures = tracker_bench.in_memory(DUE + 500)
    assert [f.name for f in figures] == [
        "tracker: decode+detect+snapshot",
        "tracker: decode+detect+snapshot, 1500 held",
        "tracker: due() 1000 of 1500 tracked",
        "tracker: RSS per appointment (1500 tracked)",
        "tracker: RSS growth holding 1500",
    ]
    rates = [f for f in figures if isinstance(f, Figure)]
    assert all(f.ops_per_second > 0 and f.baseline_ops_per_second > 0 for f in rates)
    memory = figures[3]
    assert isinstance(memory, Reading)
    assert memory.unit == "bytes"
    # The baseline is the mean size of one canonical event as encoded on the topic.
    assert 300 < memory.baseline_value < 500


async def test_broker_figure_consumes_every_event(kafka_bootstrap: str) -> None:
    bench = BrokerBench(kafka_bootstrap, 300)
    figures = await bench.figures()
    assert [f.name for f in figures] == ["tracker: worker via broker (300 events)"]
    assert figures[0].baseline_name == "bare aiokafka consume+decode"
    assert figures[0].ops_per_second > 0 and figures[0].baseline_ops_per_second > 0
    # Every event reached the detector and each of its 300 patients got a changelog record.
    assert bench.consumed_by_worker == 300
    assert bench.changelog_records == 300
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        left = [t for t in await admin.list_topics() if t.startswith(bench.names.prefix)]
    finally:
        await admin.close()
    assert left == []


async def test_tracker_process_bench_replays_without_new_triggers(kafka_bootstrap: str) -> None:
    sizes = tracker_ops_bench.Sizes(siu=60, feed=200)
    bench = tracker_ops_bench.TrackerOps(kafka_bootstrap, sizes)
    results = {r.name: r for r in await bench.figures()}
    mllp = [r for r in results.values() if "MLLP" in r.name]
    assert len(mllp) == 3  # 1 and 50 connections; 50 also against the listener's own reader
    assert all(isinstance(f, Figure) and f.ops_per_second > 0 for f in mllp)
    first = results["tracker: triggers of the first pass (200 no-shows)"]
    assert isinstance(first, Observation)
    # Every booking of the feed started hours ago: one no-show each, and none again.
    assert first.value == 200
    assert results["tracker: new triggers of the replay"].value == 0  # type: ignore[union-attr]
    restored = results["tracker: triggers re-emitted after the restore"]
    assert isinstance(restored, Observation)
    assert restored.value == 0
    restart = next(r for r in results.values() if r.name.startswith("tracker: kill -9"))
    assert isinstance(restart, Reading) and restart.value > 0
    static = results["tracker: the same under the killed group.instance.id"]
    assert isinstance(static, Reading) and static.value > 0


async def test_restore_figure_restarts_a_tracker_holding_what_was_written(
    kafka_bootstrap: str,
) -> None:
    bench = tracker_restore_bench.TrackerRestore(
        kafka_bootstrap, tracker_restore_bench.Sizes(tracked=300)
    )
    results = await bench.figures()
    restart = results[0]
    assert isinstance(restart, Reading)
    assert restart.name == "tracker: kill -9 holding 300, restart to ready (300 records)"
    assert restart.value > 0 and restart.baseline_value > 0
    assert all(isinstance(r, Observation) and r.value > 0 for r in results[1:])
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        left = [t for t in await admin.list_topics() if t.startswith(bench.names.prefix)]
    finally:
        await admin.close()
    assert left == []
