"""`promtool check rules` and `promtool test rules` on the alert rules, plain and wrapped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from deploy import generate
from tests.support import ops


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ops.ops_tools()["PROMTOOL"], *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_rule_files_pass_promtool_check() -> None:
    result = promtool("check", "rules", *ops.RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", *ops.RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_prometheus_rule_carries_the_same_groups(tmp_path: Path) -> None:
    # What the operator loads is exactly what promtool checked and tested.
    spec = yaml.safe_load(generate.PROMETHEUS_RULE.read_text())["spec"]
    plain = tmp_path / "from-prometheusrule.yml"
    plain.write_text(yaml.safe_dump(spec))
    result = promtool("check", "rules", plain)
    assert result.returncode == 0, result.stdout + result.stderr
    groups = [g for path in ops.RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]
    assert spec["groups"] == groups


def test_promtool_refuses_a_broken_expression(tmp_path: Path) -> None:
    # The check above can fail: a rule with a PromQL syntax error is refused.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "sum(rate(up[5m]"}]}]}
        )
    )
    assert promtool("check", "rules", broken).returncode != 0
