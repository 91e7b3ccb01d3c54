"""Results coming back from the administrators' own tools (a FHIR server's Task, a CalDAV
list's completed VTODO, a resolved Jira issue, a solved Zendesk ticket): each connector
reads its tool's vocabulary as a ``CallReport`` and hands it here, to the same path as
``POST /calltasks/{task_id}/result`` (the task's creating command from the ledger, then
``report_outcome``, then ``followup.outcomes``).

The report id is ``<task id>:<tool>:<outcome>``: one outcome per task, tool and result, so a
connector that reads the same result twice (a poll after a restart, a webhook redelivered)
publishes the same event id and the scheduler drops the repeat. The polled connectors keep
where they stopped (``PollPosition``) and what they published (``Seen``) in the notifier's
database, so a restart neither misses a result nor publishes one again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from common.logs import get_logger
from schemas.events import CALL_RESULTS, CallTaskEvent, OutcomeEvent
from services.notifier.call_reports import (
    CallReport,
    ReportError,
    parse_call_report,
    report_outcome,
)
from services.notifier.call_task_channel import CallTaskChannel
from services.notifier.channels import Parts, PermanentSendError, TransientSendError

__all__ = [
    "CALL_RESULTS",
    "PollPosition",
    "Poller",
    "Seen",
    "publish_tool_result",
    "report_from_tool",
]
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
    """Report ids already published: by this process (bounded, in memory) or, through the
    ledger's ``tool_reports``, by any process before it. A poll that reads the same result
    again (a cursor's overlap, a full resync, the first poll after a restart) does not
    publish it twice. Noted after the publish, so a crash in between repeats the same event
    id (dropped downstream) and never loses the result."""

    def __init__(self, limit: int = 10_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def __contains__(self, report_id: object) -> bool:
        return report_id in self._ids

    def add(self, report_id: str) -> None:
        self._ids[report_id] = None
        while len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    async def publish(self, parts: Parts, task_id: str, report: CallReport) -> bool:
        """Publish a polled result unless it already was; True when published now."""
        if report.report_id in self:
            return False
        if await parts.ledger.tool_report_published(report.report_id):
            self.add(report.report_id)
            return False
        published = await publish_tool_result(parts, task_id, report) is not None
        if published:
            retention = timedelta(days=parts.settings.callback_retention_days)
            await parts.ledger.note_tool_report(report.report_id, parts.clock.now(), retention)
        self.add(report.report_id)
        return published


class PollPosition:
    """Where a connector's read-back of one tool stopped, kept in the notifier's database
    (``tool_poll_positions``) so a restarted notifier goes on from there. ``load`` once
    before the first poll; ``save`` after a poll whose results were all published."""

    def __init__(self, parts: Parts, sink: str, source: str) -> None:
        self._parts, self._sink, self._source = parts, sink, source
        self._saved: str | None = None

    async def load(self) -> str | None:
        self._saved = await self._parts.ledger.poll_position(self._sink, self._source)
        return self._saved

    async def save(self, position: str) -> None:
        if position != self._saved:
            now = self._parts.clock.now()
            await self._parts.ledger.save_poll_position(self._sink, self._source, position, now)
            self._saved = position


class Poller:
    """Runs a connector's ``poll_once`` every ``seconds`` on the service's loop (started by
    the sink's build inside the service's start, or its first delivery); a failed poll is
    logged by its error's type and tried again at the next turn. ``nudge`` (a tool's own
    notification that something changed) makes the next turn come at once; nudges that
    arrive together make one poll."""

    NUDGE_GAP = 0.2  # seconds: a burst of notifications is one poll, not one each

    def __init__(self, name: str, poll_once: Callable[[], Awaitable[int]], seconds: float) -> None:
        self._name = name
        self._poll_once = poll_once
        self._seconds = seconds
        self._task: asyncio.Task[None] | None = None
        self._nudged = asyncio.Event()

    def start(self) -> None:
        if self._seconds <= 0 or self._task is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._forever(), name=f"{self._name}_poll")

    def nudge(self) -> None:
        self._nudged.set()

    async def _forever(self) -> None:
        while True:
            self._nudged.clear()
            try:
                await self._poll_once()
            except Exception as exc:  # a tool that is down or answers nonsense: next turn
                log.warning("tool_poll_failed", sink=self._name, error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), self._seconds)
                await asyncio.sleep(self.NUDGE_GAP)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def json_request(
    session: aiohttp.ClientSession,
    provider: str,
    method: str,
    url: str,
    body: object = None,
    headers: Mapping[str, str] | None = None,
    ok_statuses: tuple[int, ...] = (),
) -> tuple[int, Any]:
    """One JSON call to a tool's REST API, with the sinks' error vocabulary: connection
    errors, 429 and 5xx are TransientSendError; other 4xx PermanentSendError
    ``<provider>_http_<status>`` unless in ``ok_statuses``. Returns status and JSON (or None)."""
    data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
    sent = {"Accept": "application/json", **({"Content-Type": "application/json"} if data else {})}
    try:
        async with session.request(
            method, url, data=data, headers={**sent, **(headers or {})}
        ) as response:
            status = response.status
            raw = await response.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise TransientSendError(provider, type(exc).__name__) from None
    if status == 429 or status >= 500:
        raise TransientSendError(provider, f"http_{status}")
    if status >= 400 and status not in ok_statuses:
        raise PermanentSendError(provider, f"{provider}_http_{status}")
    try:
        return status, json.loads(raw) if raw.strip() else None
    except ValueError:
        return status, None


def signed_at_ok(stamp: str | None, now: datetime, tolerance: float = 300.0) -> bool:
    """A webhook's timestamp header (unix seconds or ISO 8601) within ``tolerance`` of now:
    a replayed old delivery is refused."""
    if not stamp:
        return False
    try:
        at = (
            datetime.fromtimestamp(int(stamp), UTC)
            if stamp.isdigit()
            else datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        )
    except (ValueError, OverflowError):
        return False
    return at.tzinfo is not None and abs((now - at).total_seconds()) <= tolerance


def task_lines(task: CallTaskEvent, *, include_notes: bool = False) -> list[str]:
    """What a tool's task shows the front desk: whom to call, why, when, the stage and the
    report link; the doctor's clinical notes only when configured in."""
    lines = [
        f"Patient: {task.patient_name or task.patient_id} ({task.patient_id})",
        f"Phone: {task.phone or 'unknown'}" + (" - shared number" if task.phone_shared else ""),
        f"Why: {task.reason.replace('_', ' ')} ({task.purpose})",
        f"Best window: {task.window_start.isoformat()} - {task.window_end.isoformat()}",
    ]
    if task.stage_name or task.stage_deadline:
        deadline = task.stage_deadline.isoformat() if task.stage_deadline else "none"
        lines.append(f"Stage: {task.stage_name or '-'}, deadline {deadline}")
    if include_notes and task.doctor_notes:
        lines.append(f"Doctor's notes: {task.doctor_notes}")
    lines += [f"Report online: {url}" for url in report_links(task)]
    return lines


