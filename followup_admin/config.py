"""The tool reads the same FOLLOWUP_* variables as the services it looks after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from pydantic import Field

from common.config import Settings
from common.kafka import topic_layout
from schemas.topics import TopicLayout, TopicNames


class AdminSettings(Settings):
    service: str = "followup-admin"
    # The scheduler's case API (`cases`), and the token it checks (FOLLOWUP_API_TOKEN).
    scheduler_url: str = "http://127.0.0.1:8082"
    api_token: str = ""
    request_timeout_seconds: float = Field(default=10.0, gt=0)


# A wrong address should fail in seconds, not after kafka-python's default 30.
BOOTSTRAP_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class Deployment:
    """Where the commands act: one broker, one topic prefix, one layout."""

    bootstrap: str
    names: TopicNames
    layout: TopicLayout

    @classmethod
    def of(cls, settings: AdminSettings) -> Deployment:
        return cls(settings.kafka_bootstrap, TopicNames(settings.topic_prefix), topic_layout())

    @contextmanager
    def admin(self) -> Iterator[KafkaAdminClient]:
        client = KafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id="followup-admin",
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        )
        try:
            yield client
        finally:
            client.close()

    @contextmanager
    def consumer(self) -> Iterator[KafkaConsumer]:
        # No group: the tool reads, it never commits offsets or joins a service's group.
        client = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id="followup-admin",
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            group_id=None,
            enable_auto_commit=False,
        )
        try:
            yield client
        finally:
            client.close()

    @contextmanager
    def producer(self) -> Iterator[KafkaProducer]:
        client = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id="followup-admin",
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            acks="all",
            enable_idempotence=True,
        )
        try:
            yield client
        finally:
            client.close()
