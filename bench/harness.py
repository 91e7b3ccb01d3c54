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
