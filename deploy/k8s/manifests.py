"""The Kubernetes base for the three services, as data: one description per service and one
function per kind of object. `python -m deploy.generate` writes deploy/k8s/base/<service>.yaml;
the overlays (deploy/k8s/overlays/dev, prod) patch them with kustomize.

Written as code because the three services share every rule (probes, security context,
graceful shutdown, monitoring) and differ only in ports, peers and secrets: a rule changed
here changes for all three, and a test renders and validates the result.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import time
from pathlib import PurePath
from typing import Any

from common.config import Settings, env_name
from services.notifier.app import NotifierSettings
from services.scheduler.app import SchedulerSettings
from services.tracker.app import TrackerSettings

PART_OF = "followup"
IMAGE = "followup"  # overlays pin newName/newTag
MONITORING_NAMESPACE = "monitoring"  # where Prometheus runs; overlays may change it
INGRESS_NAMESPACE = "ingress-nginx"  # where the ingress controller runs
KAFKA_PORT = 9092  # plain (dev, compose)
KAFKA_TLS_PORT = 9093  # Strimzi's tls listener, TLS + SCRAM (prod)
POSTGRES_PORT = 5432


@dataclass(frozen=True)
class Port:
    name: str
    port: int
    # Who may connect besides Prometheus: "namespace" (followup's own pods), "ingress"
    # (the ingress controller: provider callbacks, FHIR from the hospital), "integration"
    # (pods labelled followup.io/integration=true, e.g. an HL7 interface engine).
    from_: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # tracker | scheduler | notifier
    http_port: int
    settings: type[Settings]
    # Settings read from the service's Secret (created out of band, never committed);
    # every other setting is in a ConfigMap (config_env) or the Deployment's env.
    secret_keys: tuple[str, ...]
    extra_ports: tuple[Port, ...] = ()
    http_from: tuple[str, ...] = ("namespace",)
    egress_ports: tuple[int, ...] = (KAFKA_PORT, KAFKA_TLS_PORT, POSTGRES_PORT)
    env: dict[str, str] = field(default_factory=dict)
    # Env set from the pod's own fields (downward API): name -> fieldPath.
    pod_field_env: dict[str, str] = field(default_factory=dict)
    policy: bool = False  # mounts the cadence policy ConfigMap
    description: str = ""

    @property
    def full(self) -> str:
        return f"followup-{self.name}"

    @property
    def secret(self) -> str:
        return f"followup-{self.name}"


# Each service's own Kafka credentials (a Strimzi KafkaUser's password, a client key's).
KAFKA_SECRETS = ("kafka_sasl_password", "kafka_ssl_key_password")

SERVICES = (
    ServiceSpec(
        "tracker",
        8081,
        TrackerSettings,
        ("database_url", *KAFKA_SECRETS, "ingest_token"),
        extra_ports=(Port("mllp", 2575, ("integration",)),),
        http_from=("namespace", "ingress", "integration"),
        env={"FOLLOWUP_MLLP_HOST": "0.0.0.0", "FOLLOWUP_MLLP_PORT": "2575"},
        # Static group membership: a container restarted in its pod (a crash, an OOM kill)
        # takes its partitions back at once instead of after the session timeout.
        pod_field_env={"FOLLOWUP_GROUP_INSTANCE_ID": "metadata.name"},
        description="HL7 v2 over MLLP, FHIR over HTTP and Kafka in; triggers out.",
    ),
    ServiceSpec(
        "scheduler",
        8082,
        SchedulerSettings,
        ("database_url", *KAFKA_SECRETS, "api_token"),
        env={"FOLLOWUP_POLICY_PATH": "/etc/followup/policy/policy.yaml"},
        policy=True,
        description="Cases, cadence and stage deadlines; notification commands out.",
    ),
    ServiceSpec(
        "notifier",
        8083,
        NotifierSettings,
        (
            "database_url",
            *KAFKA_SECRETS,
            "api_token",
            "link_secret",
            "sms_primary_sid",
            "sms_primary_token",
            "sms_secondary_sid",
            "sms_secondary_token",
            "smtp_username",
            "smtp_password",
            "webhook_secret",
            "slots_fhir_token",
            # The patient's chat messengers (issue 21).
            "whatsapp_access_token",
            "whatsapp_app_secret",
            "whatsapp_verify_token",
            "telegram_bot_token",
            "telegram_webhook_secret",
            "viber_auth_token",
        ),
        http_from=("namespace", "ingress"),
        # HTTPS to SMS providers, chat messengers, webhooks and the hospital's FHIR server,
        # SMTP submission to the mail relay, MLLP to the hospital's HL7 scheduling interface
        # (rebooking).
        egress_ports=(KAFKA_PORT, KAFKA_TLS_PORT, POSTGRES_PORT, 443, 587, 465, 2576),
        description="SMS, email, chat messages and call tasks out; receipts and replies in.",
    ),
)


# Read by every service: the shared followup-config ConfigMap (base/kustomization.yaml).
SHARED = frozenset(Settings.model_fields)
# Set per pod by the Deployment itself (ports the probes and Service refer to).
POD_ENV = frozenset(
    {"http_host", "http_port", "mllp_host", "mllp_port", "policy_path", "group_instance_id"}
)


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, time):
        return value.strftime("%H:%M")
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, PurePath | int | float | str):
        return str(value)
    if isinstance(value, dict | list):  # pydantic reads complex settings as JSON
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    raise TypeError(f"no environment form for {value!r}")


def config_env(spec: ServiceSpec) -> str:
    """The service's own ConfigMap as an env file: every setting that is neither shared,
    secret nor set by the pod, at its default, so an operator sees and overrides each one.
    Settings without a default value are listed as comments (unset means "not used")."""
    lines = [
        f"# Generated by `python -m deploy.generate` from {spec.settings.__name__}; do not edit.",
        "# Overlays override values with configMapGenerator (behavior: merge).",
    ]
    for name, info in spec.settings.model_fields.items():
        if name in SHARED or name in POD_ENV or name in spec.secret_keys:
            continue
        default = info.get_default(call_default_factory=True)
        if default is None:
            lines.append(f"# {env_name(name)} is unset by default")
        else:
            lines.append(f"{env_name(name)}={_env_value(default)}")
    return "\n".join(lines) + "\n"


def labels(spec: ServiceSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": spec.full, "app.kubernetes.io/component": spec.name}


def meta(spec: ServiceSpec, **extra: Any) -> dict[str, Any]:
    return {"name": spec.full, "labels": labels(spec), **extra}


def service_account(spec: ServiceSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta(spec),
        # The services never talk to the Kubernetes API.
        "automountServiceAccountToken": False,
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def deployment(spec: ServiceSpec) -> dict[str, Any]:
    env = [
        {"name": "FOLLOWUP_HTTP_HOST", "value": "0.0.0.0"},
        {"name": "FOLLOWUP_HTTP_PORT", "value": str(spec.http_port)},
        *({"name": k, "value": v} for k, v in sorted(spec.env.items())),
        *(
            {"name": k, "valueFrom": {"fieldRef": {"fieldPath": path}}}
            for k, path in sorted(spec.pod_field_env.items())
        ),
    ]
    ports = [
        {"name": "http", "containerPort": spec.http_port, "protocol": "TCP"},
        *({"name": p.name, "containerPort": p.port, "protocol": "TCP"} for p in spec.extra_ports),
    ]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    if spec.policy:
        mounts.append({"name": "policy", "mountPath": "/etc/followup/policy", "readOnly": True})
        volumes.append({"name": "policy", "configMap": {"name": "followup-cadence-policy"}})
    container = {
        "name": spec.name,
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": ["python", "-m", f"services.{spec.name}"],
        "ports": ports,
        "env": env,
        "envFrom": [
            {"configMapRef": {"name": "followup-config"}},
            {"configMapRef": {"name": f"{spec.full}-config"}},
            # Created out of band (kubectl create secret, sealed-secrets, external-secrets):
            # never committed. deploy/k8s/README.md lists the keys.
            {"secretRef": {"name": spec.secret}},
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "192Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "startupProbe": _probe("/healthz", 2, 30),
        "livenessProbe": _probe("/healthz", 10, 3),
        "readinessProbe": _probe("/readyz", 5, 2),
        "lifecycle": {
            # Give endpoints and load balancers time to stop sending before SIGTERM; the
            # service then stops its consumers (offsets of handled batches are committed)
            # and its HTTP server within terminationGracePeriodSeconds.
            "preStop": {"exec": {"command": ["sleep", "5"]}}
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(spec, annotations={"description": spec.description}),
        "spec": {
            # No replicas: the HorizontalPodAutoscaler (or KEDA) owns the count, and an apply
            # that stated one would reset a scaled Deployment and rebalance its consumers.
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": labels(spec)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": labels(spec)},
                "spec": {
                    "serviceAccountName": spec.full,
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 45,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def service(spec: ServiceSpec) -> dict[str, Any]:
    ports = [
        {"name": "http", "port": spec.http_port, "targetPort": "http", "protocol": "TCP"},
        *(
            {"name": p.name, "port": p.port, "targetPort": p.name, "protocol": "TCP"}
            for p in spec.extra_ports
        ),
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(spec),
        "spec": {"type": "ClusterIP", "selector": labels(spec), "ports": ports},
    }


def pod_disruption_budget(spec: ServiceSpec) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(spec),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(spec)}},
    }


def horizontal_pod_autoscaler(spec: ServiceSpec) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(spec),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.full},
            "minReplicas": 2,
            # More replicas than partitions would idle: topics have 6 partitions.
            "maxReplicas": 6,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
            "behavior": {
                # Each scale-in is a consumer-group rebalance: scale in slowly.
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
                }
            },
        },
    }


_PEERS: dict[str, dict[str, Any]] = {
    "namespace": {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": PART_OF}}},
    "ingress": {
        "namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": INGRESS_NAMESPACE},
        }
    },
    "integration": {"podSelector": {"matchLabels": {"followup.io/integration": "true"}}},
}
_PROMETHEUS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}}
}


def network_policy(spec: ServiceSpec) -> dict[str, Any]:
    http = {
        "from": [_PROMETHEUS, *(_PEERS[p] for p in spec.http_from)],
        "ports": [{"port": "http", "protocol": "TCP"}],
    }
    extra = [
        {"from": [_PEERS[p] for p in port.from_], "ports": [{"port": port.name, "protocol": "TCP"}]}
        for port in spec.extra_ports
    ]
    dns = {
        "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
    }
    # Kafka, PostgreSQL (and the notifier's providers) may live outside the cluster.
    out = {"ports": [{"port": p, "protocol": "TCP"} for p in spec.egress_ports]}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(spec),
        "spec": {
            "podSelector": {"matchLabels": labels(spec)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [http, *extra],
            "egress": [dns, out],
        },
    }


def service_monitor(spec: ServiceSpec) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta(spec),
        "spec": {
            "selector": {"matchLabels": labels(spec)},
            # The job label is the Service's name: followup-tracker, -scheduler, -notifier,
            # which the alert rules and dashboards select on.
            "endpoints": [
                {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
            ],
        },
    }


KINDS = (
    service_account,
    deployment,
    service,
    pod_disruption_budget,
    horizontal_pod_autoscaler,
    network_policy,
    service_monitor,
)


def objects(spec: ServiceSpec) -> list[dict[str, Any]]:
    return [make(spec) for make in KINDS]
