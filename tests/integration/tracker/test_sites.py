"""The tracker of a clinic chain (issue 22), in-process on the real broker: HL7 over MLLP
attributed to its site by MSH-4 (read in the site's zone, the site on the trigger), an
unknown facility refused with a negative ACK naming MSH-4, and canonical JSON naming an
unknown site dead-lettered with the reason."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hl7
import pytest

from common.clock import ManualClock
from common.kafka import KafkaPublisher
from schemas.events import AppointmentEvent, DeadLetter, TriggerEvent
from schemas.topics import TopicNames
from services.tracker.app import Tracker, TrackerSettings
from tests.support.kafka import read_events
from tests.support.polling import eventually
from tests.unit.tracker.hl7_samples import siu

pytestmark = pytest.mark.integration
SITES = """\
sites:
  vilnius:
    facilities: [VLN]
    timezone: Europe/Vilnius
  lisbon:
    facilities: [LIS]
    timezone: Europe/Lisbon
"""


async def _send(port: int, message: str) -> hl7.Message:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x0b" + message.encode() + b"\x1c\x0d")
    await writer.drain()
    block = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 30)
    writer.close()
    return hl7.parse(block[1:-2].decode())


def from_facility(facility: str, control_id: str, appointment_id: str) -> str:
    # Local times without an offset: the site's zone decides when the visit is.
    text = siu("S12", control_id, appointment_id=appointment_id, start="20260302093000")
    return text.replace("|HIS|CLINIC|", f"|HIS|{facility}|", 1).replace("+0200", "")


async def test_hl7_and_json_are_attributed_to_their_site_or_refused(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher, tmp_path: Path
) -> None:
    sites = tmp_path / "sites.yaml"
    sites.write_text(SITES)
    settings = TrackerSettings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topics.prefix,
        http_host="127.0.0.1",
        http_port=0,
        mllp_port=0,
        ingest_token="t",
        clinic_timezone="UTC",
        detection_tick_seconds=0.1,
        sites_path=str(sites),
    )
    clock = ManualClock(datetime(2026, 3, 2, 6, 0, tzinfo=UTC))
    tracker = Tracker(settings, clock)
    await tracker.start()
    try:
        port = tracker.mllp.port
        assert port is not None
        answer = await _send(port, from_facility("LIS", "S-1", "APT-LIS"))
        assert str(answer.segment("MSA")(1)) == "AA"
        refused = await _send(port, from_facility("RIGA", "S-2", "APT-RIGA"))
        assert str(refused.segment("MSA")(1)) == "AE"
        assert str(refused.segment("MSA")(3)) == "MSH-4 names no configured site"

        unknown = AppointmentEvent(
            event_id="json-1",
            occurred_at=clock.now(),
            source="his.json",
            change="booked",
            appointment_id="APT-JSON",
            patient_id="PAT-9",
            start=clock.now() + timedelta(hours=1),
            timezone="Europe/Vilnius",
            department="dental",
            status="booked",
            site="riga",
        )
        await publisher.publish(topics.appointments, unknown)
        [letter] = await read_events(kafka_bootstrap, topics.deadletter, DeadLetter, 1)
        assert letter.reason == "site: names no configured site"
        assert letter.error_type == "unknown_site"

        await eventually(lambda: tracker.worker.detector.tracked_appointments == 1, 30)
        # 09:30 in Lisbon is 09:30 UTC in March; grace passed, no arrival.
        clock.set(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
        [trigger] = await read_events(kafka_bootstrap, topics.triggers, TriggerEvent, 1)
        assert trigger.event_id == "no_show:APT-LIS"
        assert (trigger.site, trigger.timezone) == ("lisbon", "Europe/Lisbon")
        assert trigger.appointment_start == datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    finally:
        await tracker.stop()
