"""The cadence engine with a controlled clock: every rule of "when do we call again?"."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from common.clock import ManualClock
from schemas.base import Channel
from schemas.events import OutcomeKind
from services.scheduler.cadence import (
    AttemptRecord,
    CaseView,
    Close,
    Decision,
    Escalate,
    PlanAttempt,
    last_useful_moment,
    lost_channels,
    next_decision,
    outcome_effect,
    slot_of,
)
from services.scheduler.policy import CadencePolicy, CadenceRules

VILNIUS = ZoneInfo("Europe/Vilnius")
NEW_YORK = ZoneInfo("America/New_York")

POLICY = """
defaults:
  steps:
    - {delay: PT1H, channel: call_task}
    - {delay: PT3H, channel: sms}
    - {delay: P1D, channel: call_task}
    - {delay: P2D, channel: email}
  max_attempts: 5
  templates: {call_task: "{reason}_call", sms: "{reason}_sms", email: "{reason}_email"}
  fallback: [call_task, sms, email]
  business_hours:
    mon: "08:00-18:00"
    tue: "08:00-18:00"
    wed: "08:00-18:00"
    thu: "08:00-18:00"
    fri: "08:00-18:00"
    sat: null
    sun: null
  call_slots: {morning: "08:00-12:00", afternoon: "12:00-15:00", evening: "15:00-18:00"}
  call_window: PT3H
  min_call_window: PT30M
  message_window: PT12H
  quiet_hours: {hours: "21:00-08:00", channels: [sms, email]}
  rebook_lead: P2D
  escalation: {template: escalation_call, respond_within: PT4H}
reasons:
  unanswered_call:
    steps:
      - {delay: PT1H, channel: call_task}
      - {delay: P1D, channel: call_task}
  late_cancellation:
    steps:
      - {delay: PT1H, channel: sms}
      - {delay: P1D, channel: sms}
