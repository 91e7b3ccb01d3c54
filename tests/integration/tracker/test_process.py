"""`python -m services.tracker` as a real process: configured from the environment, serving
MLLP and ops, stopping on SIGTERM, and surviving a SIGKILL between a booking and its grace
deadline with the no-show emitted exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import hl7
import pytest

from common.kafka import KafkaPublisher
from common.launcher import ServiceProcess
from schemas.topics import TopicNames
from services.tracker.worker import changelog_topic
from tests.support.kafka import read_all, read_records
from tests.support.polling import free_port
from tests.unit.tracker.events import booking

pytestmark = pytest.mark.integration

MESSAGE = (
    "MSH|^~\\&|HIS|CLINIC|FOLLOWUP|TRACKER|20260301120000+0200||SIU^S12^SIU_S12|C1|P|2.5\r"
    "SCH|A1^HIS|A1^HIS|||||||||^^^20260302093000+0200\r"
    "PID|1||PAT-1^^^HIS^MR\r"
)


async def start_tracker(
    kafka_bootstrap: str, topics: TopicNames, **extra: str
) -> tuple[ServiceProcess, int, int]:
    http_port, mllp_port = free_port(), free_port()
    env = {
        "FOLLOWUP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FOLLOWUP_TOPIC_PREFIX": topics.prefix,
        "FOLLOWUP_MLLP_PORT": str(mllp_port),
        "FOLLOWUP_INGEST_TOKEN": "secret-token",
        "FOLLOWUP_DETECTION_TICK_SECONDS": "0.2",
        **extra,
    }
    process = await ServiceProcess("tracker", http_port, env).started()
    return process, http_port, mllp_port


async def test_service_process_serves_mllp_and_ops_and_stops_cleanly(
    kafka_bootstrap: str, topics: TopicNames
) -> None:
    process, _http_port, mllp_port = await start_tracker(kafka_bootstrap, topics)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", mllp_port)
        writer.write(b"\x0b" + MESSAGE.encode() + b"\x1c\x0d")
        await writer.drain()
        block = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 30)
        writer.close()
        assert str(hl7.parse(block[1:-2].decode()).segment("MSA")(1)) == "AA"
    finally:
        code = await process.stop(30)
    assert code == 0


@pytest.mark.parametrize("membership", ["dynamic", "static"])
async def test_killed_between_booking_and_grace_the_no_show_comes_exactly_once(
    kafka_bootstrap: str, topics: TopicNames, publisher: KafkaPublisher, membership: str
) -> None:
    # Static: the restarted process rejoins under the killed one's group.instance.id (as a
    # container restarted in its pod does) and takes its partitions back from the broker.
    instance = f"{topics.prefix}tracker-0" if membership == "static" else ""
    # One accelerated clock shared by both processes: 10 virtual seconds per real second
    # (30 left a loaded machine too little time to start the first process before the grace).
    speed = 10
    anchor_real = datetime.now(UTC)
    anchor_virtual = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
    clock = {
        "FOLLOWUP_CLOCK": "scaled",
        "FOLLOWUP_CLOCK_ANCHOR_REAL": anchor_real.isoformat(),
        "FOLLOWUP_CLOCK_ANCHOR_VIRTUAL": anchor_virtual.isoformat(),
        "FOLLOWUP_CLOCK_SPEED": str(speed),
        "FOLLOWUP_NO_SHOW_GRACE_MINUTES": "1",
        "FOLLOWUP_GROUP_INSTANCE_ID": instance,
    }
    start = anchor_virtual + timedelta(minutes=5)
    grace_ends_real = (start + timedelta(minutes=1) - anchor_virtual).total_seconds() / speed
    first, _, _ = await start_tracker(kafka_bootstrap, topics, **clock)
    try:
        await publisher.publish(topics.appointments, booking("appt-k", "pat-k", start))
        await read_records(kafka_bootstrap, changelog_topic(topics), 1)
    finally:
        first.kill()  # no goodbye: offsets and group left as they are
    elapsed = (datetime.now(UTC) - anchor_real).total_seconds()
    assert elapsed < grace_ends_real, "the first process outlived the grace; test is void"

    second, _, _ = await start_tracker(kafka_bootstrap, topics, **clock)
    try:
        records = await read_records(kafka_bootstrap, topics.triggers, 1, timeout=90)
        await asyncio.sleep(1.0)
    finally:
        await second.stop(30)
    assert records[0].key == b"pat-k"
    everything = await read_all(kafka_bootstrap, topics.triggers, quiet=1.0)
    assert [r.key for r in everything] == [b"pat-k"]
