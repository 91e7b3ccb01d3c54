"""Every overlay renders with kustomize, and every object validates offline: built-in kinds
against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are
errors), the Prometheus Operator's and KEDA's kinds against their CRD schemas (npm
@kubernetes-models/prometheus-operator and /keda, run by node), Strimzi's and
CloudNativePG's against their CRD schemas vendored in deploy/k8s/crds (strict too). Then
the rules the issue asks for."""

from __future__ import annotations

import functools
import json
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy.k8s.crds.validate import problems as vendored_problems
from deploy.k8s.strimzi import prod_environment
from schemas.topics import OPERATED, TopicLayout, TopicNames
from tests.support import ops

OVERLAYS = sorted(p.name for p in (ops.DEPLOY / "k8s" / "overlays").iterdir() if p.is_dir())
# The oldest Kubernetes we support and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
NPM_KINDS = {"ServiceMonitor", "PrometheusRule", "AlertmanagerConfig", "ScaledObject"}  # node
VENDORED_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Cluster"}
CUSTOM_KINDS = NPM_KINDS | VENDORED_KINDS
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
    objects = render(overlay)
    kinds = {o["kind"] for o in objects}
    assert {"ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"} <= kinds
    assert kinds & CUSTOM_KINDS == kinds - BUILTIN_KINDS, kinds - BUILTIN_KINDS - CUSTOM_KINDS
    problems = run_crd_validator([o for o in objects if o["kind"] in NPM_KINDS])
    assert problems == [], problems
    vendored = [p for o in objects if o["kind"] in VENDORED_KINDS for p in vendored_problems(o)]
    assert vendored == [], vendored


BUILTIN_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "Deployment",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
    "Ingress",
}


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
    scaled = json.loads(json.dumps(by_kind("prod-keda", "ScaledObject")["followup-scheduler"]))
    scaled["spec"]["maxReplicaCount"] = "six"
    assert run_crd_validator([scaled])
    # A wrongly typed Kafka field and a misspelt Cluster field.
    kafka = json.loads(json.dumps(by_kind("prod", "Kafka")["followup-kafka"]))
    kafka["spec"]["kafka"]["listeners"][0]["port"] = "9092"
    assert vendored_problems(kafka) == [
        "Kafka/followup-kafka: spec.kafka.listeners.0.port: '9092' is not of type 'integer'"
    ]
    cluster = json.loads(json.dumps(by_kind("prod", "Cluster")["followup-db"]))
    cluster["spec"]["instance"] = 3
    assert vendored_problems(cluster) == ["Cluster/followup-db: spec.instance: unknown field"]


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
        scaler = scaler_of(overlay, name)
        assert scaler["spec"]["scaleTargetRef"]["name"] == name


