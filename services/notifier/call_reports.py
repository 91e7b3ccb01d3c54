"""An administrator's call result, however it arrives (the HTTP endpoints, or the body of the
ticketing tool's reply to the call-task webhook): one shape, one check, one OutcomeEvent.

Pure: no I/O. A report is ``{"report_id", "outcome", "reported_by"?, "detail"?,
"reported_at"?, "callback_at"?, "note"?}``. The note is free text from the front desk: it
is accepted and never forwarded (outcomes carry ids and codes only). Reasons for refusal
name the field, never the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from schemas.events import CALL_RESULTS, NotificationCommand, OutcomeEvent, OutcomeKind
from services.notifier.outcomes import command_outcome

_ID_ALLOWED = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@/+-")


class ReportError(ValueError):
    """A report that cannot be taken; the message is a reason fit for a 400 answer."""


def valid_id(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= 128
        and value[0].isalnum()
        and set(value) <= _ID_ALLOWED
    )


@dataclass(frozen=True)
class CallReport:
    report_id: str
    outcome: OutcomeKind
    reported_by: str | None = None
    detail: str | None = None
    reported_at: datetime | None = None
    # callback_requested: when the patient asked to be called (the scheduler plans it then).
    callback_at: datetime | None = None
    # clinical_concern: what the administrator wrote (never logged, never kept here).
    note: str | None = field(default=None, repr=False)


def _moment(body: dict[str, Any], name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ReportError(f"{name}: an ISO 8601 date and time with an offset")
    return moment


def parse_call_report(body: Any) -> CallReport:
    if not isinstance(body, dict):
        raise ReportError("body must be a JSON object")
    report_id, outcome = body.get("report_id"), body.get("outcome")
    reported_by, detail = body.get("reported_by"), body.get("detail")
    if not valid_id(report_id):
        raise ReportError("report_id: an id is required (it makes retries safe)")
    if not isinstance(outcome, str) or outcome not in CALL_RESULTS:  # [] or {}: not hashable
        raise ReportError(f"outcome: one of {', '.join(sorted(CALL_RESULTS))}")
    if reported_by is not None and not valid_id(reported_by):
        raise ReportError("reported_by: must be an id")
    if detail is not None and not valid_id(detail):
        raise ReportError("detail: a reason code, not free text")
    note = body.get("note")
    if note is not None and not isinstance(note, str):
        raise ReportError("note: must be text")
    if outcome == "clinical_concern" and not (note or "").strip():
        raise ReportError("note: clinical_concern needs what the patient reported")
    if note is not None and len(note) > 4000:
        raise ReportError("note: at most 4000 characters")
    return CallReport(
        report_id=cast(str, report_id),
        outcome=outcome,
        reported_by=reported_by,
        detail=detail,
        reported_at=_moment(body, "reported_at"),
        callback_at=_moment(body, "callback_at"),
        # Only a concern carries its note on (to the scheduler's case); any other is dropped.
        note=note if outcome == "clinical_concern" else None,
    )


def report_outcome(report: CallReport, task: NotificationCommand, now: datetime) -> OutcomeEvent:
    """The outcome of the call task ``task`` that ``report`` gives (event id = report id)."""
    callback = report.outcome == "callback_requested"
    return command_outcome(
        task,
        report.outcome,
        report.reported_at or now,
        event_id=report.report_id,
        respond_by=report.callback_at if callback else None,
        reported_by=report.reported_by,
        detail=report.detail,
        note=report.note,
    )
