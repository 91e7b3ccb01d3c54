"""Every overlay renders with kustomize, and every object validates offline: built-in kinds
against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are
errors), the Prometheus Operator's kinds against their CRD schemas (npm
@kubernetes-models/prometheus-operator, run by node). Then the rules the issue asks for."""

from __future__ import annotations

import functools
import json
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support import ops

OVERLAYS = sorted(p.name for p in (ops.DEPLOY / "k8s" / "overlays").iterdir() if p.is_dir())
# The oldest Kubernetes we support and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
SERVICES = ("tracker", "scheduler", "notifier")


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [ops.ops_tools()["KUSTOMIZE"], "build", str(ops.DEPLOY / "k8s" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def by_kind(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in render(overlay) if o["kind"] == kind}


def test_there_are_dev_and_prod_overlays() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_objects_validate_against_the_kubernetes_schemas(
    overlay: str, version: str
) -> None:
    problems = []
    for obj in render(overlay):
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_validate_against_their_crd_schemas(overlay: str) -> None:
    custom = [o for o in render(overlay) if o["kind"] in CUSTOM_KINDS]
    assert {o["kind"] for o in custom} == CUSTOM_KINDS
    problems = run_crd_validator(custom)
    assert problems == [], problems


def run_crd_validator(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    tools = ops.ops_tools()
    result = subprocess.run(
        ["node", str(ops.REPO / "tests" / "support" / "validate_crs.mjs")],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "OPS_NODE_MODULES": tools["OPS_NODE_MODULES"]},
    )
    assert result.returncode == 0, result.stderr
    problems: list[dict[str, str]] = json.loads(result.stdout)
    return problems


def test_the_validators_can_fail() -> None:
    # A typo in a Deployment and a wrongly typed ServiceMonitor field are both caught.
    deployment = dict(by_kind("dev", "Deployment")["followup-tracker"])
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    monitor = json.loads(json.dumps(by_kind("dev", "ServiceMonitor")["followup-tracker"]))
    monitor["spec"]["endpoints"][0]["interval"] = 30
    assert run_crd_validator([monitor])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_its_objects_and_they_select_its_pods(overlay: str) -> None:
    for service in SERVICES:
        name = f"followup-{service}"
        deployment = by_kind(overlay, "Deployment")[name]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        assert by_kind(overlay, "Service")[name]["spec"]["selector"].items() <= pod_labels.items()
        for kind in ("PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"):
            obj = by_kind(overlay, kind)[name]
            key = "podSelector" if kind == "NetworkPolicy" else "selector"
            wanted = obj["spec"][key]["matchLabels"]
            target = (
                pod_labels
                if kind != "ServiceMonitor"
                else by_kind(overlay, "Service")[name]["metadata"]["labels"]
            )
            assert wanted.items() <= target.items(), f"{kind}/{name} selects nothing"
        hpa = by_kind(overlay, "HorizontalPodAutoscaler")[name]
        assert hpa["spec"]["scaleTargetRef"]["name"] == name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_probed_bounded_non_root_read_only_and_shut_down_gracefully(
    overlay: str,
) -> None:
    for name, deployment in by_kind(overlay, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["terminationGracePeriodSeconds"] >= 30
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["lifecycle"]["preStop"]
        for key in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][key]), name
        service = name.removeprefix("followup-")
        assert container["args"] == ["python", "-m", f"services.{service}"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_committed_and_config_maps_exist(overlay: str) -> None:
    objects = render(overlay)
    assert not [o for o in objects if o["kind"] == "Secret"]
    config_maps = set(by_kind(overlay, "ConfigMap"))
    for name, deployment in by_kind(overlay, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        env_from = pod["containers"][0]["envFrom"]
        assert {"secretRef": {"name": name}} in env_from
        refs = [e["configMapRef"]["name"] for e in env_from if "configMapRef" in e]
        refs += [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v]
        assert refs and set(refs) <= config_maps, f"{name} refers to a missing ConfigMap"
    policy = next(c for n, c in by_kind(overlay, "ConfigMap").items() if "cadence" in n)
    assert yaml.safe_load(policy["data"]["policy.yaml"])  # the policy travels intact
