"""Reading bounces: RFC 3464 reports with the standard email package, and the JSON form."""

from __future__ import annotations

from typing import Any

import pytest

from services.notifier.bounces import (
    Bounce,
    BounceError,
    parse_bounce_json,
    parse_bounce_message,
)
from tests.support.dsn import dsn_report

MID = "<followup.0123abcd@clinic.example>"


@pytest.mark.parametrize("returned", ["headers", "message"])
def test_a_real_report_names_the_original_message_and_its_permanent_failure(
    returned: str,
) -> None:
    bounce = parse_bounce_message(dsn_report(MID, returned=returned))
    assert bounce == Bounce(MID, "failed", "5.1.1")
    assert bounce.permanent and bounce.detail == "dsn_5.1.1"


def test_a_delay_or_a_temporary_failure_is_not_a_bounce() -> None:
    assert not parse_bounce_message(dsn_report(MID, action="delayed", status="4.4.7")).permanent
    assert not parse_bounce_message(dsn_report(MID, action="failed", status="4.2.2")).permanent


def test_a_message_that_is_not_a_delivery_report_is_refused() -> None:
    plain = b"From: a@b.example\r\nSubject: hello\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    with pytest.raises(BounceError, match="multipart/report"):
        parse_bounce_message(plain)
    other = dsn_report(MID).replace(b"report-type=delivery-status", b"report-type=feedback")
    with pytest.raises(BounceError, match="report-type"):
        parse_bounce_message(other)
    headerless = dsn_report(MID).replace(f"Message-ID: {MID}".encode(), b"X-Other: 1")
    with pytest.raises(BounceError, match="message_id") as refused:
        parse_bounce_message(headerless)
    assert "ona@" not in str(refused.value)


def test_the_json_form() -> None:
    assert parse_bounce_json({"message_id": MID, "status": "5.7.1"}) == Bounce(
        MID, "failed", "5.7.1"
    )
    delayed = parse_bounce_json({"message_id": MID, "status": "4.4.1", "action": "delayed"})
    assert not delayed.permanent


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("x", "body"),
        ({"status": "5.1.1"}, "message_id"),
        ({"message_id": "ona@example.org", "status": "5.1.1"}, "message_id"),
        ({"message_id": MID, "status": "550"}, "status"),
        ({"message_id": MID, "status": "5.1.1", "action": "bounced"}, "action"),
    ],
)
def test_a_wrong_json_bounce_is_refused_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(BounceError) as refused:
        parse_bounce_json(body)
    assert str(refused.value).startswith(field)
    assert "ona@" not in str(refused.value)


@pytest.mark.parametrize("action", [[], {}, ["failed"]])
def test_an_action_that_is_not_a_word_is_a_refusal_not_a_crash(action: Any) -> None:
    # Issue 19: `action: []` raised TypeError (a list is not hashable) and answered 500.
    with pytest.raises(BounceError, match=r"^action: one of"):
        parse_bounce_json({"message_id": "<k@followup>", "action": action, "status": "5.1.1"})
