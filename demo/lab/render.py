"""The lab's report: a table for the terminal, PNG charts, one self-contained HTML page
(charts inlined as base64) and JSON, all under the output directory."""

from __future__ import annotations

import base64
import html
import json
import os
import statistics
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from demo.lab.lab import LabResult
from demo.lab.outcomes import PolicyOutcome

MAXIMUM = "reachable maximum"
SAFETY = ("after_opt_out", "in_quiet_hours", "after_death", "after_transfer", "after_deadline")


def by_policy(outcomes: list[PolicyOutcome]) -> dict[str, list[PolicyOutcome]]:
    out: dict[str, list[PolicyOutcome]] = defaultdict(list)
    for o in outcomes:
        out[o.policy].append(o)
    return dict(out)


def _spread(values: list[float], digits: int = 0) -> str:
    """Mean over the seeds, with the lowest and highest seed when they differ."""
    if not values:
        return "-"
    mean = statistics.mean(values)
    low, high = min(values), max(values)
    fmt = f"{{:.{digits}f}}"
    text = fmt.format(mean)
    return text if low == high else f"{text} ({fmt.format(low)}-{fmt.format(high)})"


def _values(runs: list[PolicyOutcome], pick: Any) -> list[float]:
    return [float(v) for v in (pick(o) for o in runs) if v is not None]


def rows(result: LabResult) -> list[tuple[str, list[str]]]:
    """(figure, one cell per policy, then the reachable maximum)."""
    groups = by_policy(result.outcomes)
    columns = list(groups.values())
    maximum = _values(columns[0], lambda o: o.reachable_maximum) if columns else []

    def line(
        label: str, pick: Any, digits: int = 0, maximum_cell: str = ""
    ) -> tuple[str, list[str]]:
        return label, [_spread(_values(runs, pick), digits) for runs in columns] + [maximum_cell]

    out = [
        line("patients who slipped", lambda o: o.slipped),
        line(
            "rebooked before their stage deadline",
            lambda o: o.recovered_before_deadline,
            maximum_cell=_spread(maximum),
        ),
        line("share of the reachable maximum (%)", lambda o: 100 * o.share_of_maximum, 0, "100"),
        line("median days from slip to rebooking", lambda o: o.median_days_to_rebooking, 1),
        line("call tasks", lambda o: o.call_tasks),
        line("staff minutes", lambda o: o.staff_minutes),
        line("staff minutes per recovered patient", lambda o: o.staff_minutes_per_recovered, 1),
        line("messages (SMS + email)", lambda o: o.messages),
        line("SMS segments", lambda o: o.sms_segments),
        line("escalations", lambda o: o.escalations),
        line("contacts per recovered patient", lambda o: o.contacts_per_recovered, 1),
        line("transfers reported (not chased)", lambda o: o.transfers),
    ]
    out += [
        line("run: real seconds", lambda o: o.real_seconds),
        line("run: CPU seconds (lab and services)", lambda o: o.cpu_seconds or None),
        line("load: clock held back (real s)", lambda o: o.pacer.get("held_real_seconds")),
        line("load: call tasks past their window", lambda o: o.calls_window_passed),
        line("load: cases cleared by late input", lambda o: o.cases_cleared),
        line(
            "load: longest trigger-to-case (virtual min)", lambda o: o.pipeline_hop_virtual_minutes
        ),
        line("load: latest timer detection (virtual min)", lambda o: o.timer_late_virtual_minutes),
    ]
    for check in SAFETY:
        out.append(
            line(f"contacts {check.replace('_', ' ')} (must be 0)", lambda o, c=check: o.safety[c])
        )
    return out


def table(result: LabResult) -> str:
    names = [*list(by_policy(result.outcomes)), MAXIMUM]
    body = rows(result)
    c = result.config
    width = max(len(label) for label, _ in body)
    cols = [max(len(n), *(len(cells[i]) for _, cells in body)) for i, n in enumerate(names)]
    lines = [
        "",
        f"followup outcome lab: {c.patients} patients, {c.weeks} weeks, seeds "
        f"{','.join(map(str, c.seeds))} (mean, lowest-highest seed)",
        "=" * (width + sum(cols) + 2 * len(cols) + 2),
        " " * width + "  " + "  ".join(n.rjust(w) for n, w in zip(names, cols, strict=True)),
    ]
    for label, cells in body:
        lines.append(
            f"{label:<{width}}  " + "  ".join(v.rjust(w) for v, w in zip(cells, cols, strict=True))
        )
    return "\n".join(lines)


def markdown(result: LabResult) -> str:
    names = [*list(by_policy(result.outcomes)), MAXIMUM]
    out = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    out += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows(result)]
    return "\n".join(out)


