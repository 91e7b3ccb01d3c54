"""Every entry point answers --help with its usage and exits 0 without starting anything
(no broker or database is reachable from this test: FOLLOWUP_KAFKA_BOOTSTRAP points at a
closed port, so a service that started would fail instead)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINTS = {
    "services.tracker": "FOLLOWUP_MLLP_PORT",
    "services.scheduler": "FOLLOWUP_POLICY_PATH",
    "services.notifier": "FOLLOWUP_SMS_PRIMARY_URL",
    "standins": "--port",
    "demo": "--patients",
    "demo.simulator": "usage",
    "followup_admin": "topics",
    "bench": "SUITE",
}
NOWHERE = {
    "FOLLOWUP_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    "FOLLOWUP_DATABASE_URL": "postgresql://u@127.0.0.1:1/db",
}


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**os.environ, **NOWHERE},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_help_prints_usage_and_exits_0(module: str) -> None:
    done = run(module, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()
    assert ENTRY_POINTS[module] in done.stdout
    assert done.stderr == ""  # nothing tried to connect, nothing logged


@pytest.mark.parametrize("module", ["services.tracker", "services.scheduler", "services.notifier"])
def test_a_service_lists_its_security_settings_and_refuses_arguments(module: str) -> None:
    shown = run(module, "--help").stdout
    for variable in ("FOLLOWUP_KAFKA_SECURITY_PROTOCOL", "FOLLOWUP_KAFKA_SASL_MECHANISM"):
        assert f"{variable}=" in shown
    done = run(module, "--port", "1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"configuration error: python -m {module} takes no arguments (got '--port'); see --help"
    ]
