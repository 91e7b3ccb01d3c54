"""Kafka adapters: topic creation, a publisher of contract events, a decoding consumer loop.

Consumers are at-least-once: the offset is committed after the handler returned, so
handlers must be idempotent. Nothing a record contains ends a consumer: whatever a decode
or a handler raises, other than a transient infrastructure error (retried), sends the
record to the dead-letter topic through dead_letter_record() (the one dead-letter path of
every consumer, the tracker's included) and the loop goes on. A consumer task that ends
anyway is caught by common.supervision: the service turns unready and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)

from common.clock import Clock
from common.codec import DEFAULT_MAX_ORIGINAL_BYTES, DecodeError, dead_letter, decode, encode
from common.config import ConfigError, KafkaSecurity, StartupError, env_name, load
from common.logs import get_logger
from common.metrics import (
    COMMIT_DURATION,
    CONSUMER_LAG,
    DEAD_LETTERS,
    EVENTS_CONSUMED,
    REBALANCES,
)
from schemas.base import Envelope
from schemas.topics import (
    CATALOGUE,
    TopicConfig,
    TopicLayout,
    TopicLayoutError,
    TopicNames,
    TopicSpec,
    problems,
)

log = get_logger(__name__)

# Errors that say "try again later" (the database or the broker is away), not "this event
# is bad". Not every OSError: a file error (IsADirectoryError from a time zone lookup) is
# about the record and would be retried for ever.
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,  # asyncio.TimeoutError too
    socket.gaierror,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    # A PostgreSQL restart (57P01 admin shutdown, 57P03 cannot connect now), a full
    # connection table or disk (53xxx), a lock taken by another replica (55P03).
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.LockNotAvailableError,
    KafkaConnectionError,
    KafkaTimeoutError,
)
_NETWORK_ERRNOS = frozenset(
    {
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.ENETRESET,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ECONNABORTED,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ETIMEDOUT,
        errno.EPIPE,
    }
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an infrastructure hiccup worth retrying the same record for."""
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False))
    if isinstance(exc, OSError):
        return exc.errno in _NETWORK_ERRNOS
    return False


M = TypeVar("M", bound=Envelope)

SendRaw = Callable[[str, bytes, bytes], Awaitable[object]]


def decode_record(model: type[M], record: ConsumerRecord[bytes, bytes]) -> M:
    """The record as ``model``, or DecodeError for anything else, whatever decoding raised.

    The key must be the event's key (its patient_id): a record without a key, or keyed by
    someone else, lands on a partition where that patient's other events are not, and a
    replica would hold half of the patient's state."""
    try:
        event = decode(model, record.value)
    except DecodeError:
        raise
    except Exception as exc:  # a validator's bug must not end the consumer
        raise DecodeError(f"decoding failed: {type(exc).__name__}", "decode_error") from None
    if record.key is None:
        raise DecodeError("record has no key; the key must be the event's patient_id", "no_key")
    if record.key != event.key():
        raise DecodeError("record key is not the event's patient_id", "wrong_key")
    return event


def handler_failure(exc: BaseException) -> DecodeError:
    # Only the type: an exception's text may quote personal data.
    return DecodeError(f"handler failed: {type(exc).__name__}", "handler_error")


