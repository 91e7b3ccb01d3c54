"""Real HL7 messages through a real MLLP socket, ACKs checked, canonical events on Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from common.clock import ManualClock
from common.kafka import KafkaPublisher
from schemas.events import AppointmentEvent, ContactEvent, PatientStatusEvent
from schemas.topics import TopicNames
from services.tracker.ingest import CanonicalSink
from services.tracker.mllp import MllpListener
from tests.support.kafka import read_all, read_events
from tests.support.mllp import connect, msa
from tests.unit.tracker.hl7_samples import adt_a03, siu

pytestmark = pytest.mark.integration


@pytest.fixture
async def listener(publisher: KafkaPublisher, topics: TopicNames) -> AsyncIterator[MllpListener]:
    mllp = MllpListener(
        sink=CanonicalSink(publisher, topics),
        clock=ManualClock(datetime(2026, 3, 1, 10, tzinfo=UTC)),
        zone=ZoneInfo("Europe/Vilnius"),
        department="general",
        max_bytes=8 * 1024,
    )
    await mllp.start("127.0.0.1", 0)
    yield mllp
    await mllp.stop()


async def test_every_siu_trigger_is_acknowledged_in_order_and_lands_canonical(
    listener: MllpListener, kafka_bootstrap: str, topics: TopicNames
) -> None:
    sender = await connect(listener.port)
    triggers = ["S12", "S13", "S14", "S15", "S17", "S26"]
    # Pipelined: all sent before any ACK is read; ACKs come back in the same order.
    for n, trigger in enumerate(triggers):
        await sender.send(siu(trigger, f"C{n}", appointment_id=f"APT-{n}").encode())
    acks = [msa(await sender.ack()) for _ in triggers]
    sender.writer.close()
    assert acks == [("AA", f"C{n}") for n in range(len(triggers))]
    events = await read_events(kafka_bootstrap, topics.appointments, AppointmentEvent, 6)
    by_id = {e.appointment_id: e for e in events}
    assert [by_id[f"APT-{n}"].change for n in range(6)] == [
        "booked",
        "rescheduled",
        "modified",
        "cancelled",
        "deleted",
        "noshow",
    ]
    assert all(e.patient_id == "PAT-1" and e.source == "tracker.hl7" for e in events)
    contacts = await read_events(kafka_bootstrap, topics.contacts, ContactEvent, 6)
    assert {c.phone for c in contacts} == {"+37060000001"}


async def test_death_indicator_goes_to_patients_topic(
    listener: MllpListener, kafka_bootstrap: str, topics: TopicNames
) -> None:
    sender = await connect(listener.port)
    await sender.send(siu("S15", "D1", death="Y").encode())
    assert msa(await sender.ack()) == ("AA", "D1")
    sender.writer.close()
    statuses = await read_events(kafka_bootstrap, topics.patients, PatientStatusEvent, 1)
    assert statuses[0].status == "deceased" and statuses[0].patient_id == "PAT-1"


async def test_malformed_messages_get_negative_acks_and_the_next_one_flows(
    listener: MllpListener, kafka_bootstrap: str, topics: TopicNames
) -> None:
    sender = await connect(listener.port)
    await sender.send(b"this is not hl7")
    await sender.send(siu("S12", "BAD1", patient_id="").encode())
    await sender.send(b"\xff\xfe binary")
    await sender.send(siu("S12", "GOOD1", appointment_id="APT-OK").encode())
    first, second, third, fourth = [await sender.ack() for _ in range(4)]
    assert msa(first)[0] == "AE"  # no MSH: fix the message
    assert msa(second) == ("AE", "BAD1")
    assert str(second.segment("ERR")(3)(1)(1)) == "101"
    assert msa(third)[0] == "AE"
    assert msa(fourth) == ("AA", "GOOD1")
    sender.writer.close()
    events = await read_events(kafka_bootstrap, topics.appointments, AppointmentEvent, 1)
    assert events[0].appointment_id == "APT-OK"


async def test_oversized_message_is_refused_and_a_new_connection_works(
    listener: MllpListener,
) -> None:
    sender = await connect(listener.port)
    await sender.send(siu("S12", "BIG").encode() + b"NTE|1||" + b"x" * 20_000 + b"\r")
    assert msa(await sender.ack()) == ("AE", "BIG")  # fix the message; its MSH was read
    sender.writer.close()
    again = await connect(listener.port)
    await again.send(siu("S12", "AFTER").encode())
    assert msa(await again.ack()) == ("AA", "AFTER")
    again.writer.close()


async def test_discharge_to_another_hospital_goes_to_patients_topic_as_transferred_out(
    listener: MllpListener, kafka_bootstrap: str, topics: TopicNames
) -> None:
    sender = await connect(listener.port)
    # A bad discharge time is a content error: AE with the field named, nothing published.
    await sender.send(adt_a03("T0", discharged_at="soon").encode())
    reply = await sender.ack()
    assert msa(reply) == ("AE", "T0")
    assert "PV1-45" in str(reply.segment("MSA")[3])
    # Home (01) changes no status; another short-term hospital (02) is a transfer.
    await sender.send(adt_a03("T1", patient_id="PAT-HOME", disposition="01").encode())
    assert msa(await sender.ack()) == ("AA", "T1")
    await sender.send(adt_a03("T2", disposition="02").encode())
    assert msa(await sender.ack()) == ("AA", "T2")
    sender.writer.close()
    statuses = await read_events(kafka_bootstrap, topics.patients, PatientStatusEvent, 1)
    assert (statuses[0].status, statuses[0].patient_id) == ("transferred_out", "PAT-1")
    assert statuses[0].effective_at == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    records = await read_all(kafka_bootstrap, topics.patients, quiet=1.0)
    assert [r.key for r in records] == [b"PAT-1"]
    contacts = await read_events(kafka_bootstrap, topics.contacts, ContactEvent, 2)
    assert {(c.patient_id, c.status) for c in contacts} == {
        ("PAT-HOME", "active"),
        ("PAT-1", "transferred_out"),
    }
