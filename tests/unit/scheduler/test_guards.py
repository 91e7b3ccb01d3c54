"""Frequency caps and conversations in progress, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.scheduler.guards import (
    Cap,
    ContactRules,
    Hold,
    cap_free_at,
    channel_class,
    conversation_until,
    hold_for,
)

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
RULES = ContactRules(messages=Cap(1, 3), calls=Cap(2, 5), conversation_quiet=24 * H)


def test_no_contacts_means_now() -> None:
    assert cap_free_at([], Cap(1, 3), NOW) == NOW


def test_one_a_day_waits_until_24_hours_after_the_last() -> None:
    assert cap_free_at([NOW - 2 * H], Cap(1, 3), NOW) == NOW + 22 * H
    assert cap_free_at([NOW - 25 * H], Cap(1, 3), NOW) == NOW


def test_three_a_week_waits_for_the_oldest_to_leave_the_week() -> None:
    sent = [NOW - 6 * D, NOW - 4 * D, NOW - 2 * D]
    assert cap_free_at(sent, Cap(1, 3), NOW) == NOW + D  # the first leaves the week then


def test_both_windows_together() -> None:
    # Three in the week; when the oldest leaves, the newest is still inside its own day.
    sent = [NOW - 7 * D + H, NOW - 3 * D, NOW - 30 * timedelta(minutes=1)]
    free = cap_free_at(sent, Cap(1, 3), NOW)
    assert free == NOW - 30 * timedelta(minutes=1) + D
    assert len([t for t in sent if free - 7 * D < t <= free]) < 3


def test_calls_have_their_own_caps() -> None:
    sent_calls = [NOW - 3 * H]
    assert hold_for("call_task", sent_calls, None, RULES, NOW) is None  # 2 calls a day
    hold = hold_for("sms", [NOW - 3 * H], None, RULES, NOW)
    assert hold == Hold("frequency_cap", NOW + 21 * H)
    assert channel_class("email") == channel_class("sms") == "message"


def test_an_open_call_task_holds_messages_until_its_window_ends() -> None:
    ends = conversation_until([(NOW - H, NOW + 2 * H)], None, RULES, NOW)
    assert ends == NOW + 2 * H
    assert hold_for("sms", [], ends, RULES, NOW) == Hold("conversation_open", NOW + 2 * H)
    assert hold_for("call_task", [], ends, RULES, NOW) is None  # calls are the conversation


def test_an_unanswered_reply_holds_for_the_quiet_period() -> None:
    ends = conversation_until([], NOW - 4 * H, RULES, NOW)
    assert ends == NOW + 20 * H
    assert conversation_until([], NOW - 25 * H, RULES, NOW) is None
    assert hold_for("email", [], ends, RULES, NOW) == Hold("conversation_open", NOW + 20 * H)
