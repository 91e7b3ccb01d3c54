"""The scheduler as a running service on the real broker and database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable
from datetime import timedelta

import aiohttp
import asyncpg
import pytest

from common.clock import ManualClock
from common.codec import decode
from common.kafka import KafkaPublisher
from schemas.base import Envelope
from schemas.events import NotificationCommand
from schemas.topics import TopicNames
from services.scheduler import metrics
from services.scheduler.app import Scheduler
from services.scheduler.cases import case_id_for
from services.scheduler.ledger import CaseLedger
from services.scheduler.policy import CadencePolicy
from services.scheduler.relay import OutboxRelay
from tests.integration.scheduler.conftest import MISSED, booking, deceased, no_show, outcome
from tests.support.kafka import read_all, read_events
from tests.support.polling import eventually
from tests.support.scheduler import scheduler_settings

pytestmark = pytest.mark.integration
TOKEN = "test-token-not-secret"
CASE = case_id_for("no_show:appt-1")


@pytest.fixture
async def scheduler(
    kafka_bootstrap: str,
    database_url: str,
    topics: TopicNames,
    pg_schema: str,
    clock: ManualClock,
    policy: CadencePolicy,
) -> AsyncIterator[Scheduler]:
    settings = scheduler_settings(
        kafka_bootstrap, database_url, topics, pg_schema, api_token=TOKEN, poll_seconds=0.05
    )
    service = Scheduler(settings, clock, policy)
    await service.start()
    await asyncio.wait_for(service.consumers_assigned(), 30)
    yield service
    await service.stop()


async def test_trigger_to_command_outcomes_advance_and_a_booking_closes(
    scheduler: Scheduler,
    publisher: KafkaPublisher,
    topics: TopicNames,
    kafka_bootstrap: str,
    clock: ManualClock,
) -> None:
    pool = scheduler.pool
    assert pool is not None

    async def case_state() -> tuple[str, str | None] | None:
        row = await pool.fetchrow("SELECT state, resolution FROM cases WHERE case_id = $1", CASE)
        return None if row is None else (row["state"], row["resolution"])

    await publisher.publish(topics.triggers, no_show())
    await eventually(lambda: _is(case_state(), ("open", None)))
    clock.set(MISSED + timedelta(hours=1))
    [command] = await read_events(kafka_bootstrap, topics.notifications, NotificationCommand, 1)
    assert command.idempotency_key == command.event_id == f"{CASE}:1"
    assert (command.channel, command.purpose, command.patient_id) == (
        "call_task",
        "follow_up",
        "pat-1",
    )
    assert command.window_start == MISSED + timedelta(hours=1)

    await publisher.publish(topics.outcomes, outcome(CASE, 1, "no_answer", clock.now()))
    await eventually(
        lambda: _is(
            pool.fetchval("SELECT outcome FROM attempts WHERE attempt_number = 1"), "no_answer"
        )
    )
    # A booking of a new visit in the department closes the contacted case as recovered.
    await publisher.publish(topics.appointments, booking("pat-1", "dental", clock.now()))
    await eventually(lambda: _is(case_state(), ("closed", "recovered")))
    # A message that is not a contract goes to the dead letters; the consumer goes on.
    await publisher.publish_raw(topics.outcomes, b"{not json", b"pat-1")
    await publisher.publish(topics.triggers, no_show(patient="pat-2", appointment="appt-2"))
    await eventually(
        lambda: _is(pool.fetchval("SELECT count(*) FROM cases WHERE patient_id = 'pat-2'"), 1)
    )
    letters = await read_all(kafka_bootstrap, topics.deadletter, quiet=0.5)
    assert len(letters) == 1

    # pat-2's first call task goes out at once (it is due); then the patient dies.
    other = case_id_for("no_show:appt-2")
    await eventually(
        lambda: _is(pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"), 2)
    )
    status = deceased("pat-2", clock.now())
    await publisher.publish(topics.patients, status)
    commands = await read_events(
        kafka_bootstrap, topics.notifications, NotificationCommand, 3, timeout=20
    )
    # Keyed by patient: pat-2's commands keep their order, not their place among pat-1's.
    assert [(c.idempotency_key, c.purpose) for c in commands if c.patient_id == "pat-2"] == [
        (f"{other}:1", "follow_up"),
        (f"{other}:1:withdrawal", "withdrawal"),
    ]
    row = await pool.fetchrow("SELECT state, resolution FROM cases WHERE case_id = $1", other)
    assert (row["state"], row["resolution"]) == ("closed", "deceased")

    await _check_api(scheduler)


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _check_api(scheduler: Scheduler) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{scheduler.ops.port}") as http:
        async with http.get("/cases") as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"] == "Bearer"
            assert "bearer token" in (await r.json())["error"]
        async with http.get("/cases", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        async with http.get(
            "/cases?state=closed&reason=no_show&patient_id=pat-1", headers=auth
        ) as r:
            assert r.status == 200
            body = await r.json()
            assert [c["case_id"] for c in body["cases"]] == [CASE]
            assert body["cases"][0]["resolution"] == "recovered"
        async with http.get("/cases?state=closed&limit=1", headers=auth) as r:
            page = await r.json()
            assert len(page["cases"]) == 1 and page["next"] is not None
        async with http.get(f"/cases?state=closed&after={page['next']}", headers=auth) as r:
            rest = (await r.json())["cases"]
            assert len(rest) == 1 and rest[0]["case_id"] != page["next"]
        # The worklist: open (still chased) or not, by department.
        async with http.get("/cases?open=false&department=dental", headers=auth) as r:
            assert len((await r.json())["cases"]) == 2
        async with http.get("/cases?open=true", headers=auth) as r:
            assert (await r.json())["cases"] == []
        async with http.get("/cases?open=maybe", headers=auth) as r:
            assert r.status == 400 and "open" in (await r.json())["error"]
        async with http.get("/cases?state=nonsense", headers=auth) as r:
            assert r.status == 400
            assert "state" in (await r.json())["error"]
        async with http.get("/cases?deadline_before=yesterday", headers=auth) as r:
            assert r.status == 400
        # Issue 19: a NUL byte in a query or a path id answered 500 (PostgreSQL refuses it).
        for hostile in ("/cases?patient_id=p%00", "/cases/case-1%00"):
            async with http.get(hostile, headers=auth) as r:
                assert r.status == 400, hostile
                assert "control characters" in (await r.json())["error"]
        async with http.get(f"/cases/{CASE}", headers=auth) as r:
            detail = await r.json()
            assert next(a["outcome"] for a in detail["attempts"]) == "no_answer"
            events = [h["event"] for h in detail["history"]]
            assert events[0] == "opened" and events[-1] == "closed"
            assert "phone" not in str(detail)
            risk = detail["risk"]  # the score and its inputs, as on the call task
            assert risk["earlier_no_shows"] == 0 and risk["plan_stage"] is False
            assert risk["score"] == risk["unanswered_attempts"] == 1
        async with http.get("/cases/case-unknown", headers=auth) as r:
            assert r.status == 404
            assert (await r.json())["error"] == "no such case"
        # Corrections: recorded in the history; a case closed by a booking stays closed.
        fix = f"/cases/{CASE}/attempts/1/corrections"
        body = {"correction_id": "fix-1", "outcome": "busy", "reported_by": "admin-3"}
        async with http.post(fix, json=body) as r:
            assert r.status == 401
        async with http.post(fix, json=body, headers=auth) as r:
            assert r.status == 200 and (await r.json())["result"] == "recorded"
        async with http.post(fix, json=body, headers=auth) as r:
            assert (await r.json())["result"] == "duplicate"
        async with http.post(fix, json={**body, "outcome": "opt_in"}, headers=auth) as r:
            assert r.status == 400
        async with http.post(fix, json={**body, "extra": 1}, headers=auth) as r:
            assert r.status == 400 and "extra" in (await r.json())["error"]
        async with http.post(fix.replace("/1/", "/7/"), json=body, headers=auth) as r:
            assert r.status == 404
        async with http.get(f"/cases/{CASE}", headers=auth) as r:
            history = (await r.json())["history"]
            assert history[-1]["event"] == "corrected" and history[-1]["detail"]["to"] == "busy"
        async with http.get("/metrics") as r:
            text = await r.text()
            # One clinic, no sites file: the bounded site label is "none".
            assert 'followup_scheduler_cases_opened_total{reason="no_show",site="none"}' in text
            assert 'cases_closed_total{resolution="recovered",site="none"}' in text
            assert "followup_scheduler_outbox_published_total" in text
            assert "\nfollowup_scheduler_corrections_total " in text


class RelayDied(Exception):
    pass


class CrashingPublisher(KafkaPublisher):
    """A relay that dies right after the broker took the batch, before marking it."""

    async def publish_many(self, topic: str, events: Iterable[Envelope]) -> None:
        await super().publish_many(topic, events)
        raise RelayDied


async def test_a_relay_dying_after_publish_resends_and_loses_nothing(
    kafka_bootstrap: str,
    topics: TopicNames,
    pool: asyncpg.Pool,
    ledger: CaseLedger,
    clock: ManualClock,
) -> None:
    for n in range(5):
        await ledger.handle_trigger(no_show(patient=f"pat-{n}", appointment=f"appt-{n}"))
    clock.set(MISSED + timedelta(hours=1))
    assert await ledger.fire_due() == 5  # committed: attempt fired, command in the outbox

    crashing = CrashingPublisher(kafka_bootstrap)
    await crashing.start()
    try:
        with pytest.raises(RelayDied):
            await OutboxRelay(pool, crashing, topics.notifications, clock).publish_pending()
    finally:
        await crashing.stop()
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 5

    restarted = KafkaPublisher(kafka_bootstrap)
    await restarted.start()
    try:
        assert (
            await OutboxRelay(pool, restarted, topics.notifications, clock).publish_pending() == 5
        )
        assert (
            await OutboxRelay(pool, restarted, topics.notifications, clock).publish_pending() == 0
        )
    finally:
        await restarted.stop()
    records = await read_all(kafka_bootstrap, topics.notifications, quiet=1.0)
    commands = [decode(NotificationCommand, r.value) for r in records]
    keys = [c.idempotency_key for c in commands]
    # Sent twice, never lost; the repeat carries the same key, so the notifier drops it.
    assert len(keys) == 10 and len(set(keys)) == 5
    assert all(r.key == c.patient_id.encode() for r, c in zip(records, commands, strict=True))


async def test_the_relay_counts_the_escalation_tasks_it_sent_and_nothing_else(
    kafka_bootstrap: str,
    topics: TopicNames,
    pool: asyncpg.Pool,
    ledger: CaseLedger,
    clock: ManualClock,
) -> None:
    for n in range(5):
        await ledger.handle_trigger(no_show(patient=f"pat-{n}", appointment=f"appt-{n}"))
    clock.set(MISSED + timedelta(hours=1))
    assert await ledger.fire_due() == 5
    # Two of the five commands are escalations, one a withdrawal of an earlier call task.
    await pool.execute(
        """UPDATE outbox SET payload = jsonb_set(payload, '{purpose}',
               CASE WHEN patient_id IN ('pat-0', 'pat-1') THEN '"escalation"'::jsonb
                    WHEN patient_id = 'pat-2' THEN '"withdrawal"'::jsonb
                    ELSE payload -> 'purpose' END)"""
    )
    sent = metrics.ESCALATIONS_SENT.labels("none")._value.get()
    crashing = CrashingPublisher(kafka_bootstrap)
    await crashing.start()
    try:
        with pytest.raises(RelayDied):
            await OutboxRelay(pool, crashing, topics.notifications, clock).publish_pending()
    finally:
        await crashing.stop()
    assert (
        metrics.ESCALATIONS_SENT.labels("none")._value.get() == sent
    )  # not marked sent: not counted

    relay = KafkaPublisher(kafka_bootstrap)
    await relay.start()
    try:
        assert await OutboxRelay(pool, relay, topics.notifications, clock).publish_pending() == 5
        assert await OutboxRelay(pool, relay, topics.notifications, clock).publish_pending() == 0
    finally:
        await relay.stop()
    assert metrics.ESCALATIONS_SENT.labels("none")._value.get() == sent + 2
