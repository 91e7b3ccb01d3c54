"""One recovery rate (common/recovery.py): the clinic dashboard's panels, run by Prometheus's
own engine (promtool) over the counters a known set of closed cases leaves, give what the
demo report computes from the same cases."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import yaml

from common.recovery import CLOSED_METRIC, recovery_rate_of
from demo.report import Observed, compute
from demo.scenario import build
from tests.support import ops

DEPARTMENT_CLOSED = "followup_scheduler_department_cases_closed_total"
# (department, resolution or None while open, minute it closed): 8 counted, 3 recovered;
# dental 1 of 4, surgery 2 of 4; the cleared ones (false no-shows) and the open one do not
# count. Binary fractions, so the engine's division is exact.
CASES = [
    ("dental", "recovered", 5),
    ("dental", "declined", 7),
    ("dental", "unreachable", 9),
    ("dental", "superseded", 11),
    ("dental", "cleared", 12),
    ("surgery", "recovered", 13),
    ("surgery", "recovered", 17),
    ("surgery", "escalated", 19),
    ("surgery", "opted_out", 23),
    ("surgery", "cleared", 25),
    ("surgery", None, None),
]
MINUTES = 40


def report_cases() -> list[dict[str, object]]:
    return [
        {
            "case_id": f"case-{n}",
            "patient_id": f"pat-{n}",
            "department": department,
            "state": "open" if resolution is None else "closed",
            "resolution": resolution,
        }
        for n, (department, resolution, _) in enumerate(CASES)
    ]


def counter_series(metric: str, labels: dict[str, str], closings: list[int]) -> dict[str, str]:
    """A counter scraped each minute from 0, one up at each closing minute."""
    values = [sum(1 for m in closings if m <= minute) for minute in range(MINUTES + 1)]
    selector = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {
        "series": f'{metric}{{job="followup-scheduler", {selector}}}',
        "values": " ".join(map(str, values)),
    }


def input_series() -> list[dict[str, str]]:
    by_resolution: dict[str, list[int]] = {}
    by_department: dict[tuple[str, str], list[int]] = {}
    for department, resolution, minute in CASES:
        if resolution is None or minute is None:
            continue
        by_resolution.setdefault(resolution, []).append(minute)
        by_department.setdefault((department, resolution), []).append(minute)
    return [
        counter_series(CLOSED_METRIC, {"resolution": r}, m) for r, m in by_resolution.items()
    ] + [
        counter_series(DEPARTMENT_CLOSED, {"department": d, "resolution": r}, m)
        for (d, r), m in by_department.items()
    ]


def panel_expr(title: str) -> str:
    (expr,) = [
        p.expr
        for p in ops.panel_queries()
        if p.dashboard == "followup / clinic" and p.panel == title
    ]
    return ops.concrete(expr, range_=f"{MINUTES}m")


def test_the_dashboard_and_the_demo_report_agree_on_the_recovery_rate(tmp_path: Path) -> None:
    report = compute(Observed(cases=report_cases()), build(patients=3, days=1, seed=1))
    assert (report["cases_recovered"], report["cases_closed_counted"]) == (3, 8)
    assert report["recovery_rate"] == 0.375
    per_department = {
        department: recovery_rate_of(
            str(r) for d, r, _ in CASES if d == department and r is not None
        )
        for department in ("dental", "surgery")
    }
    assert per_department == {"dental": 0.25, "surgery": 0.5}

    at = f"{MINUTES}m"
    test = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series(),
                "promql_expr_test": [
                    {
                        "expr": panel_expr("Recovery rate"),
                        "eval_time": at,
                        "exp_samples": [{"labels": "{}", "value": report["recovery_rate"]}],
                    },
                    {
                        "expr": panel_expr("Recovery rate by department"),
                        "eval_time": at,
                        "exp_samples": [
                            {"labels": f'{{department="{d}"}}', "value": rate}
                            for d, rate in per_department.items()
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "recovery.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = ops_promtool("test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_recovery_yet_is_a_rate_of_zero_on_both_sides(tmp_path: Path) -> None:
    cases = [c for c in report_cases() if c["resolution"] != "recovered"]
    report = compute(Observed(cases=cases), build(patients=3, days=1, seed=1))
    assert report["recovery_rate"] == 0.0
    closings = Counter(str(c["resolution"]) for c in cases if c["resolution"])
    test = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    counter_series(CLOSED_METRIC, {"resolution": r}, [5] * n)
                    for r, n in closings.items()
                ],
                "promql_expr_test": [
                    {
                        "expr": panel_expr("Recovery rate"),
                        "eval_time": f"{MINUTES}m",
                        "exp_samples": [{"labels": "{}", "value": 0}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "none.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = ops_promtool("test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def ops_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ops.ops_tools()["PROMTOOL"], *map(str, args)], capture_output=True, text=True, timeout=120
    )
