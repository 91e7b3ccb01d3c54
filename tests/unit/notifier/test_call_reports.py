"""Administrators' call reports: one shape for the endpoints and the webhook's reply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.events import NotificationCommand
from services.notifier.call_reports import ReportError, parse_call_report, report_outcome

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def task() -> NotificationCommand:
    return NotificationCommand.model_validate(
        {
            "event_id": "case-9:3",
            "occurred_at": NOW,
            "source": "scheduler",
            "idempotency_key": "case-9:3",
            "case_id": "case-9",
            "attempt_number": 3,
            "patient_id": "p-9",
            "channel": "call_task",
            "template": "no_show",
            "reason": "no_show",
            "department": "dental",
            "timezone": "Europe/Vilnius",
            "window_start": NOW,
            "window_end": NOW + timedelta(hours=4),
        }
    )


def test_a_report_becomes_the_outcome_of_its_call_task() -> None:
    report = parse_call_report(
        {"report_id": "r-1", "outcome": "no_answer", "reported_by": "admin-3", "note": "x"}
    )
    event = report_outcome(report, task(), NOW)
    assert (event.event_id, event.outcome, event.channel) == ("r-1", "no_answer", "call_task")
    assert (event.case_id, event.attempt_number, event.idempotency_key) == ("case-9", 3, "case-9:3")
    assert (event.occurred_at, event.reported_by, event.respond_by) == (NOW, "admin-3", None)


def test_a_clinical_concern_carries_the_administrator_s_note_and_nothing_else_does() -> None:
    note = "Bleeding since yesterday, feels faint"
    report = parse_call_report(
        {"report_id": "r-3", "outcome": "clinical_concern", "reported_by": "admin-3", "note": note}
    )
    assert note not in repr(report)  # never in a log line that prints the report
    event = report_outcome(report, task(), NOW)
    assert (event.outcome, event.note) == ("clinical_concern", note)
    plain = report_outcome(
        parse_call_report({"report_id": "r-4", "outcome": "no_answer", "note": note}), task(), NOW
    )
    assert plain.note is None  # an ordinary result's note goes nowhere
    with pytest.raises(ReportError, match=r"^note: clinical_concern needs"):
        parse_call_report({"report_id": "r-5", "outcome": "clinical_concern"})


def test_a_callback_request_carries_the_time_asked_for_and_the_report_its_own_time() -> None:
    asked = "2026-03-03T17:30:00+02:00"
    reported = "2026-03-02T11:15:00+02:00"
    report = parse_call_report(
        {
            "report_id": "r-2",
            "outcome": "callback_requested",
            "callback_at": asked,
            "reported_at": reported,
        }
    )
    event = report_outcome(report, task(), NOW)
    assert event.respond_by == datetime.fromisoformat(asked)
    assert event.occurred_at == datetime.fromisoformat(reported)
    # Only a callback request says when to call again.
    busy = parse_call_report({"report_id": "r-3", "outcome": "busy", "callback_at": asked})
    assert report_outcome(busy, task(), NOW).respond_by is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"outcome": "busy"}, "report_id"),
        ({"report_id": "r 1", "outcome": "busy"}, "report_id"),
        ({"report_id": "r-1", "outcome": "sent"}, "outcome"),
        ({"report_id": "r-1", "outcome": "busy", "reported_by": "Ona P."}, "reported_by"),
        ({"report_id": "r-1", "outcome": "busy", "detail": "she said no"}, "detail"),
        ({"report_id": "r-1", "outcome": "busy", "note": 5}, "note"),
        ({"report_id": "r-1", "outcome": "busy", "reported_at": "2026-03-02T10:00"}, "reported_at"),
        ({"report_id": "r-1", "outcome": "busy", "callback_at": "tomorrow"}, "callback_at"),
    ],
)
def test_a_wrong_report_is_refused_naming_the_field_not_the_value(body: Any, field: str) -> None:
    with pytest.raises(ReportError) as refused:
        parse_call_report(body)
    assert str(refused.value).startswith(field)
    assert "Ona" not in str(refused.value) and "she said" not in str(refused.value)


@pytest.mark.parametrize("outcome", [[], {}, ["no_answer"], 3])
def test_an_outcome_that_is_not_a_word_is_a_refusal_not_a_crash(outcome: Any) -> None:
    # Issue 19: `outcome: []` raised TypeError (a list is not hashable) and answered 500.
    with pytest.raises(ReportError, match=r"^outcome: one of"):
        parse_call_report({"report_id": "r-1", "outcome": outcome})
