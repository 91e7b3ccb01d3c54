"""Call tasks as VTODOs in the front desk's CalDAV task list (Nextcloud Tasks, Thunderbird,
Apple Reminders, DAVx5 on Android), and a task marked completed there read back as the
call's result.

Out: ``PUT <list>/followup-<hash>.ics`` with ``If-None-Match: *`` (a redelivery after a crash
never overwrites what the front desk already did: 412 means it is there). Withdrawal:
``DELETE`` of the same resource (404 is fine: already gone). A CalDAV resource carries no
``METHOD`` (RFC 4791 4.1), unlike the mailed invitation.

Back: a poll every ``FOLLOWUP_CALDAV_POLL_SECONDS`` with the collection's sync token
(RFC 6578 ``sync-collection`` REPORT with ``calendar-data``; the first sync reads all; the
token is kept in ``tool_poll_positions``, so a restart goes on from it). A
VTODO with ``STATUS:COMPLETED`` whose result is a **category** equal to a result code
(``no_answer``, ``answered_rebooked``, ... ; "No answer" and "no-answer" also match) or a
line ``Result: <code>`` in its notes (DESCRIPTION: Apple Reminders has no categories) is
that call report; a line ``Callback: 2026-03-03 09:30`` (the clinic's zone,
``FOLLOWUP_CLINIC_TIMEZONE``, unless an offset is given) gives ``callback_at``;
``COMPLETED`` gives ``reported_at``. A task completed with no result is left alone (logged
by task id): nothing is guessed.

Personal data: the title names the patient id and reason only (reminders show titles on
lock screens); name, phone, window, stage and script are in the notes; the doctor's notes
only with ``FOLLOWUP_NOTES_IN_CALENDAR=true``.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import icalendar

from common.logs import get_logger
from schemas.events import CALL_RESULTS, CallTaskEvent
from services.notifier.call_reports import CallReport, ReportError
from services.notifier.channels import (
    Parts,
    PermanentSendError,
    Route,
    SendReceipt,
    TransientSendError,
)
from services.notifier.settings import NotifierSettings
from services.notifier.tool_results import (
    Poller,
    PollPosition,
    Seen,
    ToolClient,
    report_from_tool,
    task_lines,
)

log = get_logger(__name__)
DAV, CALDAV = "DAV:", "urn:ietf:params:xml:ns:caldav"
RESULT_LINE = re.compile(r"^\s*result\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
CALLBACK_LINE = re.compile(r"^\s*callback\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def resource_name(task_id: str) -> str:
    return "followup-" + hashlib.sha256(task_id.encode()).hexdigest()[:32] + ".ics"


def _result_code(text: str) -> str | None:
    code = re.sub(r"[\s-]+", "_", text.strip().lower())
    return code if code in CALL_RESULTS else None


def caldav_todo(task: CallTaskEvent, domain: str, *, include_notes: bool = False) -> bytes:
    """The task as a VCALENDAR with one VTODO for a CalDAV list (no METHOD)."""
    reason = task.reason.replace("_", " ")
    lines = task_lines(task, include_notes=include_notes)
    lines += [
        "",
        "To report: mark the task done and tag it with the result, or put the word Result,",
        "a colon and the result on a line of its own at the top of these notes.",
        "Results: " + ", ".join(sorted(CALL_RESULTS)) + ".",
        "For a call back also add a line with Callback, a colon and the date and time.",
        "",
        f"Script ({task.language}):",
        task.script,
    ]
    cal = icalendar.Calendar()
    cal.add("prodid", "-//followup//call tasks//EN")
    cal.add("version", "2.0")
    todo = icalendar.Todo()
    todo.add("uid", f"{task.task_id}@{domain}")
    todo.add("dtstamp", task.occurred_at)
    todo.add("summary", f"Call patient {task.patient_id}: {reason}")
    todo.add("dtstart", task.window_start)
    todo.add("due", task.window_end)
    todo.add("status", "NEEDS-ACTION")
    todo.add("priority", 1 if task.purpose == "escalation" else 5)
    todo.add("description", "\n".join(lines))
    todo.add("x-followup-task-id", task.task_id)
    cal.add_component(todo)
    ical: bytes = cal.to_ical()
    return ical


def _aware(value: Any) -> datetime | None:
    moment = getattr(value, "dt", value)
    if isinstance(moment, datetime) and moment.tzinfo is not None:
        return moment
    return None


def _callback_at(text: str, zone: tzinfo) -> str | None:
    match = CALLBACK_LINE.search(text)
    if match is None:
        return None
    try:
        moment = datetime.fromisoformat(match.group(1).replace(" ", "T", 1))
    except ValueError:
        raise ReportError("callback_at: write the date and time as 2026-03-03 09:30") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.isoformat()


def todo_result(ical: bytes | str, zone: tzinfo) -> tuple[str, CallReport] | None:
    """Our task id and the call report a completed VTODO carries; None when it is not ours,
    not completed or has no result. A call-back time without an offset is the front desk's
    own, ``zone`` (the clinic's). Pure. ReportError for a result it cannot take."""
    calendar = icalendar.Calendar.from_ical(ical)
    for todo in calendar.walk("VTODO"):
        task_id = str(todo.get("x-followup-task-id") or str(todo.get("uid", "")).rsplit("@", 1)[0])
        if not task_id or str(todo.get("status", "")).upper() != "COMPLETED":
            continue
        raw = todo.get("categories")
        entries: list[Any] = raw if isinstance(raw, list) else [] if raw is None else [raw]
        categories = [
            str(c)
            for entry in entries
            for c in (entry.cats if isinstance(entry, icalendar.prop.vCategory) else [entry])
        ]
        description = str(todo.get("description", ""))
        codes = [c for c in map(_result_code, categories) if c]
        line = RESULT_LINE.search(description)
        if not codes and line is not None:
            code = _result_code(line.group(1))
            if code is None:
                raise ReportError("outcome: one of " + ", ".join(sorted(CALL_RESULTS)))
            codes = [code]
        if not codes:
            log.info("caldav_completed_without_result", task_id=task_id)
            return None
        completed = _aware(todo.get("completed"))
        report = report_from_tool(
            "caldav",
            task_id,
            codes[0],
            reported_at=completed.isoformat() if completed else None,
            callback_at=_callback_at(description, zone),
        )
        return task_id, report
    return None


def _sync_body(token: str | None) -> bytes:
    root = ET.Element(f"{{{DAV}}}sync-collection")
    ET.SubElement(root, f"{{{DAV}}}sync-token").text = token or ""
    ET.SubElement(root, f"{{{DAV}}}sync-level").text = "1"
    prop = ET.SubElement(root, f"{{{DAV}}}prop")
    ET.SubElement(prop, f"{{{DAV}}}getetag")
    ET.SubElement(prop, f"{{{CALDAV}}}calendar-data")
    body: bytes = ET.tostring(root, xml_declaration=True, encoding="utf-8")
    return body


def changed_todos(multistatus: bytes) -> tuple[list[str], str | None]:
    """The calendar data of every changed resource and the new sync token (pure)."""
    root = ET.fromstring(multistatus)
    data = [
        node.text
        for node in root.iter(f"{{{CALDAV}}}calendar-data")
        if node.text and node.text.strip()
    ]
    token = root.findtext(f"{{{DAV}}}sync-token")
    return data, token


class CalDavSink:
    name = "caldav"

    def __init__(
        self,
        parts: Parts,
        list_url: str,
        *,
        username: str = "",
        password: str = "",
        domain: str = "followup.invalid",
        include_notes: bool = False,
        zone: tzinfo = UTC,
        poll_seconds: float = 60.0,
        timeout: float = 15.0,
    ) -> None:
        self._parts = parts
        self._list = list_url if list_url.endswith("/") else list_url + "/"
        auth = aiohttp.BasicAuth(username, password) if username else None
        self._client = ToolClient(timeout=timeout, auth=auth)
        self._domain = domain
        self._include_notes = include_notes
        self._zone = zone
        self._token: str | None = None
        self._position = PollPosition(parts, self.name, self._list)  # the token, kept
        self._loaded = False
        self._seen = Seen()
        self._poller = Poller(self.name, self.poll_once, poll_seconds)

    def start_polling(self) -> None:
        self._poller.start()

    async def deliver(self, task: CallTaskEvent) -> SendReceipt:
        self.start_polling()
        url = self._list + resource_name(task.task_id)
        try:
            if task.action == "withdraw":
                async with self._client.session().delete(url) as response:
                    status = response.status
                done = 200 <= status < 300 or status == 404
            else:
                body = caldav_todo(task, self._domain, include_notes=self._include_notes)
                headers = {"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"}
                async with self._client.session().put(url, data=body, headers=headers) as response:
                    status = response.status
                done = 200 <= status < 300 or status == 412  # 412: there already
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientSendError(self.name, type(exc).__name__) from None
        if done:
            return SendReceipt(self.name, provider_id=resource_name(task.task_id))
        if status in (400, 415):
            raise PermanentSendError(self.name, f"caldav_http_{status}")
        raise TransientSendError(self.name, f"http_{status}")

    async def poll_once(self) -> int:
        """One sync of the list: every changed completed task's result is published."""
        if not self._loaded:  # a restarted notifier goes on from the token it last saved
            self._token = await self._position.load() or None
            self._loaded = True
        headers = {"Content-Type": "application/xml; charset=utf-8", "Depth": "1"}
        async with self._client.session().request(
            "REPORT", self._list, data=_sync_body(self._token), headers=headers
        ) as response:
            if response.status in (403, 409) and self._token is not None:
                self._token = None  # the server forgot our token: read everything again
                await self._position.save("")
                return 0
            response.raise_for_status()
            body = await response.read()
        todos, token = changed_todos(body)
        published = 0
        for ical in todos:
            try:
                found = todo_result(ical, self._zone)
            except (ReportError, ValueError) as exc:
                log.warning("caldav_result_refused", reason=str(exc).split("\n")[0][:120])
                continue
            if found is not None and await self._seen.publish(self._parts, *found):
                published += 1
        self._token = token or self._token
        if self._token:  # every result of this sync is published: never read again
            await self._position.save(self._token)
        return published

    def routes(self) -> tuple[Route, ...]:
        return ()

    async def close(self) -> None:
        await self._poller.stop()
        await self._client.close()


def build(parts: Parts) -> CalDavSink:
    s = parts.settings
    sink = CalDavSink(
        parts,
        s.caldav_list_url or "",
        username=s.caldav_username,
        password=s.caldav_password,
        domain=s.smtp_sender.rsplit("@", 1)[-1],  # the mailed VTODO's UID domain: one task
        include_notes=s.notes_in_calendar,
        zone=ZoneInfo(s.clinic_timezone),
        poll_seconds=s.caldav_poll_seconds,
    )
    sink.start_polling()
    return sink


def check(settings: NotifierSettings) -> str | None:
    if not settings.caldav_list_url:
        return "FOLLOWUP_CALDAV_LIST_URL is required for the caldav sink"
    return None


__all__ = ["CalDavSink", "caldav_todo", "changed_todos", "todo_result"]
