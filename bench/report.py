"""Where `make bench` leaves its figures: ``<dir>/<suite>.json`` and ``<dir>/<suite>.png``
(each figure beside its baseline, one small panel per figure, so the ratios show at a glance)."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import Result, as_json

DEFAULT_DIR = Path(".cache/bench")


def machine() -> dict[str, object]:
    memory = 0
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    return {
        "nproc": os.cpu_count(),
        "memory_bytes": memory,
        "python": platform.python_version(),
        "load_average_1m": os.getloadavg()[0],
    }


def write(suite: str, results: Sequence[Result], directory: Path = DEFAULT_DIR) -> Path:
    """Writes the JSON and the PNG of one suite; returns the JSON's path."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "suite": suite,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": [as_json(r) for r in results],
    }
    path = directory / f"{suite}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    plot(suite, document["figures"], directory / f"{suite}.png")  # type: ignore[arg-type]
    return path


def plot(suite: str, figures: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a build machine
    import matplotlib.pyplot as plt

    count = max(1, len(figures))
    columns = min(3, count)
    rows = (count + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    for ax, figure in zip(axes.flat, figures, strict=False):
        labels = ["measured"]
        values = [float(figure["value"])]  # type: ignore[arg-type]
        if "baseline_value" in figure:
            labels.append("baseline")
            values.append(float(figure["baseline_value"]))  # type: ignore[arg-type]
        bars = ax.bar(labels, values, color=["tab:blue", "tab:gray"][: len(values)])
        ax.bar_label(bars, labels=[f"{v:,.3g}" for v in values], fontsize=8)
        title = str(figure["name"])
        if "ratio" in figure:
            title += f"\nratio {float(figure['ratio']):.3f}"  # type: ignore[arg-type]
        ax.set_title(_wrap(title), fontsize=8)
        ax.set_ylabel(str(figure["unit"]), fontsize=8)
        if "baseline_name" in figure:
            ax.set_xlabel(_wrap(f"baseline: {figure['baseline_name']}"), fontsize=7)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{suite} (shared, noisy machine: one run)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _wrap(text: str, width: int = 48) -> str:
    out: list[str] = []
    for part in text.split("\n"):
        line = ""
        for word in part.split():
            if line and len(line) + 1 + len(word) > width:
                out.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        out.append(line)
    return "\n".join(out)
