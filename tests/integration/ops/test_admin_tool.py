"""The operator tool (python -m followup_admin) against the real broker and the real
scheduler: topics applied and checked, dead letters listed, shown and replayed to a
consumer that now accepts them, a dry run that publishes nothing, lag by group, cases,
a patient's erasure (issue 19)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType, NewTopic
from kafka.structs import OffsetAndMetadata

from common.clock import ManualClock
from common.codec import decode
from common.kafka import KafkaPublisher, delete_topics_with_prefix, ensure_topics
from common.topic_reader import read_to_end
from followup_admin.cli import main
from followup_admin.deadletters import REPLAY_HEADER
from schemas import AppointmentEvent
from schemas.events import PatientStatusEvent
from schemas.topics import APPOINTMENTS, OPERATED, TopicNames
from services.scheduler.app import Scheduler
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy
from tests.support import infra
from tests.support.kafka import appointments_consumer, read_records
from tests.support.polling import eventually
from tests.support.samples import sample_events
from tests.support.scheduler import scheduler_settings, seed_open_cases

pytestmark = pytest.mark.integration
TOKEN = "admin-test-token-not-secret"
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[|\{\"event\")")


def admin_tool(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Runs the tool in this process; returns its exit code and what it printed (without
    the log lines that the services under test print at the same time)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    printed = [line for line in (out + err).splitlines() if not LOG_LINE.match(line)]
    return code, "\n".join(printed) + "\n"


@pytest.fixture
def prefix(kafka_bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A topic prefix with nothing on the broker yet; the tool reads the broker's address
    from the environment like the services do."""
    monkeypatch.setenv("FOLLOWUP_KAFKA_BOOTSTRAP", kafka_bootstrap)
    for name in ("AUTO_CREATE", "PARTITIONS", "REPLICATION_FACTOR", "MIN_INSYNC_REPLICAS"):
        monkeypatch.delenv(f"FOLLOWUP_TOPICS_{name}", raising=False)
    mine = f"ta{unique}."
    yield mine
    asyncio.run(delete_topics_with_prefix(kafka_bootstrap, mine))


def test_every_command_answers_help() -> None:
    for argv in (
        [],
        ["topics"],
        ["topics", "apply"],
        ["topics", "check"],
        ["deadletters", "list"],
        ["deadletters", "show"],
        ["deadletters", "replay"],
        ["lag"],
        ["cases"],
        ["erase"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "followup_admin", *argv, "--help"],
            cwd=infra.REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (argv, result.stderr)
        assert result.stdout.startswith("usage: python -m followup_admin"), argv


def test_topics_apply_lays_the_catalogue_out_and_check_finds_what_drifted(
    capsys: pytest.CaptureFixture[str], kafka_bootstrap: str, prefix: str
) -> None:
    code, out = admin_tool(capsys, "--prefix", prefix, "topics", "check")
    assert code == 1 and f"{prefix}followup.appointments: missing" in out
    code, out = admin_tool(capsys, "--prefix", prefix, "topics", "apply", "--dry-run")
    assert code == 0 and f"would create {prefix}followup.deadletter (1 partitions)" in out
    assert admin_tool(capsys, "--prefix", prefix, "topics", "check")[0] == 1  # dry: nothing made

    code, out = admin_tool(capsys, "--prefix", prefix, "topics", "apply")
    assert code == 0, out
    assert out.count("create ") == len(OPERATED)
    code, out = admin_tool(capsys, "--prefix", prefix, "topics", "check")
    assert (code, out.strip()) == (0, f"all {len(OPERATED)} topics as the catalogue says")

    # Someone changes a setting by hand, and someone creates a topic with other partitions.
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        contacts = f"{prefix}followup.contacts"
        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    contacts,
                    {"cleanup.policy": (AlterConfigOp.SET, "delete")},
                )
            ],
            incremental=True,
        )
        admin.delete_topics([f"{prefix}followup.plans"])
        plans = f"{prefix}followup.plans"
        _until(lambda: plans not in admin.list_topics())
        admin.create_topics([NewTopic(plans, 2, 1)], wait_for_metadata=True)
    finally:
        admin.close()
    code, out = admin_tool(capsys, "--prefix", prefix, "topics", "check")
    assert code == 1
    assert f"{contacts}: cleanup.policy=delete, the catalogue says compact" in out
    assert f"{plans}: 2 partitions, the catalogue says 6" in out
    code, out = admin_tool(capsys, "--prefix", prefix, "topics", "apply")
    assert code == 1  # partitions need a person; the setting was put back
    assert f"set {contacts}: cleanup.policy=compact" in out
    assert f"needs a person: {plans}: 2 partitions" in out
    code, out = admin_tool(capsys, "--prefix", prefix, "topics", "check")
    assert code == 1 and "contacts" not in out and "plans" in out