async def dead_letter_record(
    send: SendRaw,
    deadletter_topic: str,
    record: ConsumerRecord[bytes, bytes],
    error: DecodeError,
    *,
    service: str,
    base_topic: str,
    clock: Clock,
    max_original_bytes: int = DEFAULT_MAX_ORIGINAL_BYTES,
) -> None:
    """Send ``record`` to the dead-letter topic with ``error``'s reason; count and log it.

    The letter always fits the topic (the original bytes are cut to ``max_original_bytes``
    and carry their full length and hash). A broker that is away is waited for: the record's
    offset must not be committed before its letter is stored."""
    letter = dead_letter(
        record.value,
        record.key,
        error=error,
        service=service,
        now=clock.now(),
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        max_original_bytes=max_original_bytes,
    )
    value, key = encode(letter), letter.key()
    delay = 0.2
    while True:
        try:
            await send(deadletter_topic, value, key)
            break
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("dead_letter_retry", topic=record.topic, error=type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    DEAD_LETTERS.labels(service, error.error_type).inc()
    EVENTS_CONSUMED.labels(service, base_topic, "dead_letter").inc()
    log.warning(
        "dead_letter",
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        error_type=error.error_type,
    )


# ---------------------------------------------------------------- client construction
#
# Every Kafka client of the project (aiokafka in the services, the harnesses and the
# benchmarks; kafka-python in followup_admin) is built from client_options(), so one set of
# FOLLOWUP_KAFKA_* variables secures them all. Both libraries take the same keyword names
# for these (security_protocol, ssl_context, sasl_*).


def kafka_security(environ: Mapping[str, str] | None = None) -> KafkaSecurity:
    """The FOLLOWUP_KAFKA_* security settings; read at each client's construction (cheap),
    so a process and a test that sets the variables agree."""
    return load(KafkaSecurity, environ)


def tls_context(security: KafkaSecurity) -> ssl.SSLContext:
    """The client's TLS context: the CA (or the system's), the client certificate if any."""
    try:
        context = ssl.create_default_context(cafile=security.kafka_ssl_cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{env_name('kafka_ssl_cafile')}: not a PEM CA file ({exc})") from None
    context.check_hostname = security.kafka_ssl_check_hostname
    if security.kafka_ssl_certfile:
        try:
            context.load_cert_chain(
                security.kafka_ssl_certfile,
                security.kafka_ssl_keyfile or None,
                password=security.kafka_ssl_key_password.get_secret_value() or None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{env_name('kafka_ssl_certfile')}/{env_name('kafka_ssl_keyfile')}: "
                f"certificate and key do not load ({type(exc).__name__})"
            ) from None
    return context


def client_options(
    bootstrap: str, security: KafkaSecurity | None = None, **options: Any
) -> dict[str, Any]:
    """Keyword arguments for any aiokafka or kafka-python client: the address, the security
    settings, then the client's own ``options``."""
    security = kafka_security() if security is None else security
    secured: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "security_protocol": security.kafka_security_protocol,
    }
    if security.uses_tls:
        secured["ssl_context"] = tls_context(security)
    if security.uses_sasl:
        secured["sasl_mechanism"] = security.kafka_sasl_mechanism
        secured["sasl_plain_username"] = security.kafka_sasl_username
        secured["sasl_plain_password"] = security.kafka_sasl_password.get_secret_value()
    return {**secured, **options}


async def start_or_explain(starting: Awaitable[None], bootstrap: str) -> None:
    """A client's first contact: an unreachable or refusing broker becomes one line naming
    the address and the variables, not aiokafka's traceback."""
    try:
        await starting
    except (KafkaError, OSError) as exc:
        protocol = kafka_security().kafka_security_protocol
        raise StartupError(
            f"Kafka unreachable at {bootstrap} over {protocol} ({type(exc).__name__}): set "
            f"{env_name('kafka_bootstrap')} (and {env_name('kafka_security_protocol')}, "
            "FOLLOWUP_KAFKA_SASL_*, FOLLOWUP_KAFKA_SSL_* if the broker wants TLS or SASL)"
        ) from None


def make_producer(bootstrap: str, **options: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**client_options(bootstrap, **options))


def make_consumer(bootstrap: str, *topics: str, **options: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **client_options(bootstrap, **options))


def make_admin(bootstrap: str, **options: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_options(bootstrap, **options))


# A consumer that joins its group before the broker's metadata lists a just-created topic
# gets no partitions of it until its next metadata refresh (aiokafka's default: 5 minutes).
# A refresh every few seconds costs one small request and bounds that gap on a fresh deploy.
METADATA_MAX_AGE_MS = 5_000


class TopicsNotReady(ConfigError):
    """A topic is missing or laid out otherwise than the catalogue says (one line)."""


def topic_layout(environ: Mapping[str, str] | None = None) -> TopicLayout:
    try:
        return TopicLayout.from_env(os.environ if environ is None else environ)
    except TopicLayoutError as exc:
        raise ConfigError(str(exc)) from None


async def ensure_topics(
    bootstrap: str,
    names: TopicNames,
    specs: Iterable[TopicSpec] = CATALOGUE,
    layout: TopicLayout | None = None,
) -> None:
    """Create the catalogue's missing topics when auto-creation is on (local, dev); with it
    off (production) raise TopicsNotReady naming what is missing or differs, so a service
    stops at start-up instead of running on a topic an operator did not lay out."""
    layout = topic_layout() if layout is None else layout
    wanted = [layout.config(spec, names) for spec in specs]
    admin = make_admin(bootstrap)
    await start_or_explain(admin.start(), bootstrap)
    try:
        found = await observe_topics(admin, [w.name for w in wanted])
        missing = [w for w in wanted if w.name not in found]
        if missing and layout.auto_create:
            new = [
                NewTopic(w.name, w.partitions, w.replication_factor, topic_configs=dict(w.configs))
                for w in missing
            ]
            # A replica may create the same topic at the same time: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
            wanted = [w for w in wanted if w.name in found]
        issues = [line for w in wanted for line in problems(w, found.get(w.name))]
    finally:
        await admin.close()
    if issues and layout.auto_create:
        log.warning("topics_differ_from_catalogue", problems=issues)
    elif issues:
        raise TopicsNotReady(
            f"topics not as the catalogue says ({'; '.join(issues)}): run "
            "`python -m followup_admin topics apply` (FOLLOWUP_TOPICS_AUTO_CREATE is off)"
        )


async def observe_topics(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, TopicConfig]:
    """The broker's view of the topics that exist among ``topics``."""
    # Only existing ones: a metadata request naming a missing topic lets a broker with
    # auto.create.topics.enable create it with its own defaults.
    existing = set(await admin.list_topics())
    present = [t for t in topics if t in existing]
    if not present:
        return {}
    described = [t for t in await admin.describe_topics(present) if t["error_code"] == 0]
    if not described:
        return {}
    keys = dict.fromkeys(("cleanup.policy", "min.insync.replicas", "retention.ms"))
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t["topic"], keys) for t in described]
    )
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            configs[resource["resource_name"]] = {
                e["config_names"]: e["config_value"] for e in resource["config_entries"]
            }
    return {
        t["topic"]: TopicConfig(
            t["topic"],
            len(t["partitions"]),
            min((len(p["replicas"]) for p in t["partitions"]), default=0),
            configs.get(t["topic"], {}),
        )
        for t in described
    }


