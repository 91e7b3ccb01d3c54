"""The operator tool's pure parts: which dead letters a filter selects, what a listing
shows (never the original bytes), and the case summary."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from followup_admin.cases import CaseSummary
from followup_admin.config import Deployment
from followup_admin.deadletters import Letter, Selection, details, summary_line
from schemas.events import DeadLetter
from schemas.topics import TopicLayout, TopicNames

DEPLOYMENT = Deployment("127.0.0.1:1", TopicNames("p."), TopicLayout())
ORIGINAL = b'{"patient": "Jane Doe"}'


def letter(reason: str = "start: Field required", **extra: object) -> Letter:
    fields: dict[str, object] = {
        "event_id": "dl:p.followup.appointments:2:7",
        "occurred_at": datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        "source": "scheduler",
        "source_topic": "p.followup.appointments",
        "source_partition": 2,
        "source_offset": 7,
        "original_key_b64": base64.b64encode(b"pat-1").decode(),
        "original_b64": base64.b64encode(ORIGINAL).decode(),
        "reason": reason,
        "error_type": "invalid_event",
        **extra,
    }
    return Letter(0, 41, DeadLetter.model_validate(fields))


def test_filters_must_all_match_and_the_reason_matches_any_case() -> None:
    item = letter()
    assert Selection(reason="FIELD REQUIRED").matches(item, DEPLOYMENT)
    assert not Selection(reason="handler failed").matches(item, DEPLOYMENT)
    # A source topic with or without the deployment's prefix.
    assert Selection(source_topic="followup.appointments").matches(item, DEPLOYMENT)
    assert Selection(source_topic="p.followup.appointments").matches(item, DEPLOYMENT)
    assert not Selection(source_topic="followup.plans").matches(item, DEPLOYMENT)
    assert Selection(positions=frozenset({"0:41"})).matches(item, DEPLOYMENT)
    assert not Selection(reason="field", error_type="invalid_json").matches(item, DEPLOYMENT)
    # A record that is no dead letter at all is never selected.
    assert not Selection(reason="field").matches(Letter(0, 1, None), DEPLOYMENT)


def test_a_listing_and_details_hold_no_original_bytes_unless_asked() -> None:
    item = letter()
    line = summary_line(item)
    assert line.startswith("0:41  2026-03-02T09:00:00+00:00  invalid_event")
    assert "p.followup.appointments@2:7" in line and "Jane" not in line
    shown = details(item, original=False)
    assert shown["original_key"] == "pat-1" and shown["original_bytes"] == len(ORIGINAL)
    assert "Jane" not in str(shown)
    assert details(item, original=True)["original"] == ORIGINAL.decode()
    no_topic = letter(source_topic=None, source_partition=None, source_offset=None)
    assert "(no topic: HTTP or MLLP input)" in summary_line(no_topic)


def test_the_case_summary_counts_and_finds_the_oldest_open_case() -> None:
    summary = CaseSummary()
    for case_id, state, opened, deadline in (
        ("c1", "closed", "2026-01-01T08:00:00+00:00", "2026-01-10T00:00:00+00:00"),
        ("c2", "open", "2026-02-03T08:00:00+00:00", None),
        ("c3", "contacting", "2026-02-01T08:00:00+00:00", "2026-03-01T00:00:00+02:00"),
    ):
        summary.add(
            {
                "case_id": case_id,
                "state": state,
                "reason": "no_show",
                "resolution": "recovered" if state == "closed" else None,
                "opened_at": opened,
                "stage_deadline": deadline,
            }
        )
    assert summary.as_json() == {
        "total": 3,
        "by_state": {"closed": 1, "contacting": 1, "open": 1},
        "by_reason": {"no_show": 3},
        "by_resolution": {"recovered": 1},
        "oldest_open_case": "c3",
        "oldest_open_since": "2026-02-01T08:00:00+00:00",
        "nearest_deadline_case": "c3",
        "nearest_deadline": "2026-03-01T00:00:00+02:00",
    }
