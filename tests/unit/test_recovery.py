"""The one definition of the recovery rate (common/recovery.py) and how the demo report
shows it."""

from __future__ import annotations

from common.recovery import recovery_rate, recovery_rate_of, recovery_rate_promql
from demo.report import Observed, compute, table
from demo.scenario import build


def test_cases_closed_recovered_of_those_closed_cleared_left_out() -> None:
    assert recovery_rate({"recovered": 3, "declined": 4, "superseded": 1, "cleared": 5}) == 3 / 8
    assert recovery_rate_of(["recovered", "cleared", "unreachable", "recovered"]) == 2 / 3
    assert recovery_rate({"declined": 2}) == 0.0
    # Nothing closed, or only false no-shows: no rate at all, not 0 %.
    assert recovery_rate({}) is None and recovery_rate_of(["cleared"]) is None


def test_the_promql_counts_the_same_resolutions() -> None:
    expr = recovery_rate_promql('namespace="x"', "1d", by="department")
    assert 'resolution="recovered"' in expr and 'resolution!~"cleared"' in expr
    assert expr.count("sum by (department)") == 3 and 'namespace="x", ' in expr


def test_the_report_without_a_closed_case_says_so() -> None:
    open_case = {"case_id": "c", "patient_id": "p", "state": "open", "resolution": None}
    report = compute(Observed(cases=[open_case]), build(patients=3, days=1, seed=1))
    assert report["recovery_rate"] is None and report["cases_closed_counted"] == 0
    assert "0 recovered of 0 closed" in table(report, [], {})
