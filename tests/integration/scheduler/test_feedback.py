"""Feedback after a recovered visit, through the running scheduler on the real broker and
database: the rebooked visit attended -> one question on the patient's channel; the answer
-> the rating per department in metrics and the comment through the case API alone."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta

import aiohttp
import pytest
from prometheus_client import REGISTRY

from common.audit import credential_id, seen_since
from common.clock import ManualClock
from common.kafka import KafkaPublisher
from followup_admin import cli
from schemas.events import AppointmentEvent, NotificationCommand, OutcomeEvent
from schemas.topics import TopicNames
from services.scheduler.app import Scheduler
from services.scheduler.cases import case_id_for
from services.scheduler.feedback import AFTER_CHECK_IN, FEEDBACK_ATTEMPT
from services.scheduler.policy import CadencePolicy
from tests.integration.scheduler.conftest import MISSED, booking, no_show, outcome
from tests.support.kafka import read_events
from tests.support.polling import eventually
from tests.support.scheduler import scheduler_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def token() -> str:
    """A token of each test alone: the audit log (one schema for all) is asked about it."""
    return f"feedback-token-{uuid.uuid4().hex}"


CASE = case_id_for("no_show:appt-1")


@pytest.fixture
async def scheduler(
    kafka_bootstrap: str,
    database_url: str,
    topics: TopicNames,
    pg_schema: str,
    clock: ManualClock,
    policy: CadencePolicy,
    token: str,
) -> AsyncIterator[Scheduler]:
    settings = scheduler_settings(
        kafka_bootstrap, database_url, topics, pg_schema, api_token=token, poll_seconds=0.05
    )
    service = Scheduler(settings, clock, policy)
    await service.start()
    await asyncio.wait_for(service.consumers_assigned(), 30)
    yield service
    await service.stop()


def attended(at: object, status: str = "fulfilled") -> AppointmentEvent:
    return AppointmentEvent.model_validate(
        {
            "event_id": f"appt-new-pat-1:{status}",
            "occurred_at": at,
            "source": "tracker",
            "change": "status_changed",
            "appointment_id": "appt-new-pat-1",
            "patient_id": "pat-1",
            "start": MISSED + timedelta(days=2),
            "timezone": "Europe/Vilnius",
            "department": "dental",
            "status": status,
        }
    )


def answer(rating: int, at: object, note: str | None, event_id: str) -> OutcomeEvent:
    return OutcomeEvent.model_validate(
        {
            "event_id": event_id,
            "occurred_at": at,
            "source": "notifier",
            "outcome": "feedback",
            "patient_id": "pat-1",
            "channel": "sms",
            "case_id": CASE,
            "attempt_number": FEEDBACK_ATTEMPT,
            "idempotency_key": f"{CASE}:feedback",
            "rating": rating,
            "note": note,
        }
    )


def ratings(rating: str) -> float:
    labels = {"department": "dental", "rating": rating}
    return REGISTRY.get_sample_value("followup_scheduler_feedback_ratings_total", labels) or 0.0


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_an_attended_rebooked_visit_gets_one_question_and_its_answer_is_kept(
    scheduler: Scheduler,
    publisher: KafkaPublisher,
    topics: TopicNames,
    kafka_bootstrap: str,
    clock: ManualClock,
    token: str,
) -> None:
    pool = scheduler.pool
    assert pool is not None
    # The patient lives in London; the clinic is in Vilnius.
    await publisher.publish(topics.triggers, no_show(patient_timezone="Europe/London"))
    clock.set(MISSED + timedelta(hours=1))
    await read_events(kafka_bootstrap, topics.notifications, NotificationCommand, 1)
    await publisher.publish(topics.outcomes, outcome(CASE, 1, "no_answer", clock.now()))
    await publisher.publish(topics.appointments, booking("pat-1", "dental", clock.now()))
    await eventually(
        lambda: _is(
            pool.fetchval("SELECT resolution FROM cases WHERE case_id = $1", CASE), "recovered"
        )
    )
    # Booked, not yet attended: nothing is asked.
    assert await pool.fetchval("SELECT asked_at FROM feedback WHERE case_id = $1", CASE) is None

    clock.set(MISSED + timedelta(days=2, hours=1))
    await publisher.publish(topics.appointments, attended(clock.now(), "arrived"))
    await publisher.publish(topics.appointments, attended(clock.now(), "fulfilled"))
    commands = await read_events(kafka_bootstrap, topics.notifications, NotificationCommand, 2)
    question = commands[-1]
    assert question.purpose == "feedback" and question.idempotency_key == f"{CASE}:feedback"
    # The case reached the patient by call only: the question goes by SMS, in the window.
    assert question.channel == "sms" and question.attempt_number == FEEDBACK_ATTEMPT
    # Asked at the check-in, to go two hours later (the patient is in the waiting room).
    assert question.window_start == clock.now() + AFTER_CHECK_IN
    assert question.doctor_notes is None
    # In the clinic's zone, as every command (the notifier places it in the patient's).
    assert question.timezone == commands[0].timezone == "Europe/Vilnius"
    # Asked once, though the visit was reported attended twice.
    await asyncio.sleep(0.5)
    count = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE idempotency_key LIKE '%:feedback'"
    )
    assert count == 1

    before, ones = ratings("4"), ratings("1")
    await publisher.publish(topics.outcomes, answer(4, clock.now(), "The doctor was kind", "fb-1"))
    await eventually(
        lambda: _is(pool.fetchval("SELECT rating FROM feedback WHERE case_id = $1", CASE), 4)
    )
    assert ratings("4") == before + 1
    # A second answer to the same question changes nothing.
    await publisher.publish(topics.outcomes, answer(1, clock.now(), None, "fb-2"))
    await eventually(
        lambda: _is(
            pool.fetchval("SELECT count(*) FROM processed_events WHERE event_id = 'fb-2'"), 1
        )
    )
    assert await pool.fetchval("SELECT rating FROM feedback WHERE case_id = $1", CASE) == 4
    assert ratings("1") == ones and ratings("4") == before + 1

    # The comment is the clinic's to read through the case API.
    auth = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(f"http://127.0.0.1:{scheduler.ops.port}") as http,
        http.get(f"/cases/{CASE}", headers=auth) as r,
    ):
        body = await r.json()
    assert body["feedback"]["rating"] == 4 and body["feedback"]["channel"] == "sms"
    assert body["feedback"]["comment"] == "The doctor was kind"


async def test_a_case_the_desk_closed_as_rebooked_is_asked_after_the_bookings_visit(
    scheduler: Scheduler,
    publisher: KafkaPublisher,
    topics: TopicNames,
    kafka_bootstrap: str,
    clock: ManualClock,
) -> None:
    """The front desk reports "answered, rebooked" first; the hospital's booking arrives
    after the case closed: its visit, once attended, still gets the one question."""
    pool = scheduler.pool
    assert pool is not None
    await publisher.publish(topics.triggers, no_show())
    clock.set(MISSED + timedelta(hours=1))
    await read_events(kafka_bootstrap, topics.notifications, NotificationCommand, 1)
    await publisher.publish(topics.outcomes, outcome(CASE, 1, "answered_rebooked", clock.now()))
    await eventually(
        lambda: _is(
            pool.fetchval("SELECT resolution FROM cases WHERE case_id = $1", CASE), "recovered"
        )
    )
    assert await pool.fetchval("SELECT count(*) FROM feedback") == 0
    clock.set(MISSED + timedelta(hours=2))
    await publisher.publish(topics.appointments, booking("pat-1", "dental", clock.now()))
    await eventually(lambda: _is(pool.fetchval("SELECT count(*) FROM feedback"), 1))
    # Another department's booking is not this case's visit: nothing more is awaited.
    other = booking("pat-1", "physio", clock.now(), appointment="appt-physio")
    await publisher.publish(topics.appointments, other)
    clock.set(MISSED + timedelta(days=2, hours=1))
    await publisher.publish(topics.appointments, attended(clock.now()))
    commands = await read_events(kafka_bootstrap, topics.notifications, NotificationCommand, 2)
    assert commands[-1].purpose == "feedback" and commands[-1].case_id == CASE
    assert commands[-1].window_start == clock.now()  # the visit is over: at once
    assert await pool.fetchval("SELECT count(*) FROM feedback") == 1


async def test_every_read_of_a_case_is_in_the_audit_log_and_the_admin_tool_answers_for_it(
    scheduler: Scheduler,
    publisher: KafkaPublisher,
    topics: TopicNames,
    clock: ManualClock,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    token: str,
) -> None:
    pool = scheduler.pool
    assert pool is not None
    since = clock.now()
    await publisher.publish(topics.triggers, no_show())
    await publisher.publish(topics.triggers, no_show(patient="pat-2", appointment="appt-2"))
    await eventually(lambda: _is(pool.fetchval("SELECT count(*) FROM cases"), 2))
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{scheduler.ops.port}") as http:
        async with http.get("/cases", headers=auth) as r:
            assert r.status == 200
        async with http.get(f"/cases/{CASE}", headers=auth) as r:
            assert r.status == 200
        async with http.get("/cases", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401  # refused: nothing was read, nothing recorded

    credential = credential_id("api_token", token)
    found = {s.patient_id: s for s in await seen_since(pool, "audit", credential, since)}
    assert set(found) == {"pat-1", "pat-2"}
    assert found["pat-1"].reads == 2 and found["pat-2"].reads == 1
    assert set(found["pat-1"].routes) == {"GET /cases", "GET /cases/{case_id}"}
    assert "history" in found["pat-1"].fields and "history" not in found["pat-2"].fields
    raw = await pool.fetchval(
        'SELECT count(*) FROM "audit".reads WHERE credential_id LIKE $1', "%" + token + "%"
    )
    assert raw == 0  # the token itself is never written, only its fingerprint

    # The breach protocol's question, through the admin tool, with the leaked token given.
    monkeypatch.setenv("FOLLOWUP_DATABASE_URL", database_url)
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    argv = ["audit", "--secret-stdin", "--since", since.isoformat(), "--json"]
    assert await asyncio.to_thread(cli.main, argv) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["credential_id"] == credential and answer["patients"] == 2
    assert [p["patient_id"] for p in answer["reads"]] == ["pat-1", "pat-2"]
    assert token not in json.dumps(answer)
