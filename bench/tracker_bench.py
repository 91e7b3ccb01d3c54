"""Tracker detection: applying appointment snapshots and state snapshots per event, against
decoding alone (the floor any consumer pays), and due-work against what is tracked."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from bench.harness import Figure, compare
from common.codec import decode, encode
from schemas import AppointmentEvent
from services.tracker.detection import DetectionRules, Detector

N = 20_000
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _raw(n: int) -> list[bytes]:
    return [
        encode(
            AppointmentEvent(
                event_id=f"a{i}:booked",
                occurred_at=START - timedelta(days=2),
                source="bench",
                change="booked",
                appointment_id=f"a{i}",
                patient_id=f"p{i}",
                start=START + timedelta(minutes=i),
                timezone="Europe/Vilnius",
                department="dental",
                status="booked",
            )
        )
        for i in range(n)
    ]


def run() -> list[Figure]:
    raws = _raw(N)
    now = START - timedelta(days=1)

    def ours() -> int:
        detector = Detector(DetectionRules())
        for raw in raws:
            event = decode(AppointmentEvent, raw)
            detector.on_appointment(event, now)
            # What the worker writes to the changelog for the touched patient.
            detector.patients[event.patient_id].model_dump_json()
        return N

    def baseline() -> int:
        for raw in raws:
            decode(AppointmentEvent, raw)
        return N

    figures = [compare("tracker: decode+detect+snapshot", ours, "codec.decode only", baseline)]

    # Due work: 1,000 due out of N tracked costs about the same as 1,000 out of 1,000.
    def due_among(tracked: int) -> float:
        detector = Detector(DetectionRules(no_show_grace=timedelta(0)))
        for raw in raws[:tracked]:
            detector.on_appointment(decode(AppointmentEvent, raw), now)
        started = time.perf_counter()
        found = detector.due(START + timedelta(minutes=999))
        assert len(found) == 1000
        return 1000 / (time.perf_counter() - started)

    figures.append(
        Figure(
            "tracker: due() 1000 of 20000 tracked", due_among(N), "1000 of 1000", due_among(1000)
        )
    )
    return figures
