"""The simulated patients' and front desk's decisions (pure)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from demo.scenario import build
from demo.simulator.clinic import rebook_slot, stage_deadline, task_identity
from demo.simulator.patients import NOT_REACHED, CallDecision, decide_call, decide_sms_reply

SCENARIO = build(patients=14, days=7, seed=11)
VILNIUS = ZoneInfo("Europe/Vilnius")


def test_a_patient_who_answers_on_the_third_call_is_not_reached_before() -> None:
    p = next(
        p
        for p in build(patients=60, seed=7).patients
        if p.behaviour == "recovers" and p.answers_on == 3 and not p.books_first
    )
    rng = random.Random(1)
    results = [decide_call(p, n, rng, 0.0) for n in (1, 2, 3)]
    assert [r.result in NOT_REACHED for r in results[:2]] == [True, True]
    assert results[2].result == "answered_rebooked" and results[2].rebook


def test_decliners_decline_and_stoppers_stop_once() -> None:
    rng = random.Random(1)
    decliner = next(p for p in SCENARIO.patients if p.behaviour == "declines")
    assert decide_call(decliner, 1, rng, 0.0).result == "answered_declined"
    stopper = next(p for p in SCENARIO.patients if p.behaviour == "opts_out")
    assert decide_sms_reply(stopper, 1) == "STOP"
    assert decide_sms_reply(stopper, 2) is None
    never = next(p for p in SCENARIO.patients if p.behaviour == "never_answers")
    assert decide_call(never, 1, rng, 1.0).result is None  # the front desk never reports


def test_rebooking_lands_on_a_working_morning_before_the_stage_deadline() -> None:
    for p in SCENARIO.patients:
        deadline = stage_deadline(p)
        now = datetime(2026, 3, 6, 16, 0, tzinfo=VILNIUS)  # a Friday afternoon
        slot = rebook_slot(now, deadline)
        assert slot <= deadline
        if deadline - now > timedelta(days=5):
            assert slot.astimezone(VILNIUS).weekday() < 5 and slot > now + timedelta(days=2)


def test_call_task_identity_from_the_notifiers_webhook_body() -> None:
    nested = {"task": {"task_id": "case-1:2", "patient_id": "p-1", "attempt_number": 2}}
    assert task_identity(nested) == ("p-1", "case-1", 2, "case-1:2")
    flat = {"case_id": "case-9", "attempt_number": "3", "patient_id": "p-9"}
    assert task_identity(flat) == ("p-9", "case-9", 3, None)


def test_a_patient_who_books_first_leaves_the_call_task_to_be_withdrawn() -> None:
    clinic = build(patients=40, days=14, seed=7)
    first = [p for p in clinic.patients if p.books_first]
    assert len(first) == 2 and all(p.behaviour == "recovers" for p in first)
    p = first[0]
    rng = random.Random(1)
    before = decide_call(p, p.answers_on - 1, rng, 0.0) if p.answers_on > 1 else None
    assert before is None or (before.result in NOT_REACHED and not before.rebook)
    # Booked by phone: nothing reported at the desk, so the task is still out.
    assert decide_call(p, p.answers_on, rng, 0.0) == CallDecision(None, rebook=True)
