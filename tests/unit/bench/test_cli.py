"""`python -m bench` names its suites and refuses one it does not have."""

from __future__ import annotations

import pytest

from bench.__main__ import SUITES, main


def test_every_issue_suite_is_registered() -> None:
    assert list(SUITES) == [
        "codec",
        "tracker",
        "tracker-ops",
        "tracker-restore",
        "scheduler",
        "notifier",
        "e2e",
        "sites",
    ]


def test_an_unknown_suite_is_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["tracker", "nope"])
    assert exit_info.value.code == 2
    assert "unknown suite(s) nope" in capsys.readouterr().err
