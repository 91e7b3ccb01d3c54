"""Fixtures for the scheduler's integration tests: a migrated schema, a ledger, samples."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from common.clock import ManualClock
from common.db import create_pool, migrate
from schemas.events import AppointmentEvent, OutcomeEvent, PatientStatusEvent, TriggerEvent
from services.scheduler.app import MIGRATIONS
from services.scheduler.ledger import CaseLedger
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy
from tests.support.scheduler import MISSED, no_show_trigger, seed_open_cases, seed_planned_sms

VILNIUS = ZoneInfo("Europe/Vilnius")
__all__ = ["MISSED", "VILNIUS"]


@pytest.fixture
async def pool(database_url: str, pg_schema: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url, pg_schema, MIGRATIONS)
    created = await create_pool(database_url, pg_schema, max_size=4)
    yield created
    await created.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MISSED + timedelta(minutes=20))


@pytest.fixture
def policy() -> CadencePolicy:
    return CadencePolicy.load(DEFAULT_POLICY_PATH)


@pytest.fixture
def ledger(pool: asyncpg.Pool, policy: CadencePolicy, clock: ManualClock) -> CaseLedger:
    return CaseLedger(pool, policy, clock)


def no_show(patient: str = "pat-1", appointment: str = "appt-1", **extra: object) -> TriggerEvent:
    return no_show_trigger(patient, appointment, missed=MISSED, **extra)


def outcome(
    case_id: str,
    attempt: int,
    kind: str,
    at: datetime,
    *,
    patient: str = "pat-1",
    channel: str = "call_task",
    detail: str | None = None,
) -> OutcomeEvent:
    return OutcomeEvent.model_validate(
        {
            "event_id": f"{case_id}:{attempt}:{kind}",
            "occurred_at": at,
            "source": "notifier",
            "outcome": kind,
            "patient_id": patient,
            "channel": channel,
            "case_id": case_id,
            "attempt_number": attempt,
            "idempotency_key": f"{case_id}:{attempt}",
            "detail": detail,
        }
    )


async def seed_due_cases(
    pool: asyncpg.Pool, count: int, planned_at: datetime, window_end: datetime
) -> None:
    """``count`` open no-show cases, each with a planned SMS due at ``planned_at``."""
    async with pool.acquire() as conn, conn.transaction():
        await seed_open_cases(conn, count, planned_at)
        await seed_planned_sms(conn, count, planned_at, window_end)


def booking(
    patient: str, department: str, at: datetime, appointment: str | None = None
) -> AppointmentEvent:
    """A new visit booked for ``patient``, two days after the missed one."""
    appointment = appointment or f"appt-new-{patient}"
    return AppointmentEvent(
        event_id=f"{appointment}:booked",
        occurred_at=at,
        source="tracker",
        change="booked",
        appointment_id=appointment,
        patient_id=patient,
        start=MISSED + timedelta(days=2),
        timezone="Europe/Vilnius",
        department=department,
        status="booked",
    )


def late_cancellation(appointment: str = "appt-9") -> TriggerEvent:
    return no_show(
        event_id=f"late_cancellation:{appointment}",
        kind="late_cancellation",
        appointment_id=appointment,
    )


def patient_outcome(kind: str, at: datetime, channel: str, event_id: str) -> OutcomeEvent:
    """An inbound reply or STOP: about the patient, not about one case."""
    return OutcomeEvent.model_validate(
        {
            "event_id": event_id,
            "occurred_at": at,
            "source": "notifier",
            "outcome": kind,
            "patient_id": "pat-1",
            "channel": channel,
        }
    )


def deceased(patient: str, at: datetime) -> PatientStatusEvent:
    return PatientStatusEvent(
        event_id=f"patient-status:{patient}:deceased",
        occurred_at=at,
        source="tracker",
        patient_id=patient,
        status="deceased",
        effective_at=at,
    )
