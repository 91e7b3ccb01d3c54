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

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from common.logs import get_logger
from schemas.events import CALL_RESULTS, OutcomeEvent
from services.notifier.call_reports import CallReport, parse_call_report, report_outcome
from services.notifier.call_task_channel import CallTaskChannel
from services.notifier.channels import Parts

__all__ = ["CALL_RESULTS", "Poller", "Seen", "publish_tool_result", "report_from_tool"]
log = get_logger(__name__)


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


class Seen:
    """Report ids this process already published (bounded): a poll that reads the same
    result again (a cursor's overlap, a full resync) does not publish it twice."""

    def __init__(self, limit: int = 10_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def __contains__(self, report_id: object) -> bool:
        return report_id in self._ids

    def add(self, report_id: str) -> None:
        self._ids[report_id] = None
        while len(self._ids) > self._limit:
            self._ids.popitem(last=False)


class Poller:
    """Runs a connector's ``poll_once`` every ``seconds`` on the service's loop (started by
    the sink's build inside the service's start, or its first delivery); a failed poll is
    logged by its error's type and tried again at the next turn."""

    def __init__(self, name: str, poll_once: Callable[[], Awaitable[int]], seconds: float) -> None:
        self._name = name
        self._poll_once = poll_once
        self._seconds = seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._seconds <= 0 or self._task is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._forever(), name=f"{self._name}_poll")

    async def _forever(self) -> None:
        while True:
            try:
                await self._poll_once()
            except Exception as exc:  # a tool that is down or answers nonsense: next turn
                log.warning("tool_poll_failed", sink=self._name, error=type(exc).__name__)
            await asyncio.sleep(self._seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
