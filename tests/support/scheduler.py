"""The scheduler's samples and bulk seeding, server-side (tests and the benchmark)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from common.clock import Clock
from common.db import drop_schema
from schemas.events import AppointmentEvent, TriggerEvent
from schemas.topics import TopicNames
from services.scheduler.app import Scheduler, SchedulerSettings
from services.scheduler.ledger import Conn
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy
from tests.support import infra

# A Monday morning at the clinic: the visit at 09:30 was missed.
MISSED = datetime(2026, 3, 2, 9, 30, tzinfo=ZoneInfo("Europe/Vilnius"))


def no_show_trigger(
    patient: str = "pat-1",
    appointment: str = "appt-1",
    *,
    missed: datetime = MISSED,
    **extra: Any,
) -> TriggerEvent:
    """The tracker's no-show of ``appointment`` at ``missed``, detected 20 minutes later;
    ``extra`` replaces or adds fields."""
    fields: dict[str, Any] = {
        "event_id": f"no_show:{appointment}",
        "occurred_at": missed + timedelta(minutes=20),
        "source": "tracker",
        "kind": "no_show",
        "patient_id": patient,
        "department": "dental",
        "timezone": "Europe/Vilnius",
        "appointment_id": appointment,
        "appointment_start": missed,
        "practitioner_id": "dr-7",
        "detected_at": missed + timedelta(minutes=20),
    }
    fields.update(extra)
    return TriggerEvent.model_validate(fields)


def stage_at_risk_trigger(
    plan: str = "plan-1", stage: str = "s2", *, missed: datetime = MISSED, **extra: Any
) -> TriggerEvent:
    """The tracker's warning that ``stage`` of ``plan`` is at risk (no visit of its own)."""
    fields: dict[str, Any] = {
        "event_id": f"stage_window_at_risk:{plan}:{stage}",
        "kind": "stage_window_at_risk",
        "appointment_id": None,
        "appointment_start": None,
        "plan_id": plan,
        "stage_id": stage,
    }
    fields.update(extra)
    return no_show_trigger(missed=missed, **fields)


def missed_visit_now(
    status: str,
    at: datetime,
    *,
    status_at: datetime | None = None,
    missed: datetime = MISSED,
    appointment: str = "appt-1",
) -> AppointmentEvent:
    """The missed visit itself (``appointment`` at ``missed``) reported later in ``status``:
    an arrival or fulfilment delivered late, or a cancellation."""
    return AppointmentEvent.model_validate(
        {
            "event_id": f"{appointment}:{status}",
            "occurred_at": at,
            "source": "tracker",
            "change": "cancelled" if status == "cancelled" else "status_changed",
            "appointment_id": appointment,
            "patient_id": "pat-1",
            "start": missed,
            "timezone": "Europe/Vilnius",
            "department": "dental",
            "status": status,
            "status_at": status_at,
        }
    )


async def seed_open_cases(conn: Conn, count: int, opened_at: datetime) -> None:
    """``count`` open no-show cases ``case-<n>`` of distinct patients ``pat-<n>``."""
    await conn.execute(
        """INSERT INTO cases (case_id, patient_id, reason, department, timezone, state,
               trigger_event_id, fact_at, opened_at, updated_at)
           SELECT 'case-' || n, 'pat-' || n, 'no_show', 'dental', 'Europe/Vilnius', 'open',
               'no_show:appt-' || n, $1, $1, $1
           FROM generate_series(1, $2) AS n""",
        opened_at,
        count,
    )


async def seed_planned_sms(
    conn: Conn,
    count: int,
    first_due: datetime,
    window_end: datetime,
    *,
    step: timedelta = timedelta(0),
    due: int | None = None,
    later: datetime | None = None,
) -> None:
    """The first attempt of cases ``case-1..count``, a planned SMS: the first ``due`` (all
    by default) at ``first_due + step * (n - 1)``, the others at ``later``."""
    await conn.execute(
        """INSERT INTO attempts (case_id, attempt_number, purpose, channel, template, state,
               planned_at, window_end)
           SELECT 'case-' || n, 1, 'follow_up', 'sms', 'no_show_sms', 'planned',
               CASE WHEN n <= $2 THEN $1::timestamptz + $3::interval * (n - 1)
                    ELSE $4::timestamptz END,
               $5
           FROM generate_series(1, $6) AS n""",
        first_due,
        count if due is None else due,
        step,
        later,
        window_end,
        count,
    )


def scheduler_settings(
    bootstrap: str, database_url: str, topics: TopicNames, db_schema: str, **overrides: Any
) -> SchedulerSettings:
    """The whole scheduler on this test's topics and schema, its HTTP port chosen by the
    system; ``overrides`` add or replace settings (``api_token``, ``poll_seconds``, ...)."""
    fields: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "database_url": database_url,
        "topic_prefix": topics.prefix,
        "db_schema": db_schema,
        "http_host": "127.0.0.1",
        "http_port": 0,
    }
    return SchedulerSettings(**{**fields, **overrides})


@asynccontextmanager
async def scheduler_beside(
    topics: TopicNames,
    clock: Clock,
    *,
    api_token: str,
    policy: CadencePolicy | None = None,
    **overrides: Any,
) -> AsyncIterator[Scheduler]:
    """The real scheduler on another service's topics (``topics``) and clock, in a schema of
    its own (dropped after): the two services talk through the real topics, as in a clinic.
    Its case API answers ``api_token``; ``policy``: the default cadence policy unless given;
    ``overrides``: more of its settings (e.g. ``sites_path``)."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    settings = scheduler_settings(
        infra.KAFKA_BOOTSTRAP,
        infra.DATABASE_URL,
        topics,
        schema,
        api_token=api_token,
        poll_seconds=0.05,
        **overrides,
    )
    scheduler = Scheduler(settings, clock, policy or CadencePolicy.load(DEFAULT_POLICY_PATH))
    await scheduler.start()
    try:
        await asyncio.wait_for(scheduler.consumers_assigned(), 30)
        yield scheduler
    finally:
        await scheduler.stop()
        await drop_schema(infra.DATABASE_URL, schema)


async def case_from_api(scheduler: Scheduler, case_id: str, api_token: str) -> dict[str, Any]:
    """The case as the scheduler's case API shows it (attempts and history included)."""
    body = await case_if_open(scheduler, case_id, api_token)
    assert body is not None, "no such case"
    return body


async def case_if_open(scheduler: Scheduler, case_id: str, api_token: str) -> dict[str, Any] | None:
    """The case from the case API, or None while the scheduler has not opened it yet."""
    url = f"http://127.0.0.1:{scheduler.ops.port}/cases/{case_id}"
    headers = {"Authorization": f"Bearer {api_token}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as reply:
        if reply.status == 404:
            return None
        assert reply.status == 200
        body: dict[str, Any] = await reply.json()
        return body