def _until(check: object, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


async def test_a_dead_letter_is_replayed_after_the_fix_and_the_consumer_accepts_it(
    capsys: pytest.CaptureFixture[str],
    kafka_bootstrap: str,
    topics: TopicNames,
    publisher: KafkaPublisher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FOLLOWUP_KAFKA_BOOTSTRAP", kafka_bootstrap)
    tool = ("--prefix", topics.prefix)
    fixed = False
    accepted: list[str] = []

    async def handle(event: AppointmentEvent) -> None:
        if not fixed:  # the mapping bug an operator fixes before replaying
            raise ValueError("unmapped department")
        accepted.append(event.event_id)

    event = sample_events()[APPOINTMENTS]
    async with appointments_consumer(kafka_bootstrap, topics, publisher, handle, group="admin"):
        await publisher.publish(topics.appointments, event)
        await publisher.publish_raw(topics.appointments, b"{not json", key=b"pat-9")
        letters = await read_records(kafka_bootstrap, topics.deadletter, 2)
        by_type = {json.loads(r.value)["error_type"]: r for r in letters}
        assert set(by_type) == {"handler_error", "invalid_json"}

        code, out = await asyncio.to_thread(admin_tool, capsys, *tool, "deadletters", "list")
        assert code == 0 and len(out.splitlines()) == 2
        assert "handler failed: ValueError" in out and "unmapped department" not in out
        broken = by_type["invalid_json"]
        position = f"{broken.partition}:{broken.offset}"
        code, out = await asyncio.to_thread(
            admin_tool, capsys, *tool, "deadletters", "show", position
        )
        shown = json.loads(out)
        assert shown["error_type"] == "invalid_json" and shown["original_key"] == "pat-9"
        assert "original" not in shown  # the bytes may hold personal data: only on request
        code, out = await asyncio.to_thread(
            admin_tool, capsys, *tool, "deadletters", "show", position, "--original"
        )
        assert json.loads(out)["original"] == "{not json"

        before = _end_offsets(kafka_bootstrap, topics.appointments)
        replay = (*tool, "deadletters", "replay", "--reason", "HANDLER FAILED")
        code, out = await asyncio.to_thread(admin_tool, capsys, *replay, "--dry-run")
        assert code == 0 and "would replay 1, skipped 0" in out
        await asyncio.sleep(1)
        assert _end_offsets(kafka_bootstrap, topics.appointments) == before  # nothing sent
        assert accepted == []

        fixed = True
        code, out = await asyncio.to_thread(admin_tool, capsys, *replay)
        assert code == 0 and "replayed 1, skipped 0" in out
        await eventually(lambda: accepted == [event.event_id])
        after = _end_offsets(kafka_bootstrap, topics.appointments)
        assert sum(after.values()) == sum(before.values()) + 1  # the invalid JSON stayed put
    replayed = [
        r
        for r in await read_records(kafka_bootstrap, topics.appointments, 3)
        if dict(r.headers).get(REPLAY_HEADER)
    ]
    assert [r.key for r in replayed] == [event.key()]  # the patient's key, so its partition


async def test_replay_without_a_filter_asks_for_one(
    capsys: pytest.CaptureFixture[str], topics: TopicNames, kafka_bootstrap: str
) -> None:
    code, out = await asyncio.to_thread(
        admin_tool,
        capsys,
        "--bootstrap",
        kafka_bootstrap,
        "--prefix",
        topics.prefix,
        "deadletters",
        "replay",
    )
    assert code == 2 and "give a filter" in out


def test_lag_by_group_counts_from_the_committed_offset(
    capsys: pytest.CaptureFixture[str], kafka_bootstrap: str, prefix: str
) -> None:
    topic = f"{prefix}followup.appointments"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)], wait_for_metadata=True)
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for n in range(5):
        producer.send(topic, value=b"{}", key=f"pat-{n}".encode(), partition=0)
    producer.flush()
    producer.close()
    group = f"{prefix}scheduler"
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(2, "", -1)})
    consumer.close()

    code, out = admin_tool(capsys, "--prefix", prefix, "lag", "--json")
    assert code == 0
    assert json.loads(out) == [
        {"group": group, "topic": topic, "partitions": 1, "lag": 3, "uncommitted": 0}
    ]
    code, out = admin_tool(capsys, "lag", "--group", group)
    assert code == 0 and group in out and out.split()[-1] == "3"


