"""`lag`: how far each consumer group is behind, per topic, from the broker's own view.

Lag is the latest offset minus the group's committed offset. A partition the group never
committed counts from the partition's earliest offset (what ``auto_offset_reset=earliest``
will read). The services report the same figure themselves as followup_kafka_consumer_lag;
this one also sees a group whose consumers are all down.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from kafka.admin import OffsetSpec

from followup_admin.config import Deployment


@dataclass(frozen=True)
class TopicLag:
    group: str
    topic: str
    partitions: int
    lag: int
    uncommitted: int  # partitions without a committed offset


def groups_of(deployment: Deployment, wanted: list[str]) -> list[str]:
    """The named groups, or those of this deployment (their ids start with the prefix)."""
    if wanted:
        return wanted
    with deployment.admin() as admin:
        every = sorted(g["group_id"] for g in admin.list_groups())
    prefix = deployment.names.prefix
    return [g for g in every if g.startswith(prefix)] if prefix else every


def lag(deployment: Deployment, groups: list[str]) -> list[TopicLag]:
    rows: list[TopicLag] = []
    with deployment.admin() as admin:
        for group in groups:
            committed = admin.list_group_offsets({group: None}).get(group, {})
            if not committed:
                continue
            tps = sorted(committed, key=lambda tp: (tp.topic, tp.partition))
            latest = admin.list_partition_offsets(dict.fromkeys(tps, OffsetSpec.LATEST))
            earliest = admin.list_partition_offsets(dict.fromkeys(tps, OffsetSpec.EARLIEST))
            by_topic: dict[str, list[tuple[int, bool]]] = defaultdict(list)
            for tp in tps:
                done = committed[tp].offset
                start = done if done >= 0 else earliest[tp].offset
                by_topic[tp.topic].append((max(0, latest[tp].offset - start), done < 0))
            rows += [
                TopicLag(
                    group,
                    topic,
                    len(parts),
                    sum(n for n, _ in parts),
                    sum(1 for _, never in parts if never),
                )
                for topic, parts in sorted(by_topic.items())
            ]
    return rows
