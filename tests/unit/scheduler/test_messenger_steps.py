"""The cadence policy names the patient's chat messengers as steps and fallbacks; the
patient's preferred channel opens the cadence on one when the policy names it, and an
unusable one (no consent, no id: the notifier refuses it) gives way to the next."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from common.clock import ManualClock
from services.scheduler.cadence import AttemptRecord, CaseView
from services.scheduler.policy import CadencePolicy, PolicyError
from tests.unit.scheduler.test_cadence import MISSED, POLICY, case, fired, plan

CHAT_POLICY = POLICY.replace(
    'email: "{reason}_email"}',
    'email: "{reason}_email", whatsapp: "{reason}_whatsapp", viber: "{reason}_viber"}',
).replace(
    "      - {delay: P1D, channel: sms}\n",
    "      - {delay: P1D, channel: sms}\n"
    "  stage_window_at_risk:\n"
    "    steps:\n"
    "      - {delay: PT1H, channel: whatsapp}\n"
    "      - {delay: P1D, channel: call_task}\n"
    "    fallback: [viber, sms, call_task, email]\n",
)
POLICY_WITH_CHAT = CadencePolicy.from_text(CHAT_POLICY)
CHAT = POLICY_WITH_CHAT.rules_for("dental", "stage_window_at_risk")
NO_CHAT = POLICY_WITH_CHAT.rules_for("dental", "no_show")


def at_risk(*attempts: AttemptRecord, **changes: Any) -> CaseView:
    return replace(case(*attempts, **changes), reason="stage_window_at_risk")


def test_a_step_names_a_messenger_and_its_template() -> None:
    clock = ManualClock(MISSED + timedelta(minutes=5))
    first = plan(CHAT, at_risk(), clock)
    assert first.channel == "whatsapp" and first.template == "stage_window_at_risk_whatsapp"


def test_a_messenger_the_notifier_refused_falls_back_in_the_policys_order() -> None:
    clock = ManualClock(MISSED + timedelta(minutes=5))
    refused = at_risk(impossible=frozenset({"whatsapp"}))
    assert plan(CHAT, refused, clock).channel == "viber"
    both = at_risk(impossible=frozenset({"whatsapp", "viber"}))
    assert plan(CHAT, both, clock).channel == "sms"


def test_the_preferred_messenger_opens_the_cadence_when_the_policy_names_it() -> None:
    clock = ManualClock(MISSED + timedelta(minutes=5))
    prefers_viber = replace(at_risk(), preferred_channel="viber")
    assert plan(CHAT, prefers_viber, clock).channel == "viber"
    # A policy that names no messenger never uses one, whatever the patient prefers.
    prefers_telegram = replace(case(), preferred_channel="telegram")
    assert plan(NO_CHAT, prefers_telegram, clock).channel == "call_task"


def test_messages_on_a_messenger_keep_quiet_hours() -> None:
    # The missed visit at 20:30: an hour later is 21:30, inside quiet hours.
    late = MISSED.replace(hour=20, minute=30)
    clock = ManualClock(late + timedelta(minutes=5))
    quiet = POLICY_WITH_CHAT.rules_for("dental", "stage_window_at_risk")
    hours = quiet.quiet_hours.model_copy(update={"channels": frozenset({"whatsapp"})})
    rules = quiet.model_copy(update={"quiet_hours": hours})
    first = plan(rules, at_risk(opened=late), clock)
    assert first.channel == "whatsapp" and first.planned_at.astimezone(late.tzinfo).hour == 8


def test_a_step_on_a_messenger_without_its_template_is_refused() -> None:
    broken = CHAT_POLICY.replace(', whatsapp: "{reason}_whatsapp"', "")
    with pytest.raises(PolicyError, match="whatsapp"):
        CadencePolicy.from_text(broken)


def test_a_messenger_attempt_is_an_attempt_like_any_other() -> None:
    clock = ManualClock(MISSED + timedelta(minutes=5))
    first = plan(CHAT, at_risk(), clock)
    clock.advance(timedelta(days=1))
    second = plan(CHAT, at_risk(fired(first, 1, "delivered")), clock)
    assert second.channel == "call_task"
