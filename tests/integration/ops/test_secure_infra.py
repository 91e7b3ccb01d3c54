"""Every client through TLS and SASL: a second local broker with a SASL_SSL listener (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512) and an SSL listener that requires a client certificate, a
second PostgreSQL that refuses TCP without TLS; certificates made with openssl here. The
three services run as processes against both and a trigger flows to a call task."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiokafka.errors import KafkaError

from common.clock import ScaledClock
from common.config import ConfigError, KafkaSecurity, load
from common.db import create_pool, migrate
from common.kafka import KafkaPublisher, ensure_topics, make_consumer, make_producer
from common.launcher import ServiceProcess
from schemas.events import ContactEvent, NotificationCommand
from schemas.topics import TopicNames
from tests.support.kafka import read_events, read_records
from tests.support.polling import free_port
from tests.support.scheduler import no_show_trigger
from tests.support.secure_infra import (
    Certificates,
    SecureKafka,
    SecurePostgres,
    make_certificates,
    secure_kafka,
    secure_postgres,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[SecureKafka]:
    with secure_kafka(tmp_path_factory.mktemp("kafka"), certificates) as kafka:
        yield kafka


@pytest.fixture(scope="module")
def postgres(certificates: Certificates) -> Iterator[SecurePostgres]:
    with secure_postgres(certificates) as server:
        yield server


def security(env: dict[str, str]) -> KafkaSecurity:
    return load(KafkaSecurity, env)


async def round_trip(env: dict[str, str], topic: str) -> bytes:
    """Produce one record with these settings and read it back with them."""
    sec = security(env)
    bootstrap = env["FOLLOWUP_KAFKA_BOOTSTRAP"]
    producer = make_producer(bootstrap, security=sec, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    consumer = make_consumer(
        bootstrap, topic, security=sec, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert record.value is not None
    return bytes(record.value)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_each_sasl_mechanism_reaches_the_tls_listener(
    broker: SecureKafka, mechanism: str
) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}.sasl"
    assert await round_trip(broker.env(mechanism), topic) == b"hello"


async def test_a_client_certificate_reaches_the_mtls_listener(broker: SecureKafka) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}.mtls"
    assert await round_trip(broker.mtls_env(), topic) == b"hello"


async def test_the_mtls_listener_refuses_a_client_without_a_certificate(
    broker: SecureKafka,
) -> None:
    env = {k: v for k, v in broker.mtls_env().items() if "CERTFILE" not in k and "KEYFILE" not in k}
    producer = make_producer(env["FOLLOWUP_KAFKA_BOOTSTRAP"], security=security(env))
    with pytest.raises(KafkaError):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()


async def test_a_wrong_password_is_refused(broker: SecureKafka) -> None:
    env = {**broker.env("SCRAM-SHA-512"), "FOLLOWUP_KAFKA_SASL_PASSWORD": "not-it"}
    producer = make_producer(env["FOLLOWUP_KAFKA_BOOTSTRAP"], security=security(env))
    with pytest.raises(KafkaError):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()


def test_settings_that_cannot_work_are_one_line_naming_the_variable(
    certificates: Certificates,
) -> None:
    cases = {
        "FOLLOWUP_KAFKA_SASL_USERNAME": {
            "FOLLOWUP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FOLLOWUP_KAFKA_SASL_MECHANISM": "PLAIN",
        },
        "FOLLOWUP_KAFKA_SSL_CAFILE": {
            "FOLLOWUP_KAFKA_SECURITY_PROTOCOL": "SSL",
            "FOLLOWUP_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem",
        },
        "FOLLOWUP_KAFKA_SASL_MECHANISM": {
            "FOLLOWUP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FOLLOWUP_KAFKA_SASL_MECHANISM": "GSSAPI",
        },
    }
    for variable, env in cases.items():
        with pytest.raises(ConfigError, match=variable) as caught:
            load(KafkaSecurity, env)
        assert "\n" not in str(caught.value)
    leaked = {
        "FOLLOWUP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FOLLOWUP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "FOLLOWUP_KAFKA_SASL_USERNAME": "followup",
        "FOLLOWUP_KAFKA_SASL_PASSWORD": "never-shown",
    }
    assert "never-shown" not in repr(load(KafkaSecurity, leaked))


def test_the_admin_tool_applies_and_checks_topics_over_scram(broker: SecureKafka) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    env = {**broker.env("SCRAM-SHA-256", user="operator"), "FOLLOWUP_TOPIC_PREFIX": prefix}
    for command in ("apply", "check"):
        done = subprocess.run(
            [sys.executable, "-m", "followup_admin", "topics", command],
            env={**_base_env(), **env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    assert "s3cret" not in done.stdout + done.stderr


async def test_asyncpg_verifies_the_servers_certificate(postgres: SecurePostgres) -> None:
    schema = f"t_{uuid.uuid4().hex[:10]}"
    await migrate(postgres.url(), schema, REPO / "services/scheduler/migrations")
    pool = await create_pool(postgres.url(), schema, max_size=1)
    try:
        assert await pool.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await pool.close()
    # The server refuses TCP without TLS: the TLS above was not optional.
    with pytest.raises(asyncpg.exceptions.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(postgres.url("disable"))


async def test_a_certificate_from_another_ca_is_refused(
    postgres: SecurePostgres, tmp_path: Path
) -> None:
    other = make_certificates(tmp_path / "other")
    url = postgres.url().replace(str(postgres.certificates.ca), str(other.ca))
    with pytest.raises(OSError):  # ssl.SSLCertVerificationError
        await asyncpg.connect(url)


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWUP_")}


async def test_the_three_services_carry_a_trigger_to_a_call_task_over_tls_and_sasl(
    broker: SecureKafka, postgres: SecurePostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unique = uuid.uuid4().hex[:10]
    names = TopicNames(prefix=f"t{unique}.")
    client = broker.env("SCRAM-SHA-512")
    # The services run on a clock that reads Monday 10:00 in Vilnius, whenever the test
    # runs: a call task goes in business hours, and CI may run at night.
    anchor_real = datetime.now(UTC)
    clinic_morning = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    clock = ScaledClock(anchor_real, clinic_morning, 1.0)
    clock_env = {
        "FOLLOWUP_CLOCK": "scaled",
        "FOLLOWUP_CLOCK_ANCHOR_REAL": anchor_real.isoformat(),
        "FOLLOWUP_CLOCK_ANCHOR_VIRTUAL": clinic_morning.isoformat(),
        "FOLLOWUP_CLOCK_SPEED": "1.0",
    }
    await ensure_topics(broker.plaintext, names)
    for variable, value in client.items():  # this process's own clients (the test's)
        monkeypatch.setenv(variable, value)
    processes: dict[str, ServiceProcess] = {}
    publisher = KafkaPublisher(broker.sasl_ssl, client_id="tests")
    await publisher.start()
    try:
        for service in ("tracker", "scheduler", "notifier"):
            port = free_port()
            env = {
                **client,
                **clock_env,
                "FOLLOWUP_DATABASE_URL": postgres.url(),
                "FOLLOWUP_TOPIC_PREFIX": names.prefix,
                "FOLLOWUP_DB_SCHEMA": f"t_{unique}_{service}",
                "FOLLOWUP_CONSUMER_GROUP": f"{names.prefix}{service}",
                "FOLLOWUP_MLLP_PORT": str(free_port()),
                "FOLLOWUP_API_TOKEN": "test-token",
                "FOLLOWUP_INGEST_TOKEN": "test-token",
                "FOLLOWUP_LINK_SECRET": "test-link-secret",
                "FOLLOWUP_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                "FOLLOWUP_QUIET_START": "00:00",
                "FOLLOWUP_QUIET_END": "00:00",
                "FOLLOWUP_LOG_FORMAT": "console",
            }
            log = tmp_path / f"{service}.log"
            processes[service] = ServiceProcess(service, port, {**_base_env(), **env}, log=log)
            processes[service].start()
        for process in processes.values():
            await process.wait_ready(timeout=120)
            with urllib.request.urlopen(f"{process.url}/readyz", timeout=5) as response:
                assert json.load(response)["checks"]["kafka"] is True
        now = clock.now()
        await publisher.publish(
            names.contacts,
            ContactEvent(
                event_id="contact:pat-tls",
                occurred_at=now,
                source="test",
                patient_id="pat-tls",
                phone="+37060000077",
                timezone="Europe/Vilnius",
            ),
        )
        missed = now - timedelta(hours=2)
        await publisher.publish(
            names.triggers,
            no_show_trigger("pat-tls", "appt-tls", missed=missed),
        )
        [command] = await read_events(
            broker.sasl_ssl, names.notifications, NotificationCommand, 1, timeout=60
        )
        assert command.patient_id == "pat-tls"
        [task] = await read_records(broker.sasl_ssl, names.calltasks, 1, timeout=60)
        assert task.value is not None
        assert json.loads(task.value)["patient_id"] == "pat-tls"
    finally:
        await publisher.stop()
        for process in processes.values():
            process.terminate(timeout=30)
    logs = "".join((tmp_path / f"{s}.log").read_text() for s in processes)
    assert "s3cret" not in logs  # the SASL password is never logged
