"""A detection worker, or the whole tracker's settings, on this test's topics."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from common.clock import ManualClock
from schemas.topics import TopicNames
from services.tracker.app import TrackerSettings
from services.tracker.detection import DetectionRules, Detector
from services.tracker.worker import DetectionWorker


def detection_worker(
    bootstrap: str, topics: TopicNames, clock: ManualClock, *, tick_seconds: float = 0.1
) -> DetectionWorker:
    """A worker with a 15-minute no-show grace, in the test's own consumer group."""
    return DetectionWorker(
        bootstrap=bootstrap,
        names=topics,
        group_id=f"{topics.prefix}tracker",
        detector=Detector(DetectionRules(no_show_grace=timedelta(minutes=15))),
        clock=clock,
        tick_seconds=tick_seconds,
    )


def tracker_settings(bootstrap: str, topics: TopicNames, **overrides: Any) -> TrackerSettings:
    """The whole tracker on this test's topics, every port chosen by the system."""
    fields: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "topic_prefix": topics.prefix,
        "http_host": "127.0.0.1",
        "http_port": 0,
        "mllp_port": 0,
        "ingest_token": "t",
        "clinic_timezone": "Europe/Vilnius",
        "detection_tick_seconds": 0.1,
    }
    return TrackerSettings(**(fields | overrides))