async def delete_topics_with_prefix(bootstrap: str, prefix: str) -> None:
    """Drop every topic of one tenant, test or demo run (names starting with ``prefix``)."""
    if not prefix:
        raise ValueError("refusing to delete every topic: empty prefix")
    admin = make_admin(bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


# /readyz's "kafka" check: one metadata request on the publisher's own connection, bounded
# by a short timeout and answered from its last result for a few seconds, so a probe every
# few seconds from each kubelet costs the broker next to nothing.
BROKER_CHECK_TIMEOUT_SECONDS = 2.0
BROKER_CHECK_CACHE_SECONDS = 5.0


class KafkaPublisher:
    """Publishes contract events keyed by patient; waits for the broker's acknowledgement."""

    def __init__(self, bootstrap: str, *, client_id: str = "followup") -> None:
        self._producer = make_producer(
            bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
        )
        self._broker_checked_at = -BROKER_CHECK_CACHE_SECONDS
        self._broker_reachable = False

    async def start(self) -> None:
        await self._producer.start()

    async def broker_ready(self) -> bool:
        """Whether the broker answers a metadata request now (cached for a few seconds)."""
        now = time.monotonic()
        if now - self._broker_checked_at < BROKER_CHECK_CACHE_SECONDS:
            return self._broker_reachable
        try:
            updated = await asyncio.wait_for(
                self._producer.client.force_metadata_update(), BROKER_CHECK_TIMEOUT_SECONDS
            )
            self._broker_reachable = bool(updated)
        except Exception:  # not started, timed out, refused: not ready, whatever the cause
            self._broker_reachable = False
        self._broker_checked_at = time.monotonic()
        return self._broker_reachable

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, topic: str, event: Envelope) -> None:
        await self._producer.send_and_wait(topic, value=encode(event), key=event.key())

    async def publish_many(self, topic: str, events: Iterable[Envelope]) -> None:
        futures = [await self._producer.send(topic, value=encode(e), key=e.key()) for e in events]
        if futures:
            await asyncio.gather(*futures)

    async def publish_raw(self, topic: str, value: bytes | None, key: bytes | None = None) -> None:
        """Bytes as they are; ``value`` None is a tombstone (a compacted topic's erasure)."""
        await self._producer.send_and_wait(topic, value=value, key=key)


class ConsumerMonitor:
    """Reports an aiokafka consumer's own view of its group: lag per topic, assignment
    changes and commit latency. Any consumer loop can use it: call note_assignment() after
    each poll, commit() instead of consumer.commit(), report_lag() after the commit."""

    def __init__(
        self, consumer: AIOKafkaConsumer, service: str, base_topic: Callable[[str], str]
    ) -> None:
        self._consumer = consumer
        self._service = service
        self._base_topic = base_topic  # topic as deployed -> name without prefix (a label)
        self._assignment: frozenset[TopicPartition] = frozenset()
        self._topics: set[str] = set()

    def note_assignment(self) -> frozenset[TopicPartition]:
        assignment = frozenset(self._consumer.assignment())
        if assignment != self._assignment:
            REBALANCES.labels(self._service).inc()
            self._assignment = assignment
        return assignment

    async def commit(self) -> None:
        started = time.perf_counter()
        await self._consumer.commit()
        COMMIT_DURATION.labels(self._service).observe(time.perf_counter() - started)

    async def report_lag(self) -> None:
        # After a commit the position is the committed offset: lag is what is left.
        lag = dict.fromkeys(self._topics, 0)  # partitions moved away report 0, not stale lag
        for tp in self._assignment:
            topic = self._base_topic(tp.topic)
            lag.setdefault(topic, 0)
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await self._consumer.position(tp)
            except IllegalStateError:
                continue  # revoked by a rebalance since note_assignment()
            lag[topic] += max(0, highwater - position)
        self._topics |= lag.keys()
        for topic, messages in lag.items():
            CONSUMER_LAG.labels(self._service, topic).set(messages)


