"""Every overlay renders with kustomize, and every object validates offline: built-in kinds
against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are
errors), the Prometheus Operator's and KEDA's kinds against their CRD schemas (npm
@kubernetes-models/prometheus-operator and /keda, run by node), Strimzi's and
CloudNativePG's against their CRD schemas vendored in deploy/k8s/crds (strict too). Then
the rules the issue asks for."""

from __future__ import annotations

import copy
import functools
import json
import posixpath
import re
import subprocess
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
NPM_KINDS = {
    "ServiceMonitor",
    "PrometheusRule",
    "AlertmanagerConfig",
    "ScaledObject",
    "TriggerAuthentication",
}  # node
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
    assert not insecure_clients(render("prod"))
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


PROD_OVERLAYS = [o for o in OVERLAYS if o.startswith("prod")]


def pod_env(objects: tuple[dict[str, Any], ...], deployment: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet makes it: ConfigMaps and Secrets of envFrom
    in order, then env (which wins), `$(VAR)` of an earlier entry expanded. A value from a
    Secret reads `secret:<name>/<key>` (Secrets are never committed), one of the pod's own
    fields `field:<path>`."""
    config = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config[source["configMapRef"]["name"]])
    for entry in container.get("env", []):
        if "valueFrom" in entry and "fieldRef" in entry["valueFrom"]:
            # The downward API (the pod's own name as Kafka's group.instance.id).
            env[entry["name"]] = f"field:{entry['valueFrom']['fieldRef']['fieldPath']}"
        elif "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = f"secret:{ref['name']}/{ref['key']}"
        else:
            env[entry["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: env.get(m.group(1), m.group(0)),
                entry["value"],
            )
    return env


def mounted_secret_file(deployment: dict[str, Any], path: str) -> str | None:
    """`<secret>/<key>` when path is a file of a Secret volume holding nothing else."""
    pod = deployment["spec"]["template"]["spec"]
    directory, file = posixpath.split(path)
    for mount in pod["containers"][0]["volumeMounts"]:
        if mount["mountPath"] != directory:
            continue
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        secret = volume.get("secret", {})
        items = secret.get("items", [])
        if len(items) == 1 and items[0]["path"] == file:  # only the CA, never the CA's key
            return f"{secret['secretName']}/{items[0]['key']}"
    return None


def insecure_clients(objects: tuple[dict[str, Any], ...]) -> list[str]:
    """Everything in a prod rendering that would reach Kafka or PostgreSQL other than over
    verified TLS as its own user: a plain listener, a service or a KEDA trigger on one, a
    password not from its KafkaUser's Secret, a database URL without verify-full."""
    found: list[str] = []
    (kafka,) = [o for o in objects if o["kind"] == "Kafka"]
    cluster = kafka["metadata"]["name"]
    listeners = kafka["spec"]["kafka"]["listeners"]
    found += [f"listener {x['name']} without TLS" for x in listeners if not x["tls"]]
    found += [
        f"listener {x['name']} without users" for x in listeners if not x.get("authentication")
    ]
    scram = {
        x["port"]
        for x in listeners
        if x["tls"] and x.get("authentication", {}).get("type") == "scram-sha-512"
    }
    prefix = kafka["spec"]["entityOperator"]["userOperator"].get("secretPrefix", "")
    users = {
        o["metadata"]["name"]
        for o in objects
        if o["kind"] == "KafkaUser" and o["spec"]["authentication"]["type"] == "scram-sha-512"
    }
    (db,) = [o for o in objects if o["kind"] == "Cluster"]
    own_secrets = {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"}
    assert not own_secrets & {prefix + u for u in users}, (
        "a user's Secret would overwrite a service's"
    )

    def bootstrap_problem(who: str, bootstrap: str) -> list[str]:
        host, _, port = bootstrap.rpartition(":")
        if host != f"{cluster}-kafka-bootstrap" or int(port) not in scram:
            return [f"{who}: {bootstrap} is not the TLS + SCRAM listener"]
        return []

    for name, deployment in (
        (o["metadata"]["name"], o) for o in objects if o["kind"] == "Deployment"
    ):
        env = pod_env(objects, deployment)
        found += bootstrap_problem(name, env["FOLLOWUP_KAFKA_BOOTSTRAP"])
        if env.get("FOLLOWUP_KAFKA_SECURITY_PROTOCOL") != "SASL_SSL":
            found.append(f"{name}: not SASL_SSL")
        if env.get("FOLLOWUP_KAFKA_SASL_MECHANISM") != "SCRAM-SHA-512":
            found.append(f"{name}: not SCRAM-SHA-512")
        user = env.get("FOLLOWUP_KAFKA_SASL_USERNAME", "")
        if user not in users:
            found.append(f"{name}: {user!r} is no KafkaUser")
        if env.get("FOLLOWUP_KAFKA_SASL_PASSWORD") != f"secret:{prefix}{user}/password":
            found.append(f"{name}: the password is not its KafkaUser's")
        ca = mounted_secret_file(deployment, env.get("FOLLOWUP_KAFKA_SSL_CAFILE", ""))
        if (
            ca != f"{cluster}-cluster-ca-cert/ca.crt"
            or env.get("FOLLOWUP_KAFKA_SSL_CHECK_HOSTNAME") != "true"
        ):
            found.append(f"{name}: the broker is not checked against the cluster CA")
        url = env.get("FOLLOWUP_DATABASE_URL", "")
        if not url.startswith(f"secret:{db['metadata']['name']}-app/uri?"):
            found.append(f"{name}: the database URL is not the operator's")
        query = parse_qs(urlsplit(url.replace("secret:", "x://", 1)).query)
        if (
            query.get("sslmode") != ["verify-full"]
            or mounted_secret_file(deployment, query.get("sslrootcert", [""])[0])
            != f"{db['metadata']['name']}-ca/ca.crt"
        ):
            found.append(f"{name}: PostgreSQL is not verify-full against the cluster's CA")

    auths = {
        o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "TriggerAuthentication"
    }
    for scaled in (o for o in objects if o["kind"] == "ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]["name"]
        for trigger in (t for t in scaled["spec"]["triggers"] if t["type"] == "kafka"):
            meta = trigger["metadata"]
            found += bootstrap_problem(f"ScaledObject/{target}", meta["bootstrapServers"])
            if (meta.get("sasl"), meta.get("tls")) != ("scram_sha512", "enable"):
                found.append(f"ScaledObject/{target}: not TLS + SCRAM-SHA-512")
            auth = auths.get(trigger.get("authenticationRef", {}).get("name", ""), {})
            secrets = {
                r["parameter"]: f"{r['name']}/{r['key']}" for r in auth.get("secretTargetRef", [])
            }
            username = {e["parameter"]: e["name"] for e in auth.get("env", [])}.get("username")
            if (
                secrets
                != {
                    "password": f"{prefix}{target}/password",
                    "ca": f"{cluster}-cluster-ca-cert/ca.crt",
                }
                or username != "FOLLOWUP_KAFKA_SASL_USERNAME"
            ):
                found.append(f"ScaledObject/{target}: not its service's KafkaUser and CA")
    return found


@pytest.mark.parametrize("overlay", PROD_OVERLAYS)
def test_prod_reaches_kafka_and_postgresql_over_verified_tls_as_each_services_user(
    overlay: str,
) -> None:
    objects = render(overlay)
    assert insecure_clients(objects) == []
    # Each service is its own KafkaUser.
    users = {
        pod_env(objects, d)["FOLLOWUP_KAFKA_SASL_USERNAME"]
        for d in by_kind(overlay, "Deployment").values()
    }
    assert users == {f"followup-{s}" for s in SERVICES}


def test_the_secure_client_check_finds_a_plain_listener_and_its_users() -> None:
    objects = copy.deepcopy(list(render("prod-keda")))
    (kafka,) = [o for o in objects if o["kind"] == "Kafka"]
    kafka["spec"]["kafka"]["listeners"].append(
        {"name": "plain", "port": 9092, "type": "internal", "tls": False}
    )
    assert insecure_clients(tuple(objects)) == [
        "listener plain without TLS",
        "listener plain without users",
    ]
    for o in objects:
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("followup-config"):
            o["data"]["FOLLOWUP_KAFKA_BOOTSTRAP"] = "followup-kafka-kafka-bootstrap:9092"
        if o["kind"] == "ScaledObject" and o["metadata"]["name"] == "followup-notifier":
            o["spec"]["triggers"][0]["metadata"]["tls"] = "disable"
    found = insecure_clients(tuple(objects))
    for service in SERVICES:
        plain = "followup-kafka-kafka-bootstrap:9092"
        assert f"followup-{service}: {plain} is not the TLS + SCRAM listener" in found
    assert "ScaledObject/followup-notifier: not TLS + SCRAM-SHA-512" in found