@pytest.fixture
async def scheduler(
    kafka_bootstrap: str, database_url: str, topics: TopicNames, pg_schema: str
) -> AsyncIterator[Scheduler]:
    settings = scheduler_settings(kafka_bootstrap, database_url, topics, pg_schema, api_token=TOKEN)
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    service = Scheduler(settings, clock, CadencePolicy.load(DEFAULT_POLICY_PATH))
    await service.start()
    yield service
    await service.stop()


async def test_cases_are_summarised_through_the_scheduler_api(
    capsys: pytest.CaptureFixture[str],
    scheduler: Scheduler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert scheduler.pool is not None
    opened = datetime(2026, 2, 20, 8, 0, tzinfo=UTC)
    async with scheduler.pool.acquire() as conn:
        assert isinstance(conn, asyncpg.Connection)
        await seed_open_cases(conn, 3, opened)
        await conn.execute(
            "UPDATE cases SET state = 'closed', resolution = 'recovered', opened_at = $1 "
            "WHERE case_id = 'case-1'",
            opened - timedelta(days=3),
        )
    url = f"http://127.0.0.1:{scheduler.ops.port}"
    monkeypatch.setenv("FOLLOWUP_API_TOKEN", TOKEN)
    code, out = await asyncio.to_thread(admin_tool, capsys, "cases", "--url", url, "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["total"] == 3
    assert summary["by_state"] == {"closed": 1, "open": 2}
    assert summary["by_resolution"] == {"recovered": 1}
    assert summary["oldest_open_since"] == opened.isoformat()  # the closed one is older

    monkeypatch.setenv("FOLLOWUP_API_TOKEN", "wrong")
    code, out = await asyncio.to_thread(admin_tool, capsys, "cases", "--url", url)
    assert code == 2 and out.startswith("error: case API answered 401")


async def test_erase_publishes_the_erasure_and_the_tombstone_and_a_dry_run_nothing(
    capsys: pytest.CaptureFixture[str], prefix: str, kafka_bootstrap: str
) -> None:
    names = TopicNames(prefix)
    await ensure_topics(kafka_bootstrap, names)
    code, printed = admin_tool(capsys, "--prefix", prefix, "erase", "p-gdpr", "--dry-run")
    assert code == 0 and "dry run: nothing sent" in printed
    assert await read_to_end(kafka_bootstrap, names.patients) == []
    code, printed = admin_tool(capsys, "--prefix", prefix, "erase", "bad\tid")
    assert code == 2 and "not an id: patient_id" in printed

    code, printed = admin_tool(
        capsys, "--prefix", prefix, "erase", "p-gdpr", "--requested-by", "dpo-1"
    )
    assert code == 0 and printed.rstrip().endswith("sent")
    [status] = await read_to_end(kafka_bootstrap, names.patients)
    event = decode(PatientStatusEvent, status.value)
    assert (event.patient_id, event.status, event.requested_by) == ("p-gdpr", "erased", "dpo-1")
    assert status.key == b"p-gdpr"
    [tombstone] = await read_to_end(kafka_bootstrap, names.contacts)
    assert (tombstone.key, tombstone.value) == (b"p-gdpr", None)
