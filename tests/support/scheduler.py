"""The scheduler's samples and bulk seeding, server-side (tests and the benchmark)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from schemas.events import AppointmentEvent, TriggerEvent
from schemas.topics import TopicNames
from services.scheduler.app import SchedulerSettings
from services.scheduler.ledger import Conn

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
