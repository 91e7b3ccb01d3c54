"""Fixtures shared by every tier.

The real broker and database are brought up once per session (by the repository's own
script when they are not running); each test gets its own topics (a unique prefix) and
its own PostgreSQL schema, so tests never see each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from common.kafka import KafkaPublisher, delete_topics_with_prefix, ensure_topics
from schemas.topics import TopicNames
from tests.support import infra


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    infra.ensure_up()
    return infra.KAFKA_BOOTSTRAP


@pytest.fixture(scope="session")
def database_url() -> str:
    infra.ensure_up()
    return infra.DATABASE_URL


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def topics(kafka_bootstrap: str, unique: str) -> AsyncIterator[TopicNames]:
    names = TopicNames(prefix=f"t{unique}.")
    await ensure_topics(kafka_bootstrap, names)
    yield names
    # Thousands of leftover topics slow the broker down for every later test.
    await delete_topics_with_prefix(kafka_bootstrap, names.prefix)


@pytest.fixture
async def publisher(kafka_bootstrap: str) -> AsyncIterator[KafkaPublisher]:
    pub = KafkaPublisher(kafka_bootstrap, client_id="tests")
    await pub.start()
    yield pub
    await pub.stop()


@pytest.fixture
async def pg_schema(database_url: str, unique: str) -> AsyncIterator[str]:
    """A schema name of the test's own; dropped afterwards."""
    from common.db import drop_schema

    schema = f"t_{unique}"
    yield schema
    await drop_schema(database_url, schema)
