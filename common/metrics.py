"""Metrics every service shares. Labels never carry ids or personal data."""

from __future__ import annotations

from prometheus_client import Counter

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
