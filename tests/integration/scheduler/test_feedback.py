"""Feedback after a recovered visit, through the running scheduler on the real broker and
database: the rebooked visit attended -> one question on the patient's channel; the answer
-> the rating per department in metrics and the comment through the case API alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta

import aiohttp
import pytest
from prometheus_client import REGISTRY

from common.clock import ManualClock
from common.kafka import KafkaPublisher
from schemas.events import AppointmentEvent, NotificationCommand, OutcomeEvent
from schemas.topics import TopicNames
from services.scheduler.app import Scheduler
from services.scheduler.cases import case_id_for
from services.scheduler.feedback import FEEDBACK_ATTEMPT
from services.scheduler.policy import CadencePolicy
from tests.integration.scheduler.conftest import MISSED, booking, no_show, outcome
from tests.support.kafka import read_events
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
) -> None:
    pool = scheduler.pool
    assert pool is not None
    await publisher.publish(topics.triggers, no_show())
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
    assert question.window_start == clock.now() and question.doctor_notes is None
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
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession(f"http://127.0.0.1:{scheduler.ops.port}") as http,
        http.get(f"/cases/{CASE}", headers=auth) as r,
    ):
        body = await r.json()
    assert body["feedback"]["rating"] == 4 and body["feedback"]["channel"] == "sms"
    assert body["feedback"]["comment"] == "The doctor was kind"
