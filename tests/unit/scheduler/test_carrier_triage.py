"""The scheduler's reaction to the notifier's carrier-error triage, on the pure Case."""

from __future__ import annotations

import pytest

from schemas.events import OutcomeKind
from services.scheduler.case import Case
from tests.unit.scheduler.test_case import ctx, fire_next, opened, planned


def sms_attempt_outcome(kind: OutcomeKind, detail: str) -> tuple[Case, int]:
    case = opened()
    fire_next(case)  # the first call task
    sms, now = fire_next(case)
    assert sms.channel == "sms"
    case.record_outcome(sms.number, kind, "sms", ctx(now), detail=detail)
    return case, sms.number


@pytest.mark.parametrize("detail", ["landline", "number_wrong"])
def test_a_landline_or_wrong_number_loses_sms_and_asks_for_a_call_task_at_once(
    detail: str,
) -> None:
    case, number = sms_attempt_outcome("channel_impossible", detail)
    assert case.impossible == frozenset({"sms"})
    nxt = planned(case)
    # A refused attempt is not a step made: the same step goes again, as a call task (the
    # front desk confirms a mobile number or finds the right one).
    assert nxt.channel == "call_task" and nxt.step_index == 1 and nxt.number == number + 1


@pytest.mark.parametrize("detail", ["unreachable", "carrier_busy", "carrier_unknown"])
def test_a_phone_switched_off_is_tried_again_on_the_cadence(detail: str) -> None:
    case, number = sms_attempt_outcome("failed", detail)
    assert case.impossible == frozenset()
    nxt = planned(case)
    assert nxt.step_index == 2 and nxt.number == number + 1  # the next step, SMS still usable


def test_sms_stays_usable_later_in_the_cadence_after_a_phone_was_off() -> None:
    case, _ = sms_attempt_outcome("failed", "unreachable")
    channels = []
    for _step in range(4):
        attempt, _now = fire_next(case)
        channels.append(attempt.channel)
    assert "sms" in channels  # P3D sms step is not skipped
