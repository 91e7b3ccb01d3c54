"""Issues 12 and 19 on real PostgreSQL: what the loader must find for the Case's rules (the
visits already known, the other reason's open case, the contact log of the caps)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from common.clock import ManualClock
from schemas.events import AppointmentEvent
from services.scheduler.cases import case_id_for
from services.scheduler.ledger import CaseLedger
from tests.integration.scheduler.conftest import MISSED, no_show, outcome
from tests.support.scheduler import missed_visit_now, stage_at_risk_trigger

pytestmark = pytest.mark.integration
CASE = case_id_for("no_show:appt-1")


def own_visit(status: str, at: datetime, *, status_at: datetime | None = None) -> AppointmentEvent:
    return missed_visit_now(status, at, status_at=status_at, missed=MISSED)


async def case_row(pool: asyncpg.Pool, case_id: str = CASE) -> dict[str, Any] | None:
    row = await pool.fetchrow("SELECT * FROM cases WHERE case_id = $1", case_id)
    return None if row is None else dict(row)


async def history(pool: asyncpg.Pool) -> list[str]:
    return [r["event"] for r in await pool.fetch("SELECT event FROM case_history ORDER BY id")]


async def outbox_keys(pool: asyncpg.Pool) -> list[str]:
    return [r["idempotency_key"] for r in await pool.fetch("SELECT * FROM outbox ORDER BY id")]


async def test_a_visit_known_attended_opens_no_no_show_case(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    # Booked, arrived (check-in at 09:42, delivered late), fulfilled; then the grace timer.
    came = MISSED + timedelta(minutes=12)
    await ledger.handle_appointment(own_visit("arrived", came, status_at=came))
    await ledger.handle_appointment(own_visit("fulfilled", came + timedelta(minutes=40)))
    await ledger.handle_trigger(no_show())
    assert await pool.fetchval("SELECT count(*) FROM cases") == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_an_arrival_after_the_no_show_clears_the_case_before_any_contact(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_trigger(no_show())
    came = MISSED + timedelta(minutes=12)
    clock.set(MISSED + timedelta(minutes=25))  # the check-in arrives after the no-show
    await ledger.handle_appointment(own_visit("arrived", came, status_at=came))
    case = await case_row(pool)
    assert case is not None and (case["state"], case["resolution"]) == ("closed", "cleared")
    assert await history(pool) == ["opened", "planned", "cleared", "closed"]
    clock.set(MISSED + timedelta(hours=2))
    assert await ledger.fire_due() == 0 and await outbox_keys(pool) == []


async def test_an_arrival_after_the_call_task_went_out_withdraws_it(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_trigger(no_show())
    clock.set(MISSED + timedelta(hours=1))
    assert await ledger.fire_due() == 1
    await ledger.handle_appointment(own_visit("fulfilled", clock.now()))
    case = await case_row(pool)
    assert case is not None and case["resolution"] == "cleared"
    assert await outbox_keys(pool) == [f"{CASE}:1", f"{CASE}:1:withdrawal"]
    planned = await pool.fetchval("SELECT count(*) FROM attempts WHERE state = 'planned'")
    assert planned == 0


async def test_a_missed_stage_visit_and_its_window_at_risk_are_one_case(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    deadline = MISSED + timedelta(days=10)
    await ledger.handle_trigger(no_show(plan_id="plan-1", stage_id="s2"))
    at_risk = stage_at_risk_trigger(missed=MISSED, stage_deadline=deadline)
    await ledger.handle_trigger(at_risk)
    await ledger.handle_trigger(at_risk)  # redelivered: nothing new
    assert await pool.fetchval("SELECT count(*) FROM cases") == 1
    case = await case_row(pool)
    assert case is not None and case["stage_deadline"] == deadline
    joined = await pool.fetch("SELECT detail FROM case_history WHERE event = 'joined'")
    assert len(joined) == 1 and '"stage_window_at_risk"' in joined[0]["detail"]
    assert await pool.fetchval("SELECT count(*) FROM attempts WHERE state = 'planned'") == 1


async def test_a_refused_message_leaves_the_contact_log_so_the_cap_is_not_spent(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_trigger(no_show())
    clock.set(MISSED + timedelta(hours=1))
    await ledger.fire_due()  # the call task
    clock.set(MISSED + timedelta(hours=2))
    await ledger.handle_outcome(outcome(CASE, 1, "no_answer", clock.now()))
    sms_at = await pool.fetchval("SELECT planned_at FROM attempts WHERE state = 'planned'")
    clock.set(sms_at)
    assert await ledger.fire_due() == 1
    logged = "SELECT count(*) FROM contact_log WHERE channel_class = 'message'"
    assert await pool.fetchval(logged) == 1
    refused = outcome(CASE, 2, "channel_impossible", clock.now(), channel="sms", detail="no_phone")
    await ledger.handle_outcome(refused)
    await ledger.handle_outcome(refused)  # redelivered
    assert await pool.fetchval(logged) == 0
    # The email that replaces it goes now: a cap of one message a day is not spent.
    email = await pool.fetchrow("SELECT * FROM attempts WHERE state = 'planned'")
    assert email["channel"] == "email" and email["planned_at"] == clock.now()
    assert await ledger.fire_due() == 1
    assert await pool.fetchval("SELECT state FROM attempts WHERE attempt_number = 3") == "fired"


async def test_no_phone_and_no_email_escalates_with_the_reason_on_the_case(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_trigger(no_show())
    clock.set(MISSED + timedelta(hours=1))
    await ledger.fire_due()
    clock.set(MISSED + timedelta(hours=1, minutes=5))
    nobody = outcome(CASE, 1, "channel_impossible", clock.now(), detail="no_contact")
    await ledger.handle_outcome(nobody)
    case = await case_row(pool)
    assert case is not None and case["state"] == "escalating"
    assert sorted(case["impossible_channels"]) == ["call_task", "email", "sms"]
    detail = await pool.fetchval(
        "SELECT detail FROM case_history WHERE event = 'escalation_planned'"
    )
    assert '"no_channel"' in detail and '"channels_lost"' in detail


async def test_the_patient_s_zone_is_kept_on_the_case(
    ledger: CaseLedger, pool: asyncpg.Pool
) -> None:
    await ledger.handle_trigger(no_show(patient_timezone="Asia/Tbilisi"))
    case = await case_row(pool)
    assert case is not None
    assert (case["timezone"], case["patient_timezone"]) == ("Europe/Vilnius", "Asia/Tbilisi")


async def test_a_stop_reply_to_one_of_our_messages_is_saved_once_with_its_replan(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_trigger(no_show())
    clock.set(MISSED + timedelta(hours=1))
    await ledger.fire_due()
    clock.set(MISSED + timedelta(hours=2))
    await ledger.handle_outcome(outcome(CASE, 1, "no_answer", clock.now()))
    clock.set(await pool.fetchval("SELECT planned_at FROM attempts WHERE state = 'planned'"))
    await ledger.fire_due()  # the SMS, attempt 2
    stop = outcome(CASE, 2, "opt_out", clock.now(), channel="sms")
    await ledger.handle_outcome(stop)
    # One load of the case for both transitions: the STOP's replan and the attempt's outcome.
    assert await pool.fetchval("SELECT outcome FROM attempts WHERE attempt_number = 2") == (
        "opt_out"
    )
    counts = dict(await pool.fetch("SELECT event, count(*) FROM case_history GROUP BY event"))
    assert counts["opt_out"] == 1 and counts["outcome"] == 2
    planned = await pool.fetch("SELECT channel FROM attempts WHERE state = 'planned'")
    assert [r["channel"] for r in planned] == ["call_task"]
