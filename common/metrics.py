"""Metrics every service shares. Labels never carry ids or personal data."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DEAD_LETTERS = Counter(
    "followup_dead_letters_total",
    "Messages refused and sent to the dead-letter topic.",
    ["service", "error_type"],
)
EVENTS_CONSUMED = Counter(
    "followup_events_consumed_total",
    "Messages consumed from Kafka, by topic (without test prefixes) and result.",
    ["service", "topic", "result"],
)

# The consumer's own view of its group, so no separate Kafka exporter is needed.
CONSUMER_LAG = Gauge(
    "followup_kafka_consumer_lag",
    "Messages behind the high-water mark after the last commit, summed over the partitions "
    "this replica owns, by topic (without prefixes).",
    ["service", "topic"],
)
REBALANCES = Counter(
    "followup_kafka_rebalances_total",
    "Partition assignment changes seen by this replica's consumers.",
    ["service"],
)
COMMIT_DURATION = Histogram(
    "followup_kafka_commit_duration_seconds",
    "Time one offset commit took.",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

# Issue 19: what the retention sweeps removed, and erasure requests carried out.
RETENTION_PURGED = Counter(
    "followup_retention_purged_rows_total",
    "Rows deleted or stripped of personal fields by the retention sweep, by table and field "
    "group (a fixed set of names, never ids).",
    ["service", "table"],
)
ERASURES = Counter(
    "followup_erasures_total",
    "Erasure requests carried out (a patient's personal fields removed), and contacts removed "
    "by a tombstone on followup.contacts (kind).",
    ["service", "kind"],
)
