"""Case rules without I/O: identities, what a booking closes, the commands we send."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from schemas.events import AppointmentEvent, OutcomeKind
from services.scheduler.cadence import AttemptRecord
from services.scheduler.cases import (
    CaseFacts,
    booking_resolution,
    build_command,
    case_id_for,
    idempotency_key,
    parse_idempotency_key,
    should_record,
    task_still_out,
    withdrawal_key,
)

VILNIUS = ZoneInfo("Europe/Vilnius")
MISSED = datetime(2026, 3, 2, 9, 30, tzinfo=VILNIUS)
CASE = CaseFacts(
    case_id="case-1",
    patient_id="pat-1",
    reason="no_show",
    department="dental",
    timezone="Europe/Vilnius",
    appointment_id="appt-1",
    appointment_start=MISSED,
    opened_at=MISSED + timedelta(minutes=20),
)
CALL = AttemptRecord(
    number=1,
    purpose="follow_up",
    channel="call_task",
    state="fired",
    planned_at=MISSED + timedelta(hours=1),
    window_end=MISSED + timedelta(hours=3),
    fired_at=MISSED + timedelta(hours=1),
)


def visit(**changes: object) -> AppointmentEvent:
    fields: dict[str, object] = {
        "event_id": "appt-2:booked",
        "occurred_at": MISSED + timedelta(hours=2),
        "source": "tracker",
        "change": "booked",
        "appointment_id": "appt-2",
        "patient_id": "pat-1",
        "start": MISSED + timedelta(days=3),
        "timezone": "Europe/Vilnius",
        "department": "dental",
        "status": "booked",
    }
    fields.update(changes)
    return AppointmentEvent.model_validate(fields)


def test_ids_and_keys_are_deterministic() -> None:
    assert case_id_for("no_show:appt-1") == case_id_for("no_show:appt-1")
    assert case_id_for("no_show:appt-1") != case_id_for("no_show:appt-2")
    key = idempotency_key("case-1", 3)
    assert key == "case-1:3" and parse_idempotency_key(key) == ("case-1", 3)
    assert withdrawal_key("case-1", 3) != key
    assert parse_idempotency_key("nonsense") is None
    assert parse_idempotency_key("case-1:3:withdrawal") is None


def test_a_booking_before_contact_supersedes_after_contact_recovers() -> None:
    assert booking_resolution(CASE, visit()) == "superseded"
    assert booking_resolution(replace(CASE, contacted=True), visit()) == "recovered"


@pytest.mark.parametrize(
    "changes",
    [
        {"patient_id": "pat-2"},
        {"department": "cardiology"},
        {"status": "cancelled", "change": "cancelled"},
        {"start": MISSED},  # not ahead of the case
        {"appointment_id": "appt-1", "status": "noshow", "change": "noshow"},
    ],
)
def test_bookings_that_do_not_satisfy_the_case(changes: dict[str, object]) -> None:
    assert booking_resolution(CASE, visit(**changes)) is None


def test_a_stage_case_needs_the_plan_s_visit_before_the_deadline() -> None:
    stage_case = replace(CASE, plan_id="plan-1", stage_deadline=MISSED + timedelta(days=5))
    assert booking_resolution(stage_case, visit(plan_id="plan-1")) == "superseded"
    assert booking_resolution(stage_case, visit(plan_id="plan-2")) is None
    too_late = visit(plan_id="plan-1", start=MISSED + timedelta(days=6))
    assert booking_resolution(stage_case, too_late) is None


def test_the_command_carries_ids_window_and_previous_attempts() -> None:
    sms = AttemptRecord(
        number=2,
        purpose="follow_up",
        channel="sms",
        state="planned",
        planned_at=MISSED + timedelta(hours=4),
        window_end=MISSED + timedelta(hours=16),
    )
    answered = replace(CALL, outcome="no_answer")
    command = build_command(CASE, sms, "no_show_sms", [answered, sms], MISSED + timedelta(hours=4))
    assert command.idempotency_key == command.event_id == "case-1:2"
    assert (command.window_start, command.window_end) == (sms.planned_at, sms.window_end)
    assert [(p.attempt_number, p.outcome) for p in command.previous_attempts] == [(1, "no_answer")]
    withdrawal = build_command(
        CASE, CALL, "no_show_call", [CALL], MISSED, purpose="withdrawal", key="case-1:1:withdrawal"
    )
    assert withdrawal.purpose == "withdrawal" and withdrawal.event_id == "case-1:1:withdrawal"


@pytest.mark.parametrize(
    ("current", "new", "replaces"),
    [
        (None, "task_created", True),
        ("task_created", "no_answer", True),
        ("no_answer", "delivered", False),  # a late receipt does not hide the call's result
        ("no_answer", "answered_rebooked", True),
    ],
)
def test_which_outcome_is_kept(current: str | None, new: OutcomeKind, replaces: bool) -> None:
    assert should_record(current, new) is replaces


def test_a_call_task_is_out_while_its_window_is_open_and_it_has_no_result() -> None:
    now = MISSED + timedelta(hours=2)
    assert task_still_out(CALL, now)
    assert task_still_out(replace(CALL, outcome="task_created"), now)
    assert not task_still_out(replace(CALL, outcome="no_answer"), now)
    assert not task_still_out(CALL, MISSED + timedelta(hours=3))
    assert not task_still_out(replace(CALL, channel="sms"), now)
