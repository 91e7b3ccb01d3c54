"""The patient's preferences on the pure Case: the preferred channel opens the cadence when
the clinic's rules allow it; the contact window narrows placement, never beyond the clinic."""

from __future__ import annotations

from datetime import timedelta

from services.scheduler.case import Case, Preferences
from tests.unit.scheduler.test_case import DETECTED, VILNIUS, ctx, fire_next, planned, trigger


def opened(preferences: Preferences | None, opted: frozenset[str] = frozenset()) -> Case:
    case = Case.open(trigger(), ctx(DETECTED), preferences=preferences)
    case.plan_next(ctx(DETECTED, opted))  # type: ignore[arg-type]
    return case


def test_the_preferred_channel_opens_the_cadence_then_the_cadence_goes_on() -> None:
    case = opened(Preferences(preferred_channel="email"))
    first = planned(case)
    assert first.channel == "email"  # the policy's first step is a call task
    fired, _ = fire_next(case)
    assert fired.channel == "email" and planned(case).channel == "sms"  # step 2 as written


def test_a_preferred_channel_the_patient_opted_out_of_is_not_used() -> None:
    case = opened(Preferences(preferred_channel="sms"), frozenset({"sms"}))
    assert planned(case).channel == "call_task"


def test_messages_and_calls_wait_for_the_window_in_the_patients_zone() -> None:
    # The missed visit at 10:00 (Vilnius); the patient wants 17:00-20:00 their time.
    case = opened(Preferences(preferred_channel="sms", contact_window="17:00-20:00"))
    sms = planned(case)
    local = sms.planned_at.astimezone(VILNIUS)
    assert sms.channel == "sms" and (local.hour, local.minute) == (17, 0)
    assert sms.window_end.astimezone(VILNIUS).hour == 20  # closes with the window
    call = opened(Preferences(contact_window="16:00-20:00"))
    first_call = planned(call)
    call_local = first_call.planned_at.astimezone(VILNIUS)
    assert first_call.channel == "call_task" and 16 <= call_local.hour < 18  # business hours


def test_a_window_outside_business_hours_leaves_calls_to_the_clinics_hours() -> None:
    case = opened(Preferences(contact_window="20:00-21:00"))
    call = planned(case)
    assert call.channel == "call_task"
    assert 8 <= call.planned_at.astimezone(VILNIUS).hour < 18


def test_the_patients_zone_from_their_record_moves_quiet_hours() -> None:
    case = opened(Preferences(preferred_channel="sms", timezone="America/New_York"))
    sms = planned(case)
    assert case.patient_timezone == "America/New_York"
    assert sms.planned_at.astimezone(VILNIUS).hour >= 15  # 08:00 in New York


def test_new_preferences_replan_the_planned_step() -> None:
    case = opened(None)
    assert planned(case).channel == "call_task"
    case.preferences_changed(Preferences(preferred_channel="email"), ctx(DETECTED))
    assert planned(case).channel == "email"
    assert [h.event for h in case.changes.history][-2:] == ["preferences", "planned"]
    before = len(case.changes.history)
    case.preferences_changed(Preferences(preferred_channel="email"), ctx(DETECTED))
    assert len(case.changes.history) == before  # nothing new: nothing replanned
    assert case.row()[-5:-2] == ("email", None, None)  # then child, safeguarding_at
    assert planned(case).planned_at >= DETECTED + timedelta(0)
