"""The whole tracker in-process: HL7 in through MLLP, a no-show trigger out, ops endpoints."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aiohttp
import hl7
import pytest

from common.clock import ManualClock
from schemas.events import TriggerEvent
from schemas.topics import TopicNames
from services.tracker.app import Tracker, TrackerSettings
from tests.support.kafka import read_events
from tests.support.polling import eventually
from tests.unit.tracker.hl7_samples import siu

pytestmark = pytest.mark.integration


async def test_hl7_booking_becomes_a_no_show_trigger(
    kafka_bootstrap: str, topics: TopicNames
) -> None:
    settings = TrackerSettings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topics.prefix,
        http_host="127.0.0.1",
        http_port=0,
        mllp_port=0,
        ingest_token="t",
        clinic_timezone="Europe/Vilnius",
        detection_tick_seconds=0.1,
    )
    # Booked before the visit (09:30+02:00); a visit already over when first seen would be
    # a backfill, recorded and never chased.
    clock = ManualClock(datetime(2026, 3, 2, 7, 0, tzinfo=UTC))
    tracker = Tracker(settings, clock)
    await tracker.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", tracker.mllp.port)
        writer.write(b"\x0b" + siu("S12", "E2E-1").encode() + b"\x1c\x0d")
        await writer.drain()
        block = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 30)
        writer.close()
        assert str(hl7.parse(block[1:-2].decode()).segment("MSA")(1)) == "AA"
        await eventually(lambda: tracker.worker.detector.tracked_appointments == 1, 30)
        clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))  # grace passed, no arrival
        triggers = await read_events(kafka_bootstrap, topics.triggers, TriggerEvent, 1)
        assert triggers[0].event_id == "no_show:APT-100"
        assert triggers[0].department == "DENTAL" and triggers[0].timezone == "Europe/Vilnius"
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{tracker.ops.port}"
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 200
            # The trigger is on the topic a moment before the changelog write and the
            # metric update that follow it.
            metrics = ""
            async with asyncio.timeout(10):
                while (
                    "followup_tracker_tracked_appointments 1.0" not in metrics
                    or 'followup_tracker_triggers_total{kind="no_show",site="none"}' not in metrics
                ):
                    async with session.get(f"{base}/metrics") as response:
                        metrics = await response.text()
                    await asyncio.sleep(0.05)
        assert 'followup_tracker_events_total{source="hl7",type="appointment"}' in metrics
        assert "followup_tracker_detection_lag_seconds_bucket" in metrics
        assert 'followup_tracker_triggers_total{kind="no_show",site="none"}' in metrics
    finally:
        await tracker.stop()
