"""How the prod overlay's services reach Kafka and PostgreSQL: over TLS, as themselves.

Kafka: Strimzi's `tls` listener (9093, TLS with SCRAM-SHA-512; the Kafka resource has no
plain listener), each service as its own KafkaUser (`followup-<service>`), the password from
the Secret the User Operator writes (`kafka-followup-<service>`: kafka.yaml's
`secretPrefix` keeps it apart from the service's own Secret `followup-<service>`), the
broker checked against the cluster CA (`followup-kafka-cluster-ca-cert`, mounted).
PostgreSQL: CloudNativePG's application Secret (`followup-db-app`, key `uri`) with
`sslmode=verify-full` against the cluster's CA (`followup-db-ca`, key `ca.crt` only: the
Secret also holds the CA's key, which no client may see).

`python -m deploy.generate` writes the strategic-merge patches to
overlays/prod/clients.yaml; the shared, non-secret part (bootstrap, protocol, mechanism, CA
file) is in the overlay's followup-config literals. tests/integration/ops/test_kubernetes.py
checks the rendered pods against the Kafka and Cluster resources.
"""

from __future__ import annotations

from typing import Any

from deploy.k8s.manifests import SERVICES, ServiceSpec
from deploy.k8s.strimzi import KAFKA_CLUSTER, PROD

PROD_CLIENTS = PROD / "clients.yaml"

KAFKA_USER_SECRET_PREFIX = "kafka-"  # kafka.yaml: entityOperator.userOperator.secretPrefix
KAFKA_CA_SECRET = f"{KAFKA_CLUSTER}-cluster-ca-cert"
KAFKA_CA_DIR = "/etc/followup/kafka-ca"
POSTGRES_CLUSTER = "followup-db"  # postgres/cluster.yaml
POSTGRES_APP_SECRET = f"{POSTGRES_CLUSTER}-app"
POSTGRES_CA_SECRET = f"{POSTGRES_CLUSTER}-ca"
POSTGRES_CA_DIR = "/etc/followup/postgres-ca"
# Not a FOLLOWUP_ setting: the operator's connection URI, for FOLLOWUP_DATABASE_URL to extend.
POSTGRES_URI_VAR = "CNPG_APP_URI"


def kafka_user(spec: ServiceSpec) -> str:
    """The service's KafkaUser (kafka/users.yaml), which is its SCRAM user name."""
    return spec.full


def database_url() -> str:
    # The operator's URI names the read-write Service (followup-db-rw), a name on its
    # server certificate, and URL-encodes the password; Kubernetes expands $(VAR) of an
    # earlier entry of env.
    return f"$({POSTGRES_URI_VAR})?sslmode=verify-full&sslrootcert={POSTGRES_CA_DIR}/ca.crt"


def _secret_volume(name: str, secret: str) -> dict[str, Any]:
    return {
        "name": name,
        "secret": {"secretName": secret, "items": [{"key": "ca.crt", "path": "ca.crt"}]},
    }


def client_patch(spec: ServiceSpec) -> dict[str, Any]:
    env = [
        {"name": "FOLLOWUP_KAFKA_SASL_USERNAME", "value": kafka_user(spec)},
        {
            "name": "FOLLOWUP_KAFKA_SASL_PASSWORD",
            "valueFrom": {
                "secretKeyRef": {
                    "name": KAFKA_USER_SECRET_PREFIX + kafka_user(spec),
                    "key": "password",
                }
            },
        },
        {
            "name": POSTGRES_URI_VAR,
            "valueFrom": {"secretKeyRef": {"name": POSTGRES_APP_SECRET, "key": "uri"}},
        },
        {"name": "FOLLOWUP_DATABASE_URL", "value": database_url()},
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": spec.full},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": spec.name,
                            # env wins over envFrom: these replace any Kafka password or
                            # database URL left in the service's own Secret.
                            "env": env,
                            "volumeMounts": [
                                {"name": "kafka-ca", "mountPath": KAFKA_CA_DIR, "readOnly": True},
                                {
                                    "name": "postgres-ca",
                                    "mountPath": POSTGRES_CA_DIR,
                                    "readOnly": True,
                                },
                            ],
                        }
                    ],
                    "volumes": [
                        _secret_volume("kafka-ca", KAFKA_CA_SECRET),
                        _secret_volume("postgres-ca", POSTGRES_CA_SECRET),
                    ],
                }
            }
        },
    }


def client_patches() -> list[dict[str, Any]]:
    return [client_patch(spec) for spec in SERVICES]
