"""Results coming back from the administrators' own tools (a FHIR server's Task, a CalDAV
list's completed VTODO, a resolved Jira issue, a solved Zendesk ticket): each connector
reads its tool's vocabulary as a ``CallReport`` and hands it here, to the same path as
``POST /calltasks/{task_id}/result`` (the task's creating command from the ledger, then
``report_outcome``, then ``followup.outcomes``).

The report id is ``<task id>:<tool>:<outcome>``: one outcome per task, tool and result, so a
connector that reads the same result twice (a poll after a restart, a webhook redelivered)
publishes the same event id and the scheduler drops the repeat.
"""

from __future__ import annotations

from schemas.events import CALL_RESULTS, OutcomeEvent
from services.notifier.call_reports import CallReport, parse_call_report, report_outcome
from services.notifier.call_task_channel import CallTaskChannel
from services.notifier.channels import Parts

__all__ = ["CALL_RESULTS", "publish_tool_result", "report_from_tool"]


def report_from_tool(
    tool: str, task_id: str, outcome: str, *, reported_by: str | None = None, **extra: object
) -> CallReport:
    """A call report from a tool's fields, checked like any other (ReportError if not)."""
    body: dict[str, object] = {
        "report_id": f"{task_id}:{tool}:{outcome}",
        "outcome": outcome,
        "reported_by": reported_by,
        **{k: v for k, v in extra.items() if v is not None},
    }
    return parse_call_report(body)


async def publish_tool_result(
    parts: Parts, task_id: str, report: CallReport
) -> OutcomeEvent | None:
    """Publish the outcome; None when no such call task was ever received here."""
    command = await parts.ledger.call_task(CallTaskChannel.name, task_id)
    if command is None:
        return None
    event = report_outcome(report, command, parts.clock.now())
    await parts.publish_outcome(event)
    return event