def scaler_of(overlay: str, deployment: str) -> dict[str, Any]:
    """The HorizontalPodAutoscaler, or with KEDA the ScaledObject, that sizes a Deployment."""
    scalers = [
        o
        for o in render(overlay)
        if o["kind"] in {"HorizontalPodAutoscaler", "ScaledObject"}
        and o["spec"]["scaleTargetRef"]["name"] == deployment
    ]
    assert len(scalers) == 1, f"{deployment}: {len(scalers)} autoscalers"
    return scalers[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_deployment_states_replicas_beside_its_autoscaler(overlay: str) -> None:
    # An apply that states replicas resets a scaled Deployment and rebalances its consumers.
    for name, deployment in by_kind(overlay, "Deployment").items():
        assert scaler_of(overlay, name)
        assert "replicas" not in deployment["spec"], name


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


def test_prod_runs_kafka_and_postgresql_through_their_operators_with_topics_as_code() -> None:
    assert set(by_kind("prod", "Kafka")) == {"followup-kafka"}
    (pool,) = by_kind("prod", "KafkaNodePool").values()
    assert pool["spec"]["replicas"] >= 3 and set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert set(by_kind("prod", "KafkaUser")) >= {f"followup-{s}" for s in SERVICES}
    (db,) = by_kind("prod", "Cluster").values()
    assert db["spec"]["instances"] >= 3
    # The services check their topics against the same layout the KafkaTopics state.
    config = by_kind("prod", "ConfigMap")
    shared = next(c for n, c in config.items() if n.startswith("followup-config"))["data"]
    assert shared["FOLLOWUP_TOPICS_AUTO_CREATE"] == "false"
    assert shared["FOLLOWUP_KAFKA_BOOTSTRAP"].startswith("followup-kafka-kafka-bootstrap:")
    layout = TopicLayout.from_env(shared)
    assert layout.replication_factor == 3 and layout.min_insync_replicas == 2
    assert prod_environment().items() >= {"FOLLOWUP_TOPICS_AUTO_CREATE": "false"}.items()
    topics = {t["spec"]["topicName"]: t["spec"] for t in by_kind("prod", "KafkaTopic").values()}
    for spec in OPERATED:
        wanted = layout.config(spec, TopicNames())
        assert topics[wanted.name] == {
            "topicName": wanted.name,
            "partitions": wanted.partitions,
            "replicas": wanted.replication_factor,
            "config": dict(wanted.configs),
        }


def _ingress_routes(overlay: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(host, path) -> (pathType, Service), for every Ingress, after checking its TLS."""
    routes = {}
    for name, ingress in by_kind(overlay, "Ingress").items():
        tls_hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
        for rule in ingress["spec"]["rules"]:
            assert rule["host"] in tls_hosts, f"{name}: {rule['host']} without TLS"
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["port"] == {"name": "http"}
                routes[(rule["host"], path["path"])] = (path["pathType"], backend["name"])
    return routes


def test_prod_publishes_fhir_and_provider_callbacks_over_https_and_nothing_else() -> None:
    routes = _ingress_routes("prod")
    by_path = {path: target for (_host, path), target in routes.items()}
    assert by_path["/fhir"] == ("Prefix", "followup-tracker")
    for callback in ("/sms/status", "/sms/inbound", "/unsubscribe"):
        assert by_path[callback] == ("Exact", "followup-notifier")
    assert not [p for p in by_path if p in {"/", "/metrics", "/readyz", "/healthz", "/cases"}]
    # Providers sign the URL they call: the notifier must know it as its public base URL.
    notifier = next(c for n, c in by_kind("prod", "ConfigMap").items() if "notifier" in n)
    public = notifier["data"]["FOLLOWUP_PUBLIC_BASE_URL"]
    assert public.startswith("https://")
    callback_host = next(h for (h, p) in routes if p == "/sms/status")
    assert public == f"https://{callback_host}"


def test_prod_admits_mllp_from_the_hospitals_network_only() -> None:
    service = by_kind("prod", "Service")["followup-tracker-mllp"]
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    pods = by_kind("prod", "Deployment")["followup-tracker"]["spec"]["template"]["metadata"]
    assert service["spec"]["selector"].items() <= pods["labels"].items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["mllp"]
    allowed = service["spec"]["loadBalancerSourceRanges"]
    policy = by_kind("prod", "NetworkPolicy")["followup-tracker"]["spec"]["ingress"]
    mllp_from = [
        peer["ipBlock"]["cidr"]
        for rule in policy
        if {"port": "mllp", "protocol": "TCP"} in rule["ports"]
        for peer in rule["from"]
        if "ipBlock" in peer
    ]
    assert mllp_from == allowed


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return int(float(quantity.removesuffix(unit)) * factor)
    return int(quantity)


def test_prod_sizes_the_tracker_as_its_benchmark_measured() -> None:
    # services/tracker/README.md, Sizing: a million tracked appointments hold 1.36 GiB and
    # peak at 1.7 GB in the benchmark; "a replica wants ~2 GB".
    pod = by_kind("prod", "Deployment")["followup-tracker"]["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert _bytes(resources["requests"]["memory"]) >= 2 * 10**9
    assert _bytes(resources["limits"]["memory"]) >= _bytes(resources["requests"]["memory"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_clinic_alerts_go_to_the_clinic_and_never_page(overlay: str) -> None:
    route = by_kind(overlay, "AlertmanagerConfig")["followup"]["spec"]["route"]

    def receiver(labels: dict[str, str]) -> str:
        # Alertmanager's walk: the first matching child route wins (continue: false).
        for child in route["routes"]:
            if all(labels.get(m["name"]) == m["value"] for m in child["matchers"]):
                return str(child["receiver"])
        return str(route["receiver"])

    for alert in ops.alerts():
        wanted = (
            "clinic"
            if alert.labels.get("audience") == "clinic"
            else "pager"
            if alert.labels["severity"] == "critical"
            else "oncall"
        )
        assert receiver(alert.labels) == wanted, alert.name
    assert (
        receiver(
            {"alertname": "FollowupDeadlineMissed", "severity": "critical", "audience": "clinic"}
        )
        == "clinic"
    )
