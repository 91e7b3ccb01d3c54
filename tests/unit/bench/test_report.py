"""`make bench` leaves a JSON and a PNG per suite, each figure with its baseline."""

from __future__ import annotations

import json
from pathlib import Path

from bench import report
from bench.harness import Figure, Observation, Reading, Result, percentile


def test_a_suite_is_written_as_json_and_png(tmp_path: Path) -> None:
    results: list[Result] = [
        Figure("fire", 500.0, "bare claim", 1000.0),
        Reading("restore", 8.0, "s", "bare read", 2.0),
        Observation("lateness p99", 0.4, "s"),
    ]
    path = report.write("demo", results, tmp_path)
    document = json.loads(path.read_text())
    assert document["suite"] == "demo"
    assert document["machine"]["nproc"] >= 1
    assert [f["name"] for f in document["figures"]] == ["fire", "restore", "lateness p99"]
    assert document["figures"][0]["ratio"] == 0.5
    assert document["figures"][1]["baseline_value"] == 2.0
    assert "baseline_value" not in document["figures"][2]
    png = tmp_path / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
