"""A detection worker on this test's topics, as the tracker wires it."""

from __future__ import annotations

from datetime import timedelta

from common.clock import ManualClock
from schemas.topics import TopicNames
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
