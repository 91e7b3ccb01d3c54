"""The image and the Compose file, checked without Docker (no engine on these machines):
hadolint lints the Dockerfile; the Compose file is parsed by compose-spec (the Compose
Specification's data model: unknown keys and bad values are refused), and everything it
refers to is checked here: build context, bind-mounted files, dependencies, the Prometheus
configuration (promtool), Grafana's provisioning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import compose_spec
import pytest
import yaml

from tests.support import ops

HADOLINT = Path(sys.executable).parent / "hadolint"
COMPOSE = ops.REPO / "compose.yaml"
SERVICES = ("tracker", "scheduler", "notifier")


def final_stage(dockerfile: str) -> list[tuple[str, str]]:
    """The instructions of the last build stage, continuation lines joined."""
    joined = dockerfile.replace("\\\n", " ")
    stage: list[tuple[str, str]] = []
    for line in joined.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, argument = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stage = []
        stage.append((instruction.upper(), argument.strip()))
    return stage


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # resolves << merge keys
    return loaded


def test_hadolint_passes_the_dockerfile() -> None:
    result = hadolint(ops.REPO / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD python -m x\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the :latest tag


def test_the_image_runs_as_a_non_root_user_and_each_service_has_an_entry_point() -> None:
    stage = final_stage((ops.REPO / "Dockerfile").read_text())
    user = next(arg for instruction, arg in stage if instruction == "USER")
    assert not user.startswith(("root", "0"))
    for service in SERVICES:
        assert (ops.REPO / "services" / service / "__main__.py").exists()


def test_the_compose_file_is_valid_compose() -> None:
    parsed = compose_spec.PyCompose.from_json(json.dumps(compose()))
    assert set(parsed.service_names()) == {
        "kafka",
        "postgres",
        "prometheus",
        "grafana",
        *SERVICES,
    }


def test_compose_spec_refuses_a_typo() -> None:
    with pytest.raises(ValueError):
        compose_spec.PyCompose.from_json(
            json.dumps({"services": {"a": {"image": "x", "restrat": "always"}}})
        )


def test_compose_references_resolve() -> None:
    spec = compose()
    volumes = set(spec.get("volumes", {}))
    for name, service in spec["services"].items():
        for dependency in service.get("depends_on", []):
            assert dependency in spec["services"], f"{name} depends on unknown {dependency}"
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (ops.REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} uses undeclared volume {source}"
        if "build" in service:
            assert (ops.REPO / service["build"] / "Dockerfile").exists()
    for service in SERVICES:
        command = spec["services"][service]["command"]
        assert command == ["python", "-m", f"services.{service}"]
        env = spec["services"][service]["environment"]
        assert env["FOLLOWUP_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert spec["services"][service]["read_only"] is True


def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    config = yaml.safe_load((ops.DEPLOY / "compose" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {f"followup-{s}" for s in SERVICES} <= jobs  # the names the rules select on
    # The container path of the rules, pointed at the repository's copy.
    config["rule_files"] = [str(path) for path in ops.RULE_FILES]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [ops.ops_tools()["PROMTOOL"], "check", "config", str(local)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisions_the_dashboards_and_their_datasource() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = dict(m.rsplit(":", 1)[0].split(":", 1) for m in grafana["volumes"] if ":ro" in m)
    provisioning = ops.REPO / mounts_source(mounts, "/etc/grafana/provisioning")
    providers = yaml.safe_load((provisioning / "dashboards" / "followup.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert (ops.REPO / mounts_source(mounts, path)) == ops.DEPLOY / "grafana" / "dashboards"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert [d for d in datasources["datasources"] if d["type"] == "prometheus" and d["isDefault"]]
    for dashboard in ops.dashboards():
        # The dashboards pick any Prometheus data source, the provisioned default included.
        variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
        assert (variable["type"], variable["query"]) == ("datasource", "prometheus")


def mounts_source(mounts: dict[str, str], target: str) -> Path:
    return Path(next(source for source, t in mounts.items() if t == target))
