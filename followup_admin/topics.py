"""`topics apply|check`: the catalogue (schemas/topics.py) laid out on the broker."""

from __future__ import annotations

from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType, NewTopic

from followup_admin.config import Deployment
from schemas.topics import OPERATED, TopicConfig, TopicSpec, problems

CONFIG_KEYS = ("cleanup.policy", "min.insync.replicas", "retention.ms")


def observe(admin: KafkaAdminClient, topics: Iterable[str]) -> dict[str, TopicConfig]:
    """The broker's view of those of ``topics`` that exist."""
    existing = set(admin.list_topics())
    present = [t for t in topics if t in existing]
    if not present:
        return {}
    wanted_keys = dict.fromkeys(CONFIG_KEYS)
    configs = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t, wanted_keys) for t in present],
        config_filter="all",
    )["topic"]
    return {
        t["name"]: TopicConfig(
            t["name"],
            len(t["partitions"]),
            min((len(p["replica_nodes"]) for p in t["partitions"]), default=0),
            {k: v["value"] for k, v in configs.get(t["name"], {}).items() if k in CONFIG_KEYS},
        )
        for t in admin.describe_topics(present)
        if t["error_code"] == 0
    }


def wanted(deployment: Deployment, specs: Iterable[TopicSpec] = OPERATED) -> list[TopicConfig]:
    return [deployment.layout.config(spec, deployment.names) for spec in specs]


def check(deployment: Deployment) -> list[str]:
    """Every difference between the catalogue and the broker; empty when they agree."""
    topics = wanted(deployment)
    with deployment.admin() as admin:
        found = observe(admin, [t.name for t in topics])
    return [line for t in topics for line in problems(t, found.get(t.name))]


def apply(deployment: Deployment, *, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """Create missing topics and set the catalogue's settings on existing ones. Returns
    (what was done, what needs a person): partition counts and replication factors are not
    changed in place, as more partitions move patients' keys and fewer are impossible."""
    topics = wanted(deployment)
    done: list[str] = []
    refused: list[str] = []
    verb = "would " if dry_run else ""
    with deployment.admin() as admin:
        found = observe(admin, [t.name for t in topics])
        create = [t for t in topics if t.name not in found]
        if create and not dry_run:
            admin.create_topics(
                [
                    NewTopic(
                        t.name, t.partitions, t.replication_factor, topic_configs=dict(t.configs)
                    )
                    for t in create
                ],
                wait_for_metadata=True,
            )
        done += [f"{verb}create {t.name} ({t.partitions} partitions)" for t in create]
        alter: list[ConfigResource] = []
        for topic in topics:
            state = found.get(topic.name)
            if state is None:
                continue
            if state.partitions != topic.partitions:
                refused.append(
                    f"{topic.name}: {state.partitions} partitions, the catalogue says "
                    f"{topic.partitions} (not changed in place: see docs/runbook.md, topics)"
                )
            if state.replication_factor < topic.replication_factor:
                refused.append(
                    f"{topic.name}: replication factor {state.replication_factor}, the catalogue "
                    f"says {topic.replication_factor} (reassign partitions: see docs/runbook.md)"
                )
            changes = {
                k: (AlterConfigOp.SET, v)
                for k, v in topic.configs.items()
                if state.configs.get(k) != v
            }
            if changes:
                alter.append(ConfigResource(ConfigResourceType.TOPIC, topic.name, changes))
                shown = ", ".join(f"{k}={v}" for k, (_, v) in sorted(changes.items()))
                done.append(f"{verb}set {topic.name}: {shown}")
        if alter and not dry_run:
            admin.alter_configs(alter, incremental=True)
    return done, refused
