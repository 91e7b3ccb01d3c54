"""Topics as code against the real broker: services create what is missing where that is
allowed (local, dev) and refuse to start where it is not (production), with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from common.kafka import TopicsNotReady, delete_topics_with_prefix, ensure_topics, observe_topics
from schemas.topics import APPOINTMENTS, CATALOGUE, CONTACTS, DEADLETTER, TopicLayout, TopicNames
from tests.support import infra
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

STRICT = TopicLayout(auto_create=False)


@pytest.fixture
async def fresh(kafka_bootstrap: str, unique: str) -> AsyncIterator[TopicNames]:
    """A prefix with no topics yet (unlike the shared ``topics`` fixture)."""
    names = TopicNames(prefix=f"tc{unique}.")
    yield names
    await delete_topics_with_prefix(kafka_bootstrap, names.prefix)


async def _listed(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return topic in await admin.list_topics()


async def observed(bootstrap: str, names: TopicNames) -> dict[str, tuple[int, str | None]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        found = await observe_topics(admin, [names.of(s) for s in CATALOGUE])
    finally:
        await admin.close()
    return {n: (t.partitions, t.configs.get("cleanup.policy")) for n, t in found.items()}


async def test_auto_creation_lays_the_catalogue_out(
    kafka_bootstrap: str, fresh: TopicNames
) -> None:
    await ensure_topics(kafka_bootstrap, fresh, layout=TopicLayout(partitions=3))

    async def all_listed() -> dict[str, tuple[int, str | None]] | None:
        found = await observed(kafka_bootstrap, fresh)
        return found if len(found) == len(CATALOGUE) else None

    # The broker lists a created topic a moment after it acknowledged the creation.
    found = await eventually(all_listed)
    assert found[fresh.appointments] == (3, "delete")
    assert found[fresh.contacts] == (3, "compact")
    assert found[fresh.deadletter] == (1, "delete")
    # Now laid out: the strict check that production runs passes.
    await ensure_topics(kafka_bootstrap, fresh, layout=TopicLayout(partitions=3, auto_create=False))


async def test_without_auto_creation_a_missing_topic_stops_the_start(
    kafka_bootstrap: str, fresh: TopicNames
) -> None:
    with pytest.raises(TopicsNotReady) as error:
        await ensure_topics(kafka_bootstrap, fresh, (APPOINTMENTS, DEADLETTER), STRICT)
    message = str(error.value)
    assert f"{fresh.appointments}: missing" in message
    assert "followup_admin topics apply" in message
    assert "\n" not in message
    assert await observed(kafka_bootstrap, fresh) == {}  # nothing was created


async def test_without_auto_creation_a_differently_laid_out_topic_stops_the_start(
    kafka_bootstrap: str, fresh: TopicNames
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:  # the old hard-coded layout: 4 partitions, and contacts not compacted
        await admin.create_topics([NewTopic(fresh.contacts, 4, 1)])
        await eventually(lambda: _listed(admin, fresh.contacts))
    finally:
        await admin.close()
    with pytest.raises(TopicsNotReady) as error:
        await ensure_topics(kafka_bootstrap, fresh, (CONTACTS,), STRICT)
    assert f"{fresh.contacts}: 4 partitions, the catalogue says 6" in str(error.value)
    assert "cleanup.policy=delete, the catalogue says compact" in str(error.value)


def test_a_service_refuses_to_start_with_one_line_when_topics_are_missing(
    kafka_bootstrap: str, unique: str
) -> None:
    env = {
        **os.environ,
        "FOLLOWUP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FOLLOWUP_TOPIC_PREFIX": f"tn{unique}.",
        "FOLLOWUP_TOPICS_AUTO_CREATE": "false",
        "FOLLOWUP_HTTP_PORT": "0",
        "FOLLOWUP_MLLP_PORT": "0",
        "FOLLOWUP_LOG_LEVEL": "ERROR",
    }
    result = subprocess.run(
        [sys.executable, "-m", "services.tracker"],
        cwd=infra.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("configuration error: topics not as the catalogue says")
    assert f"tn{unique}.followup.appointments: missing" in lines[0]
