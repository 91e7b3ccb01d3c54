"""A tiny benchmark harness: time a candidate and a baseline in the same run, print both
and their ratio. Figures only; nothing here asserts a duration (machines are shared)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    name: str
    ops_per_second: float
    baseline_name: str
    baseline_ops_per_second: float

    @property
    def ratio(self) -> float:
        return self.ops_per_second / self.baseline_ops_per_second

    def line(self) -> str:
        return (
            f"{self.name:<44} {self.ops_per_second:>14,.0f} ops/s   "
            f"baseline {self.baseline_name:<28} {self.baseline_ops_per_second:>14,.0f} ops/s   "
            f"ratio {self.ratio:6.3f}"
        )


def rate(work: Callable[[], int]) -> float:
    """Operations per second of one run of ``work`` (which returns how many it did)."""
    started = time.perf_counter()
    done = work()
    return done / (time.perf_counter() - started)


def compare(
    name: str,
    work: Callable[[], int],
    baseline_name: str,
    baseline: Callable[[], int],
    repeats: int = 5,
) -> Figure:
    # Interleave so a noisy neighbour hurts both sides alike.
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(rate(work))
        theirs.append(rate(baseline))
    return Figure(name, statistics.median(ours), baseline_name, statistics.median(theirs))


@dataclass(frozen=True)
class Reading:
    """A measured quantity other than a rate (bytes, seconds), next to its baseline."""

    name: str
    value: float
    unit: str
    baseline_name: str
    baseline_value: float

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value

    def line(self) -> str:
        return (
            f"{self.name:<44} {self.value:>14,.1f} {self.unit:<5}   "
            f"baseline {self.baseline_name:<28} {self.baseline_value:>14,.1f} {self.unit:<5}   "
            f"ratio {self.ratio:6.3f}"
        )


@dataclass(frozen=True)
class Observation:
    """A measured quantity with no baseline (a latency, a drain time): what the issue's
    table asks of it stands beside it in the README."""

    name: str
    value: float
    unit: str

    def line(self) -> str:
        return f"{self.name:<44} {self.value:>14,.3f} {self.unit}"


Result = Figure | Reading | Observation


def as_json(result: Result) -> dict[str, object]:
    if isinstance(result, Figure):
        return {
            "name": result.name,
            "value": result.ops_per_second,
            "unit": "ops/s",
            "baseline_name": result.baseline_name,
            "baseline_value": result.baseline_ops_per_second,
            "ratio": result.ratio,
        }
    if isinstance(result, Reading):
        return {
            "name": result.name,
            "value": result.value,
            "unit": result.unit,
            "baseline_name": result.baseline_name,
            "baseline_value": result.baseline_value,
            "ratio": result.ratio,
        }
    return {"name": result.name, "value": result.value, "unit": result.unit}


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]