def _tombstone_key(key: bytes | None) -> str | None:
    """A tombstone's key as a patient id, or None when there is none or it is not text."""
    if not key:
        return None
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


class EventConsumer(Generic[M]):
    """Reads one topic as ``model``, hands each event to ``handler``, dead-letters the rest."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        base_topic: str,
        model: type[M],
        group_id: str,
        handler: Callable[[M], Awaitable[None]],
        publisher: KafkaPublisher,
        deadletter_topic: str,
        service: str,
        clock: Clock,
        max_original_bytes: int = DEFAULT_MAX_ORIGINAL_BYTES,
        on_tombstone: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._consumer = make_consumer(
            bootstrap,
            topic,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        self._topic = topic
        self._base_topic = base_topic
        self._model = model
        self._handler = handler
        self._publisher = publisher
        self._deadletter_topic = deadletter_topic
        self._service = service
        self._clock = clock
        self._max_original_bytes = max_original_bytes
        # A compacted topic's way to erase a key (a record with no value). Without a
        # handler a tombstone is still a dead letter: on other topics it is a mistake.
        self._on_tombstone = on_tombstone
        self._task: asyncio.Task[None] | None = None
        self._monitor = ConsumerMonitor(self._consumer, service, lambda _topic: base_topic)
        self.assigned = asyncio.Event()

    @property
    def tasks(self) -> Mapping[str, asyncio.Task[None]]:
        """The running loop by a stable name, for a Supervisor."""
        return {f"consume:{self._base_topic}": self._task} if self._task is not None else {}

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"consume:{self._topic}")

    async def stop(self) -> None:
        # A task that already ended has been reported by the supervisor; not raised again.
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._poll_once()
                delay = 0.2
            except CommitFailedError as exc:
                # A rebalance took the partitions: the new owner replays from the last
                # commit; handlers are idempotent.
                log.warning("commit_failed", topic=self._base_topic, error=type(exc).__name__)
            except Exception as exc:
                if not is_transient(exc):
                    raise  # the supervisor turns the service unready
                log.warning("consume_retry", topic=self._base_topic, error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _poll_once(self) -> None:
        batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
        if self._monitor.note_assignment():
            self.assigned.set()
        for _tp, records in batches.items():
            for record in records:
                await self.handle_record(record)
        if batches:
            await self._monitor.commit()
        await self._monitor.report_lag()

    async def handle_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        call: Callable[[], Awaitable[None]]
        tombstone = self._on_tombstone
        if record.value is None and tombstone is not None:
            key = _tombstone_key(record.key)
            if key is None:
                error = DecodeError("tombstone without a usable key (a patient id)", "no_key")
                await self._dead_letter(record, error)
                return
            call = lambda: tombstone(key)  # noqa: E731
        else:
            try:
                event = decode_record(self._model, record)
            except DecodeError as error:
                await self._dead_letter(record, error)
                return
            call = lambda: self._handler(event)  # noqa: E731
        delay = 0.2
        while True:
            try:
                await call()
                break
            except Exception as exc:  # one bad event must not stop the consumer
                if is_transient(exc):
                    # The database or broker is away: wait and try the same event again.
                    log.warning("handler_retry", topic=record.topic, error=type(exc).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                log.error(
                    "handler_failed",
                    topic=record.topic,
                    offset=record.offset,
                    error=type(exc).__name__,
                )
                await self._dead_letter(record, handler_failure(exc))
                return
        EVENTS_CONSUMED.labels(self._service, self._base_topic, "ok").inc()

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], error: DecodeError) -> None:
        await dead_letter_record(
            self._publisher.publish_raw,
            self._deadletter_topic,
            record,
            error,
            service=self._service,
            base_topic=self._base_topic,
            clock=self._clock,
            max_original_bytes=self._max_original_bytes,
        )
