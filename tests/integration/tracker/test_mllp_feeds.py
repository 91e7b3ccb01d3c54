"""What the issue found, each through a real MLLP socket (and TLS), real Kafka and, for the
contact, the notifier's real directory on PostgreSQL."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import hl7
import pytest
import yaml
from hl7.client import MLLPClient

from common.clock import ManualClock
from common.codec import decode
from common.db import create_pool, migrate
from common.kafka import KafkaPublisher
from schemas.events import AppointmentEvent, ContactEvent, TriggerEvent
from schemas.topics import TopicNames
from services.notifier.app import MIGRATIONS
from services.notifier.directory import Directory
from services.tracker.ingest import CanonicalSink
from services.tracker.mllp import MllpLimits, MllpListener, tls_context
from services.tracker.worker import ensure_changelog
from tests.support.kafka import read_all, read_events
from tests.support.mllp import FS_CR, VT, connect, msa
from tests.support.polling import eventually
from tests.support.tracker import detection_worker

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 10, tzinfo=UTC)


def msh(trigger: str, control: str, charset: str = "") -> str:
    return (
        f"MSH|^~\\&|HIS|CLINIC|FOLLOWUP|TRACKER|20260301120000+0200||SIU^{trigger}^SIU_S12|"
        f"{control}|P|2.5.1||||||{charset}"
    )


def message(*segments: str) -> bytes:
    return ("\r".join(segments) + "\r").encode()


def listener_for(
    publisher: KafkaPublisher,
    topics: TopicNames,
    limits: MllpLimits | None = None,
    tls: ssl.SSLContext | None = None,
) -> MllpListener:
    return MllpListener(
        sink=CanonicalSink(publisher, topics),
        clock=ManualClock(NOW),
        zone=ZoneInfo("Europe/Vilnius"),
        department="general",
        limits=limits or MllpLimits(max_bytes=8 * 1024),
        tls=tls,
    )


@pytest.fixture
async def listener(publisher: KafkaPublisher, topics: TopicNames) -> AsyncIterator[MllpListener]:
    mllp = listener_for(publisher, topics)
    await mllp.start("127.0.0.1", 0)
    yield mllp
    await mllp.stop()


async def test_the_no_show_a_refused_cancellation_used_to_cause_no_longer_happens(
    listener: MllpListener, kafka_bootstrap: str, topics: TopicNames
) -> None:
    sender = await connect(listener.port)
    patient = "PID|1||PAT-1^^^HIS^MR"
    other = "PID|1||PAT-2^^^HIS^MR"
    # Booked with placer and filler ids; cancelled naming the placer id alone (S15), and a
    # second visit stopped by S16 with its id alone. A third visit, left booked, is missed.
    await sender.send(
        message(msh("S12", "B1"), "SCH|P-1^EHR|F-1^HIS", patient, "TQ1|||||||202603020930")
    )
    await sender.send(message(msh("S12", "B2"), "SCH|P-2|F-2", patient, "TQ1|||||||202603021030"))
    await sender.send(message(msh("S12", "B3"), "SCH|P-3|F-3", other, "TQ1|||||||202603021130"))
    await sender.send(message(msh("S15", "C1"), "SCH|P-1^EHR", patient))
    await sender.send(message(msh("S16", "C2"), "SCH||F-2", patient))
    answers = [msa(await sender.ack()) for _ in range(5)]
    sender.writer.close()
    assert answers == [("AA", c) for c in ("B1", "B2", "B3", "C1", "C2")]

    await ensure_changelog(kafka_bootstrap, topics)
    clock = ManualClock(NOW)
    worker = detection_worker(kafka_bootstrap, topics, clock)
    await worker.start()
    try:
        await eventually(lambda: worker.detector.tracked_appointments == 3)
        clock.set(datetime(2026, 3, 3, tzinfo=UTC))
        await read_events(kafka_bootstrap, topics.triggers, TriggerEvent, 1)
        # A wrong no-show would come in the same due scan; wait for the topic to go quiet.
        records = await read_all(kafka_bootstrap, topics.triggers, quiet=1.0)
        triggers = [decode(TriggerEvent, r.value) for r in records]
    finally:
        await worker.stop()
    assert [t.event_id for t in triggers] == ["no_show:F-3"]
    held = worker.detector.patients["PAT-1"].appointments
    assert {k: v.status for k, v in held.items()} == {"F-1": "cancelled", "F-2": "cancelled"}


async def test_a_partial_message_no_longer_erases_the_contact(
    listener: MllpListener,
    kafka_bootstrap: str,
    topics: TopicNames,
    database_url: str,
    pg_schema: str,
) -> None:
    sender = await connect(listener.port)
    sch = "SCH|A-1|A-1|||||||||^^^202603020930"
    full = "PID|1||PAT-1^^^HIS^MR||Kazlauskiene^Ona||||||||+37060000001^PRN^PH||lit"
    await sender.send(message(msh("S12", "K1"), sch, full))
    await sender.send(message(msh("S14", "K2"), sch, "PID|1||PAT-1^^^HIS^MR"))
    assert [msa(await sender.ack()) for _ in range(2)] == [("AA", "K1"), ("AA", "K2")]
    sender.writer.close()
    contacts = await read_events(kafka_bootstrap, topics.contacts, ContactEvent, 2)

    await migrate(database_url, pg_schema, MIGRATIONS)
    pool = await create_pool(database_url, pg_schema)
    try:
        directory = Directory(pool, "LT")
        # A patient whose FHIR Patient gave a zone of their own: HL7 has none to reset it.
        fhir = contacts[0].model_copy(
            update={
                "event_id": "fhir:Patient/p1/1",
                "timezone": "America/New_York",
                "occurred_at": NOW - timedelta(days=1),
                "fields_sent": None,
            }
        )
        await directory.record_contact(fhir)
        for contact in contacts:
            await directory.record_contact(contact)
        stored = await directory.contact("PAT-1")
    finally:
        await pool.close()
    assert stored is not None
    assert (stored.family_name, stored.given_name) == ("Kazlauskiene", "Ona")
    assert (stored.phone, stored.language, stored.timezone) == (
        "+37060000001",
        "lt",
        "America/New_York",
    )


async def test_stray_line_feeds_and_bytes_between_frames_lose_nothing(
    listener: MllpListener, kafka_bootstrap: str, topics: TopicNames
) -> None:
    sender = await connect(listener.port)
    for n, junk in enumerate([b"\n", b"\r\n", b"\x00garbage\n"]):
        body = message(msh("S12", f"L{n}"), f"SCH|L{n}|L{n}|||||||||^^^202603020930", "PID|1||P")
        await sender.raw(VT + body + FS_CR + junk)
    # One engine's quirk: the end block without its CR.
    await sender.raw(
        VT + message(msh("S12", "L3"), "SCH|L3|L3|||||||||^^^202603020930", "PID|1||P") + b"\x1c"
    )
    answers = [msa(await sender.ack()) for _ in range(4)]
    sender.writer.close()
    assert answers == [("AA", f"L{n}") for n in range(4)]
    events = await read_events(kafka_bootstrap, topics.appointments, AppointmentEvent, 4)
    assert sorted(e.appointment_id for e in events) == ["L0", "L1", "L2", "L3"]


async def test_iso_8859_13_is_decoded_by_msh_18_and_bad_text_still_echoes_msa_2(
    listener: MllpListener, kafka_bootstrap: str, topics: TopicNames
) -> None:
    sender = await connect(listener.port)
    pid = "PID|1||PAT-1^^^HIS^MR||Žemaitė^Ūla"
    sch = "SCH|Z|Z|||||||||^^^202603020930"
    await sender.send(
        ("\r".join([msh("S12", "Z1", "8859/13"), sch, pid]) + "\r").encode("iso8859_13")
    )
    await sender.send(("\r".join([msh("S12", "Z2"), sch, pid]) + "\r").encode("iso8859_13"))
    good, bad = await sender.ack(), await sender.ack()
    sender.writer.close()
    assert msa(good) == ("AA", "Z1")
    assert msa(bad) == ("AE", "Z2")
    assert str(bad.segment("ERR")(2)) == "MSH^1^18"
    contacts = await read_events(kafka_bootstrap, topics.contacts, ContactEvent, 1)
    assert contacts[0].family_name == "Žemaitė"


async def test_broker_away_is_ar_resend_later(topics: TopicNames) -> None:
    dead = KafkaPublisher("127.0.0.1:1", client_id="dead")  # never started: every send fails
    mllp = listener_for(dead, topics, MllpLimits(store_timeout=1.0))
    await mllp.start("127.0.0.1", 0)
    try:
        sender = await connect(mllp.port)
        await sender.send(
            message(msh("S12", "DOWN"), "SCH|D|D|||||||||^^^202603020930", "PID|1||P")
        )
        answer = await sender.ack()
        sender.writer.close()
    finally:
        await mllp.stop()
    assert msa(answer) == ("AR", "DOWN")
    assert str(answer.segment("ERR")(3)(1)(1)) == "207"


async def test_oversized_is_ae_with_msa_2_and_the_connection_goes_on(
    listener: MllpListener, kafka_bootstrap: str, topics: TopicNames
) -> None:
    sender = await connect(listener.port)
    big = message(msh("S12", "BIG"), "SCH|B|B", "PID|1||P", "NTE|1||" + "x" * 20_000)
    await sender.send(big)
    await sender.send(message(msh("S12", "AFTER"), "SCH|OK|OK|||||||||^^^202603020930", "PID|1||P"))
    assert [msa(await sender.ack()) for _ in range(2)] == [("AE", "BIG"), ("AA", "AFTER")]
    sender.writer.close()


async def test_idle_timeout_connection_limit_and_a_third_party_client(
    publisher: KafkaPublisher, topics: TopicNames
) -> None:
    limits = MllpLimits(idle_timeout=0.5, read_timeout=0.5, max_connections=1)
    mllp = listener_for(publisher, topics, limits)
    await mllp.start("127.0.0.1", 0)
    try:
        first = await connect(mllp.port)
        second = await connect(mllp.port)
        assert await asyncio.wait_for(second.reader.read(), 10) == b""  # over the limit
        assert await asyncio.wait_for(first.reader.read(), 10) == b""  # idle, then closed
        stalled = await connect(mllp.port)
        await stalled.raw(VT + b"MSH|^~\\&|HIS|CLINIC")  # and then nothing more
        assert await asyncio.wait_for(stalled.reader.read(), 10) == b""  # read timeout
        # python-hl7's own MLLP client, as an integrator would try it.
        assert mllp.port is not None
        body = message(msh("S12", "HL7C"), "SCH|H|H|||||||||^^^202603020930", "PID|1||P").decode()

        def send() -> str:
            with MLLPClient("127.0.0.1", mllp.port) as client:
                return str(client.send_message(body), "utf-8")

        reply = await asyncio.to_thread(send)
    finally:
        await mllp.stop()
    assert msa(hl7.parse(reply.strip("\x0b\x1c\r"))) == ("AA", "HL7C")


async def test_mllp_over_tls(publisher: KafkaPublisher, topics: TopicNames, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    mllp = listener_for(publisher, topics, tls=tls_context(str(cert), str(key)))
    await mllp.start("127.0.0.1", 0)
    try:
        client = ssl.create_default_context(cafile=str(cert))
        sender = await connect(mllp.port, tls=client)
        await sender.send(
            message(msh("S12", "TLS1"), "SCH|T|T|||||||||^^^202603020930", "PID|1||P")
        )
        answer = await sender.ack()
        sender.writer.close()
        # A plain-text client is not answered in plain text.
        plain = await connect(mllp.port)
        await plain.send(message(msh("S12", "PLAIN"), "SCH|T|T", "PID|1||P"))
        assert await asyncio.wait_for(plain.reader.read(), 10) == b""
    finally:
        await mllp.stop()
    assert msa(answer) == ("AA", "TLS1")


async def test_the_whole_corpus_through_one_mllp_connection(
    listener: MllpListener, kafka_bootstrap: str, topics: TopicNames
) -> None:
    corpus = Path(__file__).parents[2] / "corpus" / "hl7"
    manifest = yaml.safe_load((corpus / "MANIFEST.yaml").read_text())
    sender = await connect(listener.port)
    for entry in manifest:
        await sender.send((corpus / entry["file"]).read_bytes())
    answers = [await sender.ack() for _ in manifest]
    sender.writer.close()
    for entry, answer in zip(manifest, answers, strict=True):
        expected = entry["ack"] if entry["expect"] == "refused" else "AA"
        assert msa(answer)[0] == expected, entry["file"]
        assert msa(answer)[1] != "" or entry["file"].startswith("21-"), entry["file"]
    visits = [e for e in manifest if e["expect"] == "stored" and e.get("appointment")]
    events = await read_events(kafka_bootstrap, topics.appointments, AppointmentEvent, len(visits))
    assert sorted(e.appointment_id for e in events) == sorted(
        e["appointment"]["id"] for e in visits
    )