def charts(result: LabResult, directory: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    groups = by_policy(result.outcomes)
    names = list(groups)
    maximum = (
        statistics.mean(o.reachable_maximum for o in result.outcomes) if result.outcomes else 0
    )
    colours = ["#9e9e9e", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    paths: dict[str, Path] = {}

    fig, ax = plt.subplots(figsize=(7, 4))
    means = [statistics.mean(o.recovered_before_deadline for o in groups[n]) for n in names]
    lows = [
        m - min(o.recovered_before_deadline for o in groups[n])
        for m, n in zip(means, names, strict=True)
    ]
    highs = [
        max(o.recovered_before_deadline for o in groups[n]) - m
        for m, n in zip(means, names, strict=True)
    ]
    ax.bar(
        [*names, MAXIMUM],
        [*means, maximum],
        color=[*colours[: len(names)], "#d9d9d9"],
        yerr=[[*lows, 0], [*highs, 0]],
        capsize=4,
    )
    for i, m in enumerate([*means, maximum]):
        ax.text(i, m, f"{m:.0f}", ha="center", va="bottom")
    paths["recovery"] = _save(
        fig,
        "patients rebooked before their deadline",
        "Recovery before the stage deadline (mean over seeds, lowest-highest)",
        directory / "recovery.png",
    )

    fig, ax = plt.subplots(figsize=(7, 4))
    for colour, name in zip(colours, names, strict=False):
        weeks = max(len(o.recoveries_by_week) for o in groups[name])
        curve = [
            statistics.mean(o.recoveries_by_week[w] for o in groups[name]) for w in range(weeks)
        ]
        ax.plot(range(1, weeks + 1), curve, marker="o", color=colour, label=name)
    ax.axhline(maximum, color="#999999", linestyle="--", label=MAXIMUM)
    ax.set_xlabel("week")
    ax.legend()
    paths["cumulative"] = _save(
        fig,
        "patients recovered (cumulative)",
        "Cumulative recoveries over the weeks",
        directory / "cumulative.png",
    )

    fig, ax = plt.subplots(figsize=(7, 4))
    per = [
        statistics.mean(_values(groups[n], lambda o: o.staff_minutes_per_recovered) or [0])
        for n in names
    ]
    ax.bar(names, per, color=colours[: len(names)])
    for i, m in enumerate(per):
        ax.text(i, m, f"{m:.1f}", ha="center", va="bottom")
    paths["staff"] = _save(
        fig,
        "front-desk minutes per recovered patient",
        "Staff time per recovered patient",
        directory / "staff-minutes.png",
    )
    return paths


def _save(fig: Any, ylabel: str, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax = fig.axes[0]
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def page(result: LabResult, images: dict[str, Path]) -> str:
    names = [*list(by_policy(result.outcomes)), MAXIMUM]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        + "".join(f"<td>{html.escape(v)}</td>" for v in cells)
        + "</tr>"
        for label, cells in rows(result)
    )
    imgs = "".join(
        f'<img alt="{k}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for k, p in images.items()
    )
    c = result.config
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>followup outcome lab</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child{{text-align:left}}img{{max-width:100%;margin:1em 0}}</style></head><body>
<h1>How many patients stay in treatment</h1>
<p>{c.patients} patients over {c.weeks} weeks, the same people under each policy, seeds
{", ".join(map(str, c.seeds))}: mean, and in brackets the lowest and highest seed. Computed from
what the services really did (topics, stand-ins, the scheduler's cases); the reachable maximum
is everyone who would rebook if reached at all. Patient model: {html.escape(c.model_file.name)}.</p>
<table><tr><th></th>{head}</tr>{body}</table>{imgs}</body></html>
"""


def write(result: LabResult, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    images = charts(result, directory)
    (directory / "lab.html").write_text(page(result, images))
    c = result.config
    body = {
        "config": {
            "patients": c.patients,
            "weeks": c.weeks,
            "seeds": list(c.seeds),
            "speed": c.speed,
            "leash_minutes": c.leash.total_seconds() / 60,
            "parallel": c.parallel,
            "policies": {name: str(path) for name, path in c.policies},
            "patient_model": str(c.model_file),
        },
        "runs": [o.as_json() for o in result.outcomes],
        "clinic_actions_failed": result.failed_actions,
        "real_seconds": result.real_seconds,
        # What else the machine did meanwhile: 1, 5 and 15 minutes, when the report was written.
        "load_average": [round(v, 1) for v in os.getloadavg()],
    }
    (directory / "lab.json").write_text(json.dumps(body, indent=2, default=str) + "\n")
    (directory / "lab.md").write_text(markdown(result) + "\n")
    return {**images, "html": directory / "lab.html", "json": directory / "lab.json"}


def load(path: Path) -> LabResult:
    """A result back from its lab.json, to render it again (``python -m demo.lab.render``)."""
    from dataclasses import fields

    from demo.lab.lab import LabConfig
    from demo.lab.model import PatientModel

    body = json.loads(path.read_text())
    c = body["config"]
    config = LabConfig(
        policies=[(name, Path(p)) for name, p in c["policies"].items()],
        patients=c["patients"],
        weeks=c["weeks"],
        seeds=tuple(c["seeds"]),
        speed=c["speed"],
        parallel=c.get("parallel", 1),
        model_file=Path(c["patient_model"]),
        output=path.parent,
    )
    names = {f.name for f in fields(PolicyOutcome)}
    outcomes = [PolicyOutcome(**{k: v for k, v in o.items() if k in names}) for o in body["runs"]]
    return LabResult(
        config,
        PatientModel.load(config.model_file),
        outcomes,
        body.get("clinic_actions_failed", 0),
        body.get("real_seconds", 0.0),
    )


def combine(results: list[LabResult]) -> LabResult:
    """Labs of the same population size and policies run apart (one seed each, say), as one."""
    first = results[0]
    seeds = tuple(seed for r in results for seed in r.config.seeds)
    config = replace(first.config, seeds=seeds)
    outcomes = sorted(
        (o for r in results for o in r.outcomes),
        key=lambda o: (seeds.index(o.seed), [n for n, _ in config.policies].index(o.policy)),
    )
    return LabResult(
        config,
        first.model,
        outcomes,
        sum(r.failed_actions for r in results),
        max(r.real_seconds for r in results),
    )


if __name__ == "__main__":
    import sys

    # python -m demo.lab.render LAB.JSON... [OUTPUT-DIR]: the report again, labs combined.
    args = [Path(a) for a in sys.argv[1:]]
    jsons = [a for a in args if a.suffix == ".json"]
    again = combine([load(j) for j in jsons])
    out = next((a for a in args if a.suffix != ".json"), again.config.output)
    print(table(again))
    print(write(again, out))
