"""A running notifier whose call tasks go to the administrators' own tools (a FHIR server, a
CalDAV list, Jira, Zendesk, chat): the same ``World`` as the other notifier tests, with only
the sinks under test configured and the SMS/SMTP parts left idle (the webhook receiver too,
unless the caller passes one it started)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from common.clock import ManualClock
from common.db import drop_schema
from common.kafka import delete_topics_with_prefix
from schemas.events import OutcomeEvent
from services.notifier.app import NotifierApp
from standins.sms_provider import SmsProviderStandIn
from tests.integration.notifier.conftest import world_settings
from tests.integration.notifier.world import START, Inbox, WebhookReceiver, World, running_world
from tests.support import infra
from tests.support.polling import eventually, free_port


@asynccontextmanager
async def tool_world(
    *, webhook: WebhookReceiver | None = None, **settings: object
) -> AsyncIterator[World]:
    """The notifier on topics and a schema of its own (dropped after), at ``START``."""
    infra.ensure_up()
    unique = uuid.uuid4().hex[:10]
    prefix, schema = f"t{unique}.", f"t_{unique}"
    try:
        async with notifier_world(
            prefix, schema, ManualClock(START), webhook=webhook, **settings
        ) as world:
            yield world
    finally:
        await drop_schema(infra.DATABASE_URL, schema)


@asynccontextmanager
async def fresh_names() -> AsyncIterator[tuple[str, str]]:
    """A topic prefix and a schema of their own for runs of ``notifier_world`` (a restart
    is a second run on the same names); the schema and the topics are removed after."""
    infra.ensure_up()
    unique = uuid.uuid4().hex[:10]
    prefix, schema = f"t{unique}.", f"t_{unique}"
    try:
        yield prefix, schema
    finally:
        await drop_schema(infra.DATABASE_URL, schema)
        await delete_topics_with_prefix(infra.KAFKA_BOOTSTRAP, prefix)


@asynccontextmanager
async def notifier_world(
    prefix: str,
    schema: str,
    clock: ManualClock,
    *,
    webhook: WebhookReceiver | None = None,
    **settings: object,
) -> AsyncIterator[World]:
    """The notifier on ``prefix``'s topics and ``schema``, kept after it stops: running it
    again on the same names is a restart (the caller drops the schema)."""
    http_port = free_port()
    base_url = f"http://127.0.0.1:{http_port}"
    app = NotifierApp(
        world_settings(prefix, schema, http_port=http_port, public_base_url=base_url, **settings),
        clock,
    )
    running = running_world(
        app,
        clock,
        primary=SmsProviderStandIn("ACidle", "idle"),  # never started: no SMS here
        secondary=SmsProviderStandIn("ACidle2", "idle"),
        inbox=Inbox(),
        webhook=webhook or WebhookReceiver(),
        base_url=base_url,
    )
    async with running as world:
        yield world


async def withdraw(world: World, case_id: str, patient_id: str) -> OutcomeEvent:
    """The scheduler's withdrawal of the case's first call task (its own key, as the
    scheduler keys it); returns the notifier's ``withdrawn`` outcome."""
    key = f"{case_id}:1:withdrawal"
    command = world.command(
        case_id, patient_id, "call_task", purpose="withdrawal", idempotency_key=key, event_id=key
    )
    await world.send(command)
    outcome: OutcomeEvent = await eventually(lambda: world.outcome(f"{key}:withdrawn"))
    return outcome
