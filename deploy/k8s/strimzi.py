"""The topic catalogue as Strimzi KafkaTopic resources for the prod overlay.

The layout (partitions, replication, min in-sync replicas, retention overrides) is read from
the prod overlay's own followup-config literals, the same FOLLOWUP_TOPICS_* values the
services check their topics against at start-up: one statement of the layout, two readers.
With the Topic Operator managing these, `followup_admin topics check` verifies the result
(and `topics apply` is for clusters without Strimzi).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from schemas.topics import OPERATED, TopicLayout, TopicNames

PROD = Path(__file__).resolve().parent / "overlays" / "prod"
PROD_TOPICS = PROD / "kafka" / "topics.yaml"
KAFKA_CLUSTER = "followup-kafka"  # the Kafka resource in overlays/prod/kafka/kafka.yaml


def prod_environment() -> dict[str, str]:
    """The followup-config literals of the prod overlay (KEY=VALUE lines)."""
    kustomization = yaml.safe_load((PROD / "kustomization.yaml").read_text())
    for generator in kustomization.get("configMapGenerator", []):
        if generator["name"] == "followup-config":
            return dict(line.split("=", 1) for line in generator.get("literals", []))
    return {}


def kafka_topics() -> list[dict[str, Any]]:
    environ = prod_environment()
    layout = TopicLayout.from_env(environ)
    names = TopicNames(environ.get("FOLLOWUP_TOPIC_PREFIX", ""))
    topics = []
    for spec in OPERATED:
        config = layout.config(spec, names)
        topics.append(
            {
                "apiVersion": "kafka.strimzi.io/v1",
                "kind": "KafkaTopic",
                "metadata": {
                    "name": config.name,
                    "labels": {"strimzi.io/cluster": KAFKA_CLUSTER},
                    "annotations": {"description": spec.description},
                },
                "spec": {
                    "topicName": config.name,
                    "partitions": config.partitions,
                    "replicas": config.replication_factor,
                    "config": dict(config.configs),
                },
            }
        )
    return topics
