"""The tool reads the same FOLLOWUP_* variables as the services it looks after."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from pydantic import Field

from common.config import Settings
from common.kafka import client_options, topic_layout
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

    def admin(self) -> contextlib.closing[KafkaAdminClient]:
        return contextlib.closing(KafkaAdminClient(**self._client_options()))

    def consumer(self) -> contextlib.closing[KafkaConsumer]:
        # No group: the tool reads, it never commits offsets or joins a service's group.
        return contextlib.closing(
            KafkaConsumer(**self._client_options(), group_id=None, enable_auto_commit=False)
        )

    def producer(self) -> contextlib.closing[KafkaProducer]:
        return contextlib.closing(
            KafkaProducer(**self._client_options(), acks="all", enable_idempotence=True)
        )

    def _client_options(self) -> dict[str, Any]:
        # The services' FOLLOWUP_KAFKA_* security settings: kafka-python takes the same
        # keywords (security_protocol, ssl_context, sasl_*) as aiokafka.
        return client_options(
            self.bootstrap, client_id="followup-admin", bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS
        )