"""
RULES = CadencePolicy.from_text(POLICY).rules_for("dental", "no_show")
CALLS_ONLY = CadencePolicy.from_text(POLICY).rules_for("dental", "unanswered_call")
SMS_ONLY = CadencePolicy.from_text(POLICY).rules_for("dental", "late_cancellation")

# Monday 2 March 2026, 09:30 in Vilnius: the missed visit.
MISSED = datetime(2026, 3, 2, 9, 30, tzinfo=VILNIUS)


def local(moment: datetime, zone: ZoneInfo = VILNIUS) -> datetime:
    return moment.astimezone(zone)


def case(
    *attempts: AttemptRecord,
    opened: datetime = MISSED,
    zone: str = "Europe/Vilnius",
    deadline: datetime | None = None,
    opted_out: frozenset[Channel] = frozenset(),
    impossible: frozenset[Channel] = frozenset(),
    practitioner: str | None = "dr-7",
    supervisor: str | None = None,
) -> CaseView:
    return CaseView(
        reason="no_show",
        timezone=zone,
        opened_at=opened,
        attempts=attempts,
        stage_deadline=deadline,
        practitioner_id=practitioner,
        supervisor_id=supervisor,
        opted_out=opted_out,
        impossible=impossible,
    )


def fired(
    decision: Decision,
    number: int,
    outcome: OutcomeKind | None = None,
    late: timedelta = timedelta(),
) -> AttemptRecord:
    """The attempt the scheduler made from a decision, fired on time (or ``late``)."""
    assert isinstance(decision, PlanAttempt | Escalate), decision
    return AttemptRecord(
        number=number,
        purpose="escalation" if isinstance(decision, Escalate) else "follow_up",
        channel=decision.channel if isinstance(decision, PlanAttempt) else "call_task",
        state="fired",
        planned_at=decision.planned_at,
        window_end=decision.window_end,
        fired_at=decision.planned_at + late,
        outcome=outcome,
        escalate_to=decision.to if isinstance(decision, Escalate) else None,
    )


def plan(rules: CadenceRules, view: CaseView, clock: ManualClock) -> PlanAttempt:
    decision = next_decision(rules, view, clock.now())
    assert isinstance(decision, PlanAttempt), decision
    return decision


# --- each step ---------------------------------------------------------------------------


def test_each_step_of_the_cadence_in_order() -> None:
    clock = ManualClock(MISSED + timedelta(minutes=20))
    first = plan(RULES, case(), clock)
    # An hour after the missed visit, a call task in business hours, window capped at the slot.
    assert first.channel == "call_task" and first.template == "no_show_call"
    assert local(first.planned_at) == datetime(2026, 3, 2, 10, 30, tzinfo=VILNIUS)
    assert local(first.window_end) == datetime(2026, 3, 2, 12, 0, tzinfo=VILNIUS)
    assert first.planned_at.tzinfo == UTC and not first.tightened

    clock.set(first.planned_at)
    a1 = fired(first, 1)
    second = plan(RULES, case(a1), clock)
    # Three hours after the call was made, by SMS (after the call task's window is over).
    assert second.channel == "sms" and second.template == "no_show_sms"
    assert local(second.planned_at) == datetime(2026, 3, 2, 13, 30, tzinfo=VILNIUS)
    assert second.window_end - second.planned_at == timedelta(hours=12)

    clock.set(second.planned_at)
    a2 = fired(second, 2)
    third = plan(RULES, case(a1, a2), clock)
    assert third.channel == "call_task"
    assert local(third.planned_at) == datetime(2026, 3, 3, 13, 30, tzinfo=VILNIUS)

    clock.set(third.planned_at)
    a3 = fired(third, 3, "no_answer")
    fourth = plan(RULES, case(a1, a2, a3), clock)
    assert fourth.channel == "email" and fourth.step_index == 3
    assert local(fourth.planned_at) == datetime(2026, 3, 5, 13, 30, tzinfo=VILNIUS)

    clock.set(fourth.planned_at)
    a4 = fired(fourth, 4)
    fifth = plan(RULES, case(a1, a2, a3, a4), clock)
    # The list is exhausted: the last step repeats until max_attempts.
    assert fifth.channel == "email" and fifth.step_index == 3
    assert local(fifth.planned_at) == datetime(2026, 3, 7, 13, 30, tzinfo=VILNIUS)


def test_a_late_firing_moves_the_next_step_with_it() -> None:
    clock = ManualClock(MISSED)
    first = plan(RULES, case(), clock)
    clock.set(first.planned_at + timedelta(minutes=40))
    second = plan(RULES, case(fired(first, 1, late=timedelta(minutes=40))), clock)
    assert second.planned_at == first.planned_at + timedelta(hours=3, minutes=40)


def test_a_call_outside_business_hours_waits_for_the_next_business_morning() -> None:
    friday_evening = datetime(2026, 3, 6, 17, 40, tzinfo=VILNIUS)
    clock = ManualClock(friday_evening)
    first = plan(RULES, case(opened=friday_evening), clock)
    assert local(first.planned_at) == datetime(2026, 3, 9, 8, 0, tzinfo=VILNIUS)  # Monday
    assert first.moved_by == "business_hours"


def test_a_slot_with_too_little_time_left_is_skipped() -> None:
    opened = datetime(2026, 3, 2, 10, 45, tzinfo=VILNIUS)  # call due 11:45, slot ends 12:00
    first = plan(RULES, case(opened=opened), ManualClock(opened))
    assert local(first.planned_at) == datetime(2026, 3, 2, 12, 0, tzinfo=VILNIUS)
    assert local(first.window_end) == datetime(2026, 3, 2, 15, 0, tzinfo=VILNIUS)


# --- time-of-day variation -----------------------------------------------------------------


def test_after_an_unanswered_call_the_next_call_is_in_another_part_of_the_day() -> None:
    clock = ManualClock(MISSED)
    first = plan(CALLS_ONLY, case(), clock)
    assert slot_of(CALLS_ONLY, first.planned_at, VILNIUS) == "morning"
    clock.set(first.window_end)
    second = plan(CALLS_ONLY, case(fired(first, 1, "no_answer")), clock)
    assert second.moved_by is None  # another slot of an open day is not a business-hours hold
    # A day later would be 10:30 again, in the morning nobody answered: the afternoon instead.
    assert local(second.planned_at) == datetime(2026, 3, 3, 12, 0, tzinfo=VILNIUS)
    assert slot_of(CALLS_ONLY, second.planned_at, VILNIUS) == "afternoon"

    clock.set(second.window_end)
    third = plan(CALLS_ONLY, case(fired(first, 1, "no_answer"), fired(second, 2, "busy")), clock)
    assert slot_of(CALLS_ONLY, third.planned_at, VILNIUS) != "afternoon"


def test_a_call_without_outcome_counts_as_unanswered_but_a_callback_request_does_not() -> None:
    clock = ManualClock(MISSED)
    first = plan(CALLS_ONLY, case(), clock)
    clock.set(first.window_end)
    silent = plan(CALLS_ONLY, case(fired(first, 1, None)), clock)
    assert slot_of(CALLS_ONLY, silent.planned_at, VILNIUS) == "afternoon"
    asked = plan(CALLS_ONLY, case(fired(first, 1, "callback_requested")), clock)
    assert local(asked.planned_at) == datetime(2026, 3, 3, 10, 30, tzinfo=VILNIUS)


def called_back(at: datetime | None) -> tuple[PlanAttempt, AttemptRecord]:
    """The first call (Monday 10:30) answered: the patient asked to be called back ``at``."""
    first = plan(RULES, case(), ManualClock(MISSED))
    return first, replace(fired(first, 1, "callback_requested"), callback_at=at)


def test_a_callback_is_planned_at_the_time_the_patient_asked_for() -> None:
    asked = datetime(2026, 3, 3, 16, 15, tzinfo=VILNIUS)
    _, answered = called_back(asked)
    # The policy's next step would be an SMS three hours later; the patient asked for a call.
    callback = plan(RULES, case(answered), ManualClock(MISSED + timedelta(hours=1, minutes=30)))
    assert (callback.channel, callback.planned_at, callback.moved_by) == ("call_task", asked, None)
    assert local(callback.window_end) == datetime(2026, 3, 3, 18, 0, tzinfo=VILNIUS)


def test_a_callback_asked_for_a_closed_day_waits_for_business_hours() -> None:
    _, answered = called_back(datetime(2026, 3, 7, 10, 0, tzinfo=VILNIUS))  # a Saturday
    callback = plan(RULES, case(answered), ManualClock(MISSED + timedelta(hours=2)))
    assert local(callback.planned_at) == datetime(2026, 3, 9, 8, 0, tzinfo=VILNIUS)
    assert callback.moved_by == "business_hours"


def test_a_callback_asked_for_within_the_call_window_is_not_made_to_wait_for_its_end() -> None:
    first, answered = called_back(None)
    asked = first.planned_at + timedelta(minutes=40)
    callback = plan(RULES, case(replace(answered, callback_at=asked)), ManualClock(asked))
    assert callback.planned_at == asked < first.window_end


def test_a_callback_without_a_time_is_a_call_at_the_next_step_s_time() -> None:
    first, answered = called_back(None)
    callback = plan(RULES, case(answered), ManualClock(first.planned_at + timedelta(minutes=5)))
    # Step 2 is an SMS three hours after the first call: a call then, in the same slot or not.
    assert callback.channel == "call_task"
    assert callback.planned_at == first.planned_at + timedelta(hours=3)


def test_a_callback_after_the_last_useful_moment_is_brought_before_the_stage_deadline() -> None:
    deadline = datetime(2026, 3, 5, 12, 0, tzinfo=VILNIUS)  # last useful: Tuesday 12:00
    first = plan(RULES, case(deadline=deadline), ManualClock(MISSED))
    answered = replace(
        fired(first, 1, "callback_requested"), callback_at=datetime(2026, 3, 4, 10, tzinfo=VILNIUS)
    )
    clock = ManualClock(first.planned_at + timedelta(minutes=5))
    callback = plan(RULES, case(answered, deadline=deadline), clock)
    last_useful = last_useful_moment(RULES, case(deadline=deadline))
    assert last_useful is not None
    assert callback.channel == "call_task"
    assert clock.now() <= callback.planned_at <= last_useful


def test_a_callback_is_made_even_after_the_last_planned_attempt() -> None:
    one_try = RULES.model_copy(update={"max_attempts": 1})
    asked = datetime(2026, 3, 3, 9, 0, tzinfo=VILNIUS)
    _, answered = called_back(asked)
    clock = ManualClock(MISSED + timedelta(hours=2))
    assert plan(one_try, case(answered), clock).planned_at == asked
    # Without the request the case would end: the patient has had every attempt.
    unanswered = replace(answered, outcome="no_answer", callback_at=None)
    assert isinstance(next_decision(one_try, case(unanswered), clock.now()), Close | Escalate)


def test_a_callback_is_not_a_call_when_calls_are_impossible() -> None:
    _, answered = called_back(datetime(2026, 3, 3, 16, 15, tzinfo=VILNIUS))
    clock = ManualClock(MISSED + timedelta(hours=2))
    view = case(answered, impossible=frozenset({"call_task"}))
    assert plan(RULES, view, clock).channel == "sms"


# --- quiet hours, time zones, daylight saving ---------------------------------------------


def sms_case(opened: datetime, zone: str, *attempts: AttemptRecord) -> CaseView:
    return CaseView(reason="late_cancellation", timezone=zone, opened_at=opened, attempts=attempts)


def test_quiet_hours_are_the_clinic_zone_s_hours() -> None:
    # 18:00 UTC + 1 h: 21:00 in Vilnius (quiet), 14:00 in New York (fine).
    opened = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)
    clock = ManualClock(opened)
    vilnius = plan(SMS_ONLY, sms_case(opened, "Europe/Vilnius"), clock)
    new_york = plan(SMS_ONLY, sms_case(opened, "America/New_York"), clock)
    assert local(vilnius.planned_at) == datetime(2026, 3, 3, 8, 0, tzinfo=VILNIUS)
    assert new_york.planned_at == datetime(2026, 3, 2, 19, 0, tzinfo=UTC)
    assert (vilnius.moved_by, new_york.moved_by) == ("quiet_hours", None)


def test_quiet_hours_after_midnight_end_the_same_morning() -> None:
    opened = datetime(2026, 3, 3, 1, 0, tzinfo=NEW_YORK)
    first = plan(SMS_ONLY, sms_case(opened, "America/New_York"), ManualClock(opened))
    assert local(first.planned_at, NEW_YORK) == datetime(2026, 3, 3, 8, 0, tzinfo=NEW_YORK)


def test_calls_are_not_bound_by_quiet_hours_but_by_business_hours() -> None:
    opened = datetime(2026, 3, 2, 7, 0, tzinfo=VILNIUS)  # call due 08:00, quiet until 08:00
    first = plan(RULES, case(opened=opened), ManualClock(opened))
    assert local(first.planned_at) == datetime(2026, 3, 2, 8, 0, tzinfo=VILNIUS)


def test_a_day_later_is_the_same_local_time_across_the_spring_change() -> None:
    # Lithuania moves clocks forward in the night to Sunday 29 March 2026.
    saturday = datetime(2026, 3, 28, 10, 0, tzinfo=VILNIUS)
    sms = PlanAttempt("sms", "x", saturday, saturday + timedelta(hours=12), 0)
    clock = ManualClock(saturday)
    view = sms_case(saturday - timedelta(hours=1), "Europe/Vilnius", fired(sms, 1))
    sunday = plan(SMS_ONLY, view, clock)
    assert local(sunday.planned_at) == datetime(2026, 3, 29, 10, 0, tzinfo=VILNIUS)
    assert sunday.planned_at - saturday.astimezone(UTC) == timedelta(hours=23)


def test_quiet_hours_end_at_local_eight_on_the_day_new_york_changes_its_clocks() -> None:
    # New York springs forward on Sunday 8 March 2026 at 02:00.
    opened = datetime(2026, 3, 7, 21, 30, tzinfo=NEW_YORK)
    first = plan(SMS_ONLY, sms_case(opened, "America/New_York"), ManualClock(opened))
    assert local(first.planned_at, NEW_YORK) == datetime(2026, 3, 8, 8, 0, tzinfo=NEW_YORK)
    assert first.planned_at == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)  # EDT, UTC-4


def test_autumn_change_keeps_business_hours_local() -> None:
    # Vilnius falls back on Sunday 25 October 2026; Monday's 08:00 is UTC 06:00, not 05:00.
    opened = datetime(2026, 10, 24, 12, 0, tzinfo=VILNIUS)  # Saturday
    first = plan(RULES, case(opened=opened), ManualClock(opened))
    assert first.planned_at == datetime(2026, 10, 26, 6, 0, tzinfo=UTC)


# --- stage deadline: tightening and escalation ----------------------------------------------

# Friday's end of day: the last useful moment is Wednesday 23:59:59.
DEADLINE = datetime(2026, 3, 6, 23, 59, 59, tzinfo=VILNIUS)


def test_the_cadence_tightens_so_the_remaining_attempts_fit_before_the_deadline() -> None:
    clock = ManualClock(MISSED)
    view = case(deadline=DEADLINE)
    last_useful = last_useful_moment(RULES, view)
    assert last_useful is not None and local(last_useful).day == 4

    first = plan(RULES, view, clock)
    assert not first.tightened  # an hour is well inside the time left
    clock.set(first.planned_at)
    a1 = fired(first, 1, "no_answer")
    second = plan(RULES, case(a1, deadline=DEADLINE), clock)
    clock.set(second.planned_at)
    a2 = fired(second, 2)
    third = plan(RULES, case(a1, a2, deadline=DEADLINE), clock)
    # Normally Tuesday 13:30; with three attempts left in ~58 h, it comes sooner.
    normal = datetime(2026, 3, 3, 13, 30, tzinfo=VILNIUS)
    assert third.tightened and third.planned_at < normal
    assert third.planned_at <= last_useful
    assert slot_of(RULES, third.planned_at, VILNIUS) != "morning"  # a1 was a morning call


def test_no_step_is_planned_after_the_last_useful_moment() -> None:
    # Monday 17:45, last useful moment Monday 20:00: no business hours left for a call,
    # so the step moves to the earliest allowed moment on another channel.
    now = datetime(2026, 3, 2, 17, 45, tzinfo=VILNIUS)
    deadline = datetime(2026, 3, 4, 20, 0, tzinfo=VILNIUS)
    decision = plan(RULES, case(opened=now, deadline=deadline), ManualClock(now))
    assert decision.channel == "sms" and decision.tightened
    assert decision.planned_at == now.astimezone(UTC)
    assert decision.window_end == (deadline - timedelta(days=2)).astimezone(UTC)


def test_when_the_deadline_can_no_longer_be_met_the_case_escalates_to_the_doctor() -> None:
    now = datetime(2026, 3, 2, 22, 0, tzinfo=VILNIUS)  # quiet hours, no business hours left
    deadline = datetime(2026, 3, 4, 23, 0, tzinfo=VILNIUS)  # last useful: Monday 23:00
    decision = next_decision(RULES, case(opened=now, deadline=deadline), now)
    assert isinstance(decision, Escalate)
    assert decision.to == "dr-7" and decision.reason == "deadline"
    assert decision.template == "escalation_call"
    # The doctor's task lands in business hours, with the policy's response window.
    assert local(decision.planned_at) == datetime(2026, 3, 3, 8, 0, tzinfo=VILNIUS)
    assert decision.window_end - decision.planned_at == timedelta(hours=4)


def test_escalation_goes_to_the_supervisor_when_the_doctor_does_not_answer() -> None:
    now = datetime(2026, 3, 3, 9, 0, tzinfo=VILNIUS)
    deadline = datetime(2026, 3, 4, 12, 0, tzinfo=VILNIUS)
    view = case(opened=now, deadline=deadline, supervisor="head-1")
    to_doctor = next_decision(RULES, view, now)
    assert isinstance(to_doctor, Escalate) and to_doctor.to == "dr-7"
    clock = ManualClock(to_doctor.planned_at)

    waiting = next_decision(
        RULES,
        case(fired(to_doctor, 1), opened=now, deadline=deadline, supervisor="head-1"),
        clock.now(),
    )
    # Nothing heard yet: the supervisor is asked when the doctor's window has passed.
    assert isinstance(waiting, Escalate) and waiting.to == "head-1"
    assert waiting.planned_at == to_doctor.window_end

    unanswered = next_decision(
        RULES,
        case(fired(to_doctor, 1, "no_answer"), opened=now, deadline=deadline, supervisor="head-1"),
        clock.advance(timedelta(minutes=30)),
    )
    assert isinstance(unanswered, Escalate) and unanswered.to == "head-1"
    assert unanswered.planned_at == clock.now() and unanswered.reason == "unanswered"

    done = next_decision(
        RULES,
        case(
            fired(to_doctor, 1, "no_answer"),
            fired(unanswered, 2),
            opened=now,
            deadline=deadline,
            supervisor="head-1",
        ),
        clock.now(),
    )
    assert done == Close("escalated", unanswered.window_end)


def test_a_handled_escalation_closes_the_case_as_escalated() -> None:
    now = datetime(2026, 3, 3, 9, 0, tzinfo=VILNIUS)
    deadline = datetime(2026, 3, 4, 12, 0, tzinfo=VILNIUS)
    esc = next_decision(RULES, case(opened=now, deadline=deadline), now)
    assert isinstance(esc, Escalate)
    later = esc.planned_at + timedelta(hours=1)
    view = case(
        fired(esc, 1, "callback_requested"), opened=now, deadline=deadline, supervisor="head-1"
    )
    assert next_decision(RULES, view, later) == Close("escalated", later)
    delivered = case(fired(esc, 1, "task_created"), opened=now, deadline=deadline)
    assert next_decision(RULES, delivered, later) == Close("escalated", esc.window_end)


def test_without_a_doctor_the_supervisor_from_the_policy_is_escalated_to() -> None:
    policy = POLICY.replace("respond_within: PT4H}", "respond_within: PT4H, supervisor_id: lead-9}")
    rules = CadencePolicy.from_text(policy).rules_for("dental", "no_show")
    now = datetime(2026, 3, 3, 9, 0, tzinfo=VILNIUS)
    view = case(opened=now, deadline=now + timedelta(days=1), practitioner=None)
    decision = next_decision(rules, view, now)
    assert isinstance(decision, Escalate) and decision.to == "lead-9"


# --- channel fallback, opt-out, maximum attempts ------------------------------------------


def test_an_impossible_channel_falls_back_in_the_policy_s_order() -> None:
    clock = ManualClock(MISSED)
    no_phone = plan(RULES, case(impossible=frozenset({"call_task", "sms"})), clock)
    assert no_phone.channel == "email" and no_phone.template == "no_show_email"
    # The step's own delay and the channel's rules still apply: email is held by quiet hours
    # only, so it goes an hour after the missed visit.
    assert local(no_phone.planned_at) == datetime(2026, 3, 2, 10, 30, tzinfo=VILNIUS)


def test_an_opted_out_channel_is_never_planned() -> None:
    clock = ManualClock(MISSED)
    first = plan(RULES, case(), clock)
    clock.set(first.planned_at)
    second = plan(RULES, case(fired(first, 1), opted_out=frozenset({"sms"})), clock)
    assert second.channel == "call_task"  # the SMS step falls back to the first usable channel
    assert slot_of(RULES, second.planned_at, VILNIUS) != "morning"


def test_opted_out_of_every_usable_channel_closes_as_opted_out() -> None:
    now = MISSED
    view = case(opted_out=frozenset({"sms", "email"}), impossible=frozenset({"call_task"}))
    assert next_decision(RULES, view, now) == Close("opted_out", now.astimezone(UTC))


def test_no_channel_at_all_escalates_to_a_person_deadline_or_not() -> None:
    everything: frozenset[Channel] = frozenset({"sms", "email", "call_task"})
    for deadline in (None, DEADLINE):
        decision = next_decision(RULES, case(impossible=everything, deadline=deadline), MISSED)
        assert isinstance(decision, Escalate), decision
        assert decision.reason == "no_channel" and decision.to == "dr-7"
    # Nobody to escalate to: unreachable, at once.
    nobody = case(impossible=everything, practitioner=None)
    assert next_decision(RULES, nobody, MISSED) == Close("unreachable", MISSED.astimezone(UTC))


def test_a_refused_attempt_is_not_a_step_made_the_same_step_goes_to_another_channel() -> None:
    clock = ManualClock(MISSED)
    first = plan(RULES, case(), clock)
    clock.set(first.planned_at)
    called = fired(first, 1, "no_answer")
    second = plan(RULES, case(called), clock)
    assert second.channel == "sms"
    clock.set(second.planned_at + timedelta(minutes=1))
    refused = fired(second, 2, "channel_impossible")
    again = plan(RULES, case(called, refused, impossible=frozenset({"sms", "call_task"})), clock)
    # The SMS step (index 1) is still to be made, now, by email.
    assert again.channel == "email" and again.step_index == 1
    assert again.planned_at == clock.now().astimezone(UTC)


def test_quiet_hours_are_the_patient_s_business_hours_the_clinic_s() -> None:
    tbilisi = "Asia/Tbilisi"  # two hours ahead of Vilnius in March
    evening = datetime(2026, 3, 2, 19, 30, tzinfo=VILNIUS)  # 21:30 in Tbilisi
    view = replace(case(opened=evening - timedelta(hours=1)), patient_timezone=tbilisi)
    decision = next_decision(SMS_ONLY, replace(view, reason="late_cancellation"), evening)
    assert isinstance(decision, PlanAttempt) and decision.channel == "sms"
    # 08:00 in Tbilisi (06:00 in Vilnius), not 08:00 in Vilnius.
    assert local(decision.planned_at, ZoneInfo(tbilisi)).time() == time(8, 0)
    assert decision.moved_by == "quiet_hours"
    # Without the patient's zone the clinic's decides (19:30 Vilnius is not quiet).
    same = next_decision(SMS_ONLY, replace(view, patient_timezone=None), evening)
    assert isinstance(same, PlanAttempt) and same.planned_at == evening.astimezone(UTC)
    # Calls stay in the clinic's business hours whatever the patient's zone.
    morning = datetime(2026, 3, 3, 6, 0, tzinfo=VILNIUS)
    call = next_decision(RULES, replace(case(opened=morning), patient_timezone=tbilisi), morning)
    assert isinstance(call, PlanAttempt) and call.channel == "call_task"
    assert local(call.planned_at).time() >= time(8, 0)


def make_attempts(count: int) -> tuple[AttemptRecord, ...]:
    clock = ManualClock(MISSED)
    made: list[AttemptRecord] = []
    for number in range(1, count + 1):
        decision = plan(RULES, case(*made), clock)
        clock.set(decision.planned_at)
        made.append(fired(decision, number, "no_answer"))
    return tuple(made)


def test_maximum_attempts_then_unreachable_once_the_last_one_had_its_chance() -> None:
    made = make_attempts(RULES.max_attempts)
    last = made[-1]
    decision = next_decision(RULES, case(*made), last.fired_at or last.planned_at)
    assert isinstance(decision, Close) and decision.resolution == "unreachable"
    assert decision.at == (last.window_end if last.channel == "call_task" else last.fired_at)


def test_maximum_attempts_with_a_stage_at_stake_escalates() -> None:
    made = make_attempts(RULES.max_attempts)
    deadline = made[-1].planned_at + timedelta(days=20)
    decision = next_decision(RULES, case(*made, deadline=deadline), made[-1].planned_at)
    assert isinstance(decision, Escalate) and decision.reason == "attempts_exhausted"


def test_planned_and_cancelled_attempts_do_not_count() -> None:
    made = make_attempts(2)
    cancelled = AttemptRecord(3, "follow_up", "sms", "cancelled", MISSED, MISSED)
    assert plan(RULES, case(*made, cancelled), ManualClock(made[-1].planned_at)).step_index == 2


# --- outcomes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "detail", "effect"),
    [
        ("answered_rebooked", None, "recovered"),
        ("answered_declined", None, "declined"),
        ("no_answer", None, "unanswered"),
        ("voicemail", None, "unanswered"),
        ("callback_requested", None, "callback"),
        ("wrong_number", None, "channel_lost"),
        ("channel_impossible", "no_phone", "channel_lost"),
        ("failed", "invalid_phone", "channel_lost"),
        ("failed", "quiet_hours", "unanswered"),
        ("opt_out", None, "opt_out"),
        ("opt_in", None, "opt_in"),
        ("delivered", None, "record"),
        ("task_created", None, "record"),
    ],
)
def test_outcome_effects(outcome: OutcomeKind, detail: str | None, effect: str) -> None:
    assert outcome_effect(outcome, detail) == effect


def test_lost_channels() -> None:
    phone = {"call_task", "sms"}
    assert lost_channels("wrong_number", "call_task", None) == phone
    assert lost_channels("channel_impossible", "sms", "no_phone") == phone
    assert lost_channels("bounced", "email", None) == {"email"}
    assert lost_channels("channel_impossible", "email", "no_contact") == {
        "call_task",
        "sms",
        "email",
    }
    assert lost_channels("channel_impossible", "viber", "no_contact") == {
        "call_task",
        "sms",
        "email",
        "viber",
    }
    assert lost_channels("channel_impossible", "sms", "no_consent") == {"sms"}
    # No consent to one messenger (or no id on it) loses that messenger alone.
    assert lost_channels("channel_impossible", "telegram", "no_consent") == {"telegram"}
    assert lost_channels("channel_impossible", "viber", "no_chat_id") == {"viber"}


# --- held steps (issue 8) ----------------------------------------------------------------


def test_a_held_step_moves_to_the_next_allowed_moment() -> None:
    clock = ManualClock(MISSED + timedelta(minutes=20))
    held_until = datetime(2026, 3, 3, 9, 0, tzinfo=VILNIUS)
    view = replace(case(), not_before=held_until)
    decision = plan(RULES, view, clock)
    assert decision.channel == "call_task"  # the same step, later: not another channel
    assert decision.planned_at == held_until.astimezone(UTC)


def test_a_hold_past_the_last_useful_moment_escalates() -> None:
    now = datetime(2026, 3, 2, 10, 0, tzinfo=VILNIUS)
    deadline = datetime(2026, 3, 5, 23, 0, tzinfo=VILNIUS)  # last useful: Tuesday 23:00
    view = replace(case(opened=now, deadline=deadline), not_before=deadline)
    decision = next_decision(RULES, view, now)
    assert isinstance(decision, Escalate) and decision.reason == "deadline"