def report_links(task: CallTaskEvent) -> list[str]:
    """The links by which the result is reported from anywhere: the signed one-click link
    of each result when the task carries them, else its one ``report_url``."""
    if task.report_links:
        return list(task.report_links.values())
    return [task.report_url] if task.report_url else []


class ToolClient:
    """A connector's one HTTP session to its tool, opened on first use, closed with it."""

    def __init__(
        self,
        *,
        timeout: float = 15.0,
        auth: aiohttp.BasicAuth | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._auth = auth
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, auth=self._auth, headers=self._headers
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def answer_webhook(
    parts: Parts, body: bytes, read: Callable[[Any], tuple[str, CallReport] | None]
) -> web.Response:
    """A tool's signed webhook, once its signature held: ``read`` the JSON body as a call
    report and publish it. 202 with the event id; 204 when the update is no result; 400
    naming the field (or "not JSON"); 404 for a task never received here."""
    try:
        found = read(json.loads(body))
    except ValueError as exc:  # not JSON, or a ReportError naming the field
        reason = str(exc) if isinstance(exc, ReportError) else "body is not JSON"
        raise web.HTTPBadRequest(text=reason) from None
    if found is None:
        return web.Response(status=204)
    outcome = await publish_tool_result(parts, *found)
    if outcome is None:
        raise web.HTTPNotFound(text="unknown call task")
    return web.json_response({"event_id": outcome.event_id}, status=202)
