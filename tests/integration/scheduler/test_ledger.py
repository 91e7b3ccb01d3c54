"""The case ledger on real PostgreSQL: cases, attempts, outbox, outcomes, bookings, status.

The rules themselves are tested on the pure ``Case`` (tests/unit/scheduler/test_case.py);
here what the loading and saving must get right: redeliveries, rows across cases of one
patient, the firing query, review, plans and statuses stored, pruning."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from common.clock import ManualClock
from schemas.events import (
    NotificationCommand,
    TreatmentPlanEvent,
    TriggerEvent,
)
from services.scheduler import metrics
from services.scheduler.cadence import slot_of
from services.scheduler.cases import case_id_for
from services.scheduler.ledger import CaseLedger
from services.scheduler.policy import CadencePolicy
from tests.integration.scheduler.conftest import (
    MISSED,
    VILNIUS,
    booking,
    deceased,
    late_cancellation,
    no_show,
    outcome,
    patient_outcome,
)

pytestmark = pytest.mark.integration
CASE = case_id_for("no_show:appt-1")


async def case_row(pool: asyncpg.Pool, case_id: str = CASE) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT * FROM cases WHERE case_id = $1", case_id)
    assert row is not None
    return dict(row)


async def attempts(pool: asyncpg.Pool, case_id: str = CASE) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT * FROM attempts WHERE case_id = $1 ORDER BY attempt_number", case_id
    )
    return [dict(r) for r in rows]


async def outbox_keys(pool: asyncpg.Pool) -> list[str]:
    return [r["idempotency_key"] for r in await pool.fetch("SELECT * FROM outbox ORDER BY id")]


async def fire_at(ledger: CaseLedger, clock: ManualClock, moment: datetime) -> int:
    clock.set(moment)
    return await ledger.fire_due()


async def test_a_trigger_opens_one_case_and_plans_the_first_call(
    ledger: CaseLedger, pool: asyncpg.Pool
) -> None:
    await ledger.handle_trigger(no_show())
    await ledger.handle_trigger(no_show())  # redelivered: nothing new
    # Another fact for the same patient and reason joins the open case.
    await ledger.handle_trigger(no_show(appointment="appt-2"))
    assert await pool.fetchval("SELECT count(*) FROM cases") == 1
    case = await case_row(pool)
    assert (case["state"], case["reason"], case["patient_id"]) == ("open", "no_show", "pat-1")
    planned = await attempts(pool)
    assert len(planned) == 1
    assert planned[0]["channel"] == "call_task" and planned[0]["state"] == "planned"
    # PT1H after the missed visit, inside business hours.
    assert planned[0]["planned_at"] == MISSED + timedelta(hours=1)
    events = [r["event"] for r in await pool.fetch("SELECT event FROM case_history ORDER BY id")]
    assert events == ["opened", "planned", "joined"]


async def test_firing_writes_the_command_and_plans_the_next_step(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_trigger(no_show())
    assert await fire_at(ledger, clock, MISSED + timedelta(minutes=59)) == 0
    assert await fire_at(ledger, clock, MISSED + timedelta(hours=1, seconds=5)) == 1
    assert await ledger.fire_due() == 0  # fired once only
    assert await outbox_keys(pool) == [f"{CASE}:1"]
    payload = await pool.fetchval("SELECT payload FROM outbox")
    assert '"purpose": "follow_up"' in payload and '"channel": "call_task"' in payload
    rows = await attempts(pool)
    assert [(a["state"], a["channel"]) for a in rows] == [
        ("fired", "call_task"),
        ("planned", "sms"),
    ]
    assert (await case_row(pool))["state"] == "contacting"


async def test_a_callback_request_plans_the_next_call_when_the_patient_asked(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_trigger(no_show())
    await fire_at(ledger, clock, MISSED + timedelta(hours=1))
    assert (await attempts(pool))[1]["channel"] == "sms"  # the policy's next step
    clock.set(MISSED + timedelta(hours=1, minutes=10))
    asked = datetime(2026, 3, 3, 16, 15, tzinfo=VILNIUS)
    request = outcome(CASE, 1, "callback_requested", clock.now()).model_copy(
        update={"respond_by": asked}
    )
    await ledger.handle_outcome(request)
    await ledger.handle_outcome(request)  # a redelivery changes nothing
    first, callback = await attempts(pool)
    assert (first["outcome"], first["callback_at"]) == ("callback_requested", asked)
    assert (callback["channel"], callback["state"], callback["planned_at"]) == (
        "call_task",
        "planned",
        asked,
    )
    assert await fire_at(ledger, clock, asked - timedelta(minutes=1)) == 0
    assert await fire_at(ledger, clock, asked) == 1
    assert await outbox_keys(pool) == [f"{CASE}:1", f"{CASE}:2"]
    assert (await case_row(pool))["state"] == "contacting"


async def test_stop_on_sms_holds_for_every_case_and_falls_back(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_trigger(no_show())
    await ledger.handle_trigger(late_cancellation())
    await ledger.handle_outcome(patient_outcome("opt_out", clock.now(), "sms", "stop-1"))
    other = case_id_for("late_cancellation:appt-9")
    # The late cancellation's first step was an SMS: it is planned on another channel now.
    assert (await attempts(pool, other))[0]["channel"] != "sms"
    moment = MISSED
    for _ in range(8):  # walk the no-show case through its cadence
        rows = await attempts(pool)
        planned = [a for a in rows if a["state"] == "planned"]
        if not planned:
            break
        moment = max(moment, planned[0]["planned_at"])
        await fire_at(ledger, clock, moment)
    channels = {a["channel"] for a in await attempts(pool)}
    assert "sms" not in channels and channels


async def test_a_booking_closes_what_it_satisfies(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_trigger(no_show())
    await ledger.handle_trigger(no_show(patient="pat-2", appointment="appt-5"))
    await fire_at(ledger, clock, MISSED + timedelta(hours=1))  # both contacted
    other = case_id_for("no_show:appt-5")

    await ledger.handle_appointment(booking("pat-1", "dental", clock.now()))
    await ledger.handle_appointment(
        booking("pat-2", "cardiology", clock.now())
    )  # another department
    assert (await case_row(pool))["resolution"] == "recovered"
    assert (await case_row(pool, other))["state"] != "closed"
    # The front desk's call task for the rebooked patient is withdrawn; the other stays.
    assert f"{CASE}:1:withdrawal" in await outbox_keys(pool)
    assert f"{other}:1:withdrawal" not in await outbox_keys(pool)


async def test_a_patient_who_never_answers_ends_unreachable_within_the_caps(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock, policy: CadencePolicy
) -> None:
    await ledger.handle_trigger(no_show())
    for _ in range(40):
        nxt = await pool.fetchval(
            "SELECT least((SELECT min(planned_at) FROM attempts WHERE state = 'planned'), "
            "(SELECT min(review_at) FROM cases WHERE state <> 'closed'))"
        )
        if nxt is None:
            break
        clock.set(max(nxt, clock.now()))
        await ledger.fire_due()
        await ledger.review_due()
    case = await case_row(pool)
    assert (case["state"], case["resolution"]) == ("closed", "unreachable")
    fired = [a for a in await attempts(pool) if a["state"] == "fired"]
    assert len(fired) == 6  # the policy's max_attempts
    messages = sorted(a["fired_at"] for a in fired if a["channel"] != "call_task")
    assert all(b - a >= timedelta(hours=24) for a, b in itertools.pairwise(messages))
    # Calls at different times of day after each unanswered one.
    rules = policy.rules_for("dental", "no_show")
    calls = [slot_of(rules, a["planned_at"], VILNIUS) for a in fired if a["channel"] == "call_task"]
    assert len(calls) >= 2 and None not in calls
    assert all(a != b for a, b in itertools.pairwise(calls))


async def test_a_deceased_patient_closes_cases_and_withdraws_the_call_task(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_trigger(no_show())
    await fire_at(ledger, clock, MISSED + timedelta(hours=1))
    status = deceased("pat-1", clock.now())
    await ledger.handle_patient_status(status)
    await ledger.handle_patient_status(status)
    case = await case_row(pool)
    assert (case["state"], case["resolution"]) == ("closed", "deceased")
    assert await outbox_keys(pool) == [f"{CASE}:1", f"{CASE}:1:withdrawal"]
    payload = await pool.fetchval("SELECT payload FROM outbox ORDER BY id DESC LIMIT 1")
    assert '"purpose": "withdrawal"' in payload
    # A new fact for the same patient opens nothing.
    await ledger.handle_trigger(no_show(appointment="appt-3"))
    assert await pool.fetchval("SELECT count(*) FROM cases") == 1


async def test_a_stage_deadline_too_close_escalates_to_the_doctor(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    plan = treatment_plan(max_interval_days=10)
    await ledger.handle_plan(plan)
    trigger = stage_trigger()
    await ledger.handle_trigger(trigger)
    case = await case_row(pool, case_id_for(trigger.event_id))
    # The deadline comes from the plan: 10 days after the extraction, end of that day.
    assert case["stage_deadline"].astimezone(VILNIUS).date() == (MISSED + timedelta(days=1)).date()
    assert case["stage_name"] == "Implant" and case["supervisor_id"] == "dr-1"
    rows = await attempts(pool, case["case_id"])
    assert rows[0]["purpose"] == "escalation" and rows[0]["escalate_to"] == "dr-7"
    assert case["state"] == "escalating"
    # The escalation fires as a call task for the doctor, with the stage's facts.
    clock.set(rows[0]["planned_at"])
    assert await ledger.fire_due() == 1
    command = NotificationCommand.model_validate_json(
        await pool.fetchval("SELECT payload FROM outbox")
    )
    assert (command.purpose, command.channel, command.escalate_to) == (
        "escalation",
        "call_task",
        "dr-7",
    )
    assert command.stage_name == "Implant" and command.stage_deadline == case["stage_deadline"]


async def test_a_plan_change_moves_the_deadline_and_replans(
    ledger: CaseLedger, pool: asyncpg.Pool
) -> None:
    await ledger.handle_plan(treatment_plan(max_interval_days=10))
    await ledger.handle_trigger(stage_trigger())
    case_id = case_id_for(stage_trigger().event_id)
    assert (await attempts(pool, case_id))[0]["purpose"] == "escalation"
    # The doctor allows sixty days: no escalation now, an ordinary first call instead.
    await ledger.handle_plan(treatment_plan(max_interval_days=60, version=2))
    case = await case_row(pool, case_id)
    assert case["stage_deadline"].astimezone(VILNIUS).date() == (MISSED + timedelta(days=51)).date()
    planned = [a for a in await attempts(pool, case_id) if a["state"] == "planned"]
    assert [(a["purpose"], a["channel"]) for a in planned] == [("follow_up", "call_task")]


async def test_an_expired_call_task_of_our_own_case_moves_it_on(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_trigger(no_show())
    await fire_at(ledger, clock, MISSED + timedelta(hours=1))
    expired = no_show(event_id=f"unanswered_call:{CASE}:1", kind="unanswered_call", case_id=CASE)
    await ledger.handle_trigger(expired)
    # No new case: the tracker reported our own task's window running out.
    assert await pool.fetchval("SELECT count(*) FROM cases") == 1
    events = [r["event"] for r in await pool.fetch("SELECT event FROM case_history ORDER BY id")]
    assert events[-2:] == ["task_expired", "planned"]


async def test_the_same_day_replayed_three_times_sends_nothing_new(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    day = [no_show(), no_show(patient="pat-2", appointment="appt-2")]
    for _ in range(3):
        for trigger in day:
            await ledger.handle_trigger(trigger)
        await fire_at(ledger, clock, MISSED + timedelta(hours=1))
        await ledger.handle_outcome(outcome(CASE, 1, "no_answer", clock.now()))
    assert len(await outbox_keys(pool)) == 2
    assert await pool.fetchval("SELECT count(*) FROM cases") == 2
    await ledger.refresh_gauges()
    assert metrics.OPEN_CASES.labels("contacting")._value.get() == 2


def treatment_plan(max_interval_days: int, version: int = 1) -> TreatmentPlanEvent:
    return TreatmentPlanEvent.model_validate(
        {
            "event_id": f"plan-1:v{version}",
            "occurred_at": MISSED - timedelta(days=30 - version),
            "source": "tracker",
            "plan_id": "plan-1",
            "patient_id": "pat-1",
            "department": "dental",
            "timezone": "Europe/Vilnius",
            "responsible_practitioner_id": "dr-7",
            "supervisor_id": "dr-1",
            "stages": [
                {
                    "stage_id": "s1",
                    "sequence": 1,
                    "name": "Extraction",
                    "completed_at": MISSED - timedelta(days=9),
                },
                {
                    "stage_id": "s2",
                    "sequence": 2,
                    "name": "Implant",
                    "max_interval_days": max_interval_days,
                },
            ],
        }
    )


def stage_trigger() -> TriggerEvent:
    return no_show(
        event_id="stage_window_at_risk:plan-1:s2",
        kind="stage_window_at_risk",
        plan_id="plan-1",
        stage_id="s2",
        appointment_id=None,
        appointment_start=None,
    )


async def test_pruned_notes_do_not_let_an_old_replay_open_a_case_again(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_trigger(no_show())
    await ledger.handle_appointment(booking("pat-1", "dental", clock.now()))
    assert (await case_row(pool))["state"] == "closed"
    clock.advance(timedelta(days=40))
    # the trigger's and the booking's notes, and the booked visit known since
    assert await ledger.prune(timedelta(days=30)) == 3
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 0
    await ledger.handle_trigger(no_show())  # the topic replayed from the start
    assert await pool.fetchval("SELECT count(*) FROM cases") == 1
    assert await pool.fetchval("SELECT count(*) FROM attempts WHERE state = 'planned'") == 0
