"""Issue 18 on real PostgreSQL, through the ledger's own handlers: clinic cancellations,
schedule churn, a clinical concern, a front desk at capacity with the deadline and risk
order, owners and risk on the commands."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from common.clock import ManualClock
from schemas.events import AppointmentEvent, NotificationCommand, TriggerEvent
from services.scheduler.cases import case_id_for
from services.scheduler.ledger import CaseLedger
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy
from tests.integration.scheduler.conftest import MISSED, VILNIUS, no_show, outcome

pytestmark = pytest.mark.integration
CANCELLED_AT = datetime(2026, 3, 4, 9, 0, tzinfo=VILNIUS)  # a Wednesday
VISIT = datetime(2026, 3, 6, 10, 0, tzinfo=VILNIUS)


def clinic_cancellation(patient: str = "pat-1", appointment: str = "appt-1") -> TriggerEvent:
    return TriggerEvent.model_validate(
        {
            "event_id": f"clinic_cancellation:{appointment}",
            "occurred_at": CANCELLED_AT,
            "source": "tracker",
            "kind": "clinic_cancellation",
            "patient_id": patient,
            "department": "dental",
            "timezone": "Europe/Vilnius",
            "appointment_id": appointment,
            "appointment_start": VISIT,
            "practitioner_id": "dr-7",
            "detected_at": CANCELLED_AT,
        }
    )


def booked_again(at: datetime, appointment: str = "appt-1") -> AppointmentEvent:
    return AppointmentEvent(
        event_id=f"{appointment}:booked:{at.isoformat()}",
        occurred_at=at,
        source="tracker",
        change="booked",
        appointment_id=appointment,
        patient_id="pat-1",
        start=VISIT,
        timezone="Europe/Vilnius",
        department="dental",
        status="booked",
    )


async def commands(pool: asyncpg.Pool) -> list[NotificationCommand]:
    rows = await pool.fetch("SELECT payload FROM outbox ORDER BY id")
    return [NotificationCommand.model_validate_json(r["payload"]) for r in rows]


async def fire_until(ledger: CaseLedger, clock: ManualClock, at: datetime) -> None:
    clock.set(at)
    while await ledger.fire_due():
        pass


async def test_a_clinic_cancellation_calls_after_the_settle_window_with_an_owner_and_risk(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    clock.set(CANCELLED_AT)
    await ledger.handle_trigger(clinic_cancellation())
    case = await pool.fetchrow("SELECT * FROM cases")
    assert case is not None and case["reason"] == "clinic_cancellation"
    await fire_until(ledger, clock, CANCELLED_AT + timedelta(minutes=5))
    assert await commands(pool) == []  # still settling
    await fire_until(ledger, clock, CANCELLED_AT + timedelta(minutes=11))
    (command,) = await commands(pool)
    assert (command.reason, command.channel) == ("clinic_cancellation", "call_task")
    assert command.owner == "clinic_pool"  # no team in the policy: the clinic-wide pool
    assert command.risk is not None and command.risk.score == 0
    assert command.risk.earlier_no_shows == 0 and command.risk.plan_stage is False


async def test_a_cancellation_undone_inside_the_settle_window_sends_nothing(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    clock.set(CANCELLED_AT)
    await ledger.handle_trigger(clinic_cancellation())
    clock.set(CANCELLED_AT + timedelta(minutes=4))
    await ledger.handle_appointment(booked_again(CANCELLED_AT + timedelta(minutes=4)))
    await fire_until(ledger, clock, CANCELLED_AT + timedelta(hours=3))
    row = await pool.fetchrow("SELECT state, resolution FROM cases")
    assert row is not None and (row["state"], row["resolution"]) == ("closed", "cleared")
    assert await commands(pool) == []


async def test_a_clinical_concern_escalates_at_once_and_the_note_stays_on_the_case(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    note = "Severe pain and swelling since Monday"
    clock.set(CANCELLED_AT)
    await ledger.handle_trigger(clinic_cancellation())
    await fire_until(ledger, clock, CANCELLED_AT + timedelta(minutes=11))
    case_id = case_id_for("clinic_cancellation:appt-1")
    reported = CANCELLED_AT + timedelta(minutes=30)
    clock.set(reported)
    concern = outcome(case_id, 1, "clinical_concern", reported)
    await ledger.handle_outcome(concern.model_copy(update={"note": note}))
    await fire_until(ledger, clock, reported)
    escalation = (await commands(pool))[-1]
    assert escalation.purpose == "escalation" and escalation.escalate_to == "dr-7"
    assert escalation.note == note and escalation.owner == "dr-7"
    assert escalation.template == "clinical_concern_escalation"
    row = await pool.fetchrow("SELECT state, concern_at, concern_note FROM cases")
    assert row is not None and row["state"] == "escalating" and row["concern_note"] == note
    history = await pool.fetch("SELECT event, detail FROM case_history ORDER BY id")
    assert "concern" in [h["event"] for h in history]
    assert all(note not in h["detail"] for h in history)  # ids and codes only
    # The ordinary cadence stopped: nothing else planned but the escalation's aftermath.
    planned = await pool.fetch("SELECT purpose FROM attempts WHERE state = 'planned'")
    assert [r["purpose"] for r in planned] == []


def capacity_policy(calls: int) -> CadencePolicy:
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    text = text.replace("    calls_per_day: null", f"    calls_per_day: {calls}")
    return CadencePolicy.from_text(text, "<capacity>")


async def test_a_desk_at_capacity_calls_the_nearest_deadline_and_highest_risk_first(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    ledger = CaseLedger(pool, capacity_policy(2), clock)
    # Four no-shows of the Monday morning; one patient missed visits before, one has a stage
    # deadline soon; the desk can make two calls a day.
    deadline = MISSED + timedelta(days=9)
    await ledger.handle_trigger(no_show("pat-a", "appt-a"))
    await ledger.handle_trigger(no_show("pat-b", "appt-b"))
    await ledger.handle_trigger(no_show("pat-c", "appt-c", stage_deadline=deadline))
    for earlier in ("appt-d0", "appt-d1"):
        await ledger.handle_trigger(no_show("pat-d", earlier))
        key = case_id_for(f"no_show:{earlier}")
        await pool.execute(
            "UPDATE cases SET state = 'closed', resolution = 'unreachable' WHERE case_id = $1",
            key,
        )
        await pool.execute("UPDATE attempts SET state = 'cancelled' WHERE case_id = $1", key)
    await ledger.handle_trigger(no_show("pat-d", "appt-d"))
    await fire_until(ledger, clock, MISSED + timedelta(hours=1))
    first = [c for c in await commands(pool) if c.channel == "call_task"]
    assert [c.patient_id for c in first] == ["pat-c", "pat-d"]  # deadline, then risk
    assert first[1].risk is not None and first[1].risk.earlier_no_shows == 2
    held = await pool.fetch(
        "SELECT c.patient_id, a.planned_at FROM attempts a JOIN cases c USING (case_id) "
        "WHERE a.state = 'planned' AND c.patient_id IN ('pat-a', 'pat-b') AND c.state <> 'closed'"
    )
    next_day = datetime(2026, 3, 3, 8, 0, tzinfo=VILNIUS)
    assert sorted(r["patient_id"] for r in held) == ["pat-a", "pat-b"]
    assert all(r["planned_at"] >= next_day for r in held)
    history = await pool.fetch("SELECT detail FROM case_history WHERE event = 'held'")
    assert {json.loads(h["detail"])["rule"] for h in history} == {"desk_capacity"}
    calls = await pool.fetchval("SELECT calls FROM desk_calls WHERE department = 'dental'")
    assert calls == 2
    clock.set(MISSED + timedelta(days=40))  # a desk's count is pruned with the retention
    await ledger.prune(timedelta(days=30))
    assert await pool.fetchval("SELECT count(*) FROM desk_calls") == 0


async def test_two_replicas_together_stay_within_the_desk_s_capacity(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    import asyncio

    policy = capacity_policy(3)
    one, two = CaseLedger(pool, policy, clock), CaseLedger(pool, policy, clock)
    for n in range(10):
        await one.handle_trigger(no_show(f"pat-{n}", f"appt-{n}"))
    clock.set(MISSED + timedelta(hours=1))

    async def drain(ledger: CaseLedger) -> None:
        while await ledger.fire_due(limit=2):
            pass

    await asyncio.gather(drain(one), drain(two))
    fired: list[Any] = [c for c in await commands(pool) if c.channel == "call_task"]
    assert len(fired) == 3
