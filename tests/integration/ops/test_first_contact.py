"""A dependency that is not there at start-up, or a port already taken, stops a service with
one line naming the dependency, the address and the variable to set: no traceback. The
processes run side by side; the taken port is the shared broker's own."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import infra

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
TAKEN = infra.KAFKA_BOOTSTRAP.rsplit(":", 1)[1]  # a port something listens on
CASES = [
    (service, env, variable)
    for service in ("tracker", "scheduler", "notifier")
    for env, variable in (
        ({"FOLLOWUP_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, "FOLLOWUP_KAFKA_BOOTSTRAP"),
        (
            {"FOLLOWUP_DATABASE_URL": "postgresql://followup:pw@127.0.0.1:1/followup"},
            "FOLLOWUP_DATABASE_URL",
        ),
        ({"FOLLOWUP_HTTP_PORT": TAKEN}, "FOLLOWUP_HTTP_PORT"),
        ({"FOLLOWUP_MLLP_PORT": TAKEN}, "FOLLOWUP_MLLP_PORT"),
    )
    # The tracker has no database; only the tracker listens for MLLP.
    if not (service == "tracker" and "DATABASE" in variable)
    and not (service != "tracker" and "MLLP" in variable)
]


def test_each_start_up_failure_is_one_line_naming_the_variable() -> None:
    infra.ensure_up()
    unique = uuid.uuid4().hex[:8]
    base = {
        **os.environ,
        "FOLLOWUP_KAFKA_BOOTSTRAP": infra.KAFKA_BOOTSTRAP,
        "FOLLOWUP_DATABASE_URL": infra.DATABASE_URL,
        "FOLLOWUP_TOPIC_PREFIX": f"t{unique}.",
        "FOLLOWUP_HTTP_PORT": "0",
        "FOLLOWUP_MLLP_PORT": "0",
        "FOLLOWUP_LINK_SECRET": "test-link-secret",
        "FOLLOWUP_LOG_FORMAT": "console",
    }
    running = [
        (
            service,
            variable,
            subprocess.Popen(
                [sys.executable, "-m", f"services.{service}"],
                cwd=REPO,
                env={**base, "FOLLOWUP_DB_SCHEMA": f"t_{unique}_{service}", **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for service, env, variable in CASES
    ]
    for service, variable, process in running:
        try:
            out, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"{service} with a bad {variable} kept running") from None
        assert process.returncode == 2, (service, variable, err[-2000:])
        assert "Traceback" not in out + err, (service, variable)
        lines = [line for line in err.splitlines() if line.startswith("cannot start:")]
        assert len(lines) == 1, (service, variable, err[-2000:])
        assert variable in lines[0] and err.strip().endswith(lines[0]), (service, lines[0])
        assert "pw@" not in out + err  # the URL's password is never shown
