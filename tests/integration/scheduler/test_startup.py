"""Starting the scheduler process: a wrong policy file is refused with its path and line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.infra import REPO

pytestmark = pytest.mark.integration


def test_a_wrong_policy_file_stops_the_process_naming_file_and_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    text = (REPO / "services/scheduler/policy.yaml").read_text(encoding="utf-8")
    policy.write_text(text.replace("channel: sms}", "channel: pigeon}", 1), encoding="utf-8")
    wrong_line = next(
        n for n, line in enumerate(policy.read_text().splitlines(), 1) if "pigeon" in line
    )
    env = {**os.environ, "FOLLOWUP_POLICY_PATH": str(policy), "FOLLOWUP_HTTP_PORT": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "services.scheduler"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"{policy}:{wrong_line}:" in done.stderr
    assert done.stderr.count("\n") == 1  # one line for the operator, no traceback
