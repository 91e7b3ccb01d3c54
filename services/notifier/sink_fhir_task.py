"""Call tasks as FHIR R4 Tasks on the hospital's FHIR server, and the call's result read back
from the Task the administrator completed there.

Out: ``PUT {base}/Task/<fhir_task_id>`` (update-as-create with a logical id derived from our
task id, so a redelivery updates the same Task; no conditional create needed). A withdrawal
PUTs the same Task with ``status: cancelled`` (never DELETE: the record keeps the history).

Back: a poll every ``FOLLOWUP_FHIR_POLL_SECONDS`` of
``GET {base}/Task?_lastUpdated=ge<cursor>&identifier=urn:followup:calltask|`` (paged through
``Bundle.link[next]``). A Task with ``status: completed`` and an ``output`` typed
``urn:followup:task-output|call-outcome`` whose value codes one of the call results
(``urn:followup:call-outcome|no_answer``, ...) becomes that call report; ``callback-at``
(valueDateTime) gives ``callback_at``; ``owner`` (a Practitioner reference) is
``reported_by``. The cursor starts ``FOLLOWUP_FHIR_POLL_LOOKBACK_HOURS`` back on the first
start and then follows the server's own clock (``Bundle.meta.lastUpdated``) with an overlap,
so a result is read at least once; it is kept in ``tool_poll_positions``, so a restarted
notifier goes on from where it stopped (however long it was down). Results read again are
not published twice (``tool_results.Seen``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp

from common.logs import get_logger
from schemas.events import CallTaskEvent
from services.notifier.call_reports import CallReport, ReportError
from services.notifier.calltasks import (
    FHIR_OUTCOME_SYSTEM,
    FHIR_OUTPUT_SYSTEM,
    FHIR_TASK_SYSTEM,
    fhir_task,
    fhir_task_id,
)
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
)

log = get_logger(__name__)
FHIR_JSON = "application/fhir+json"
OVERLAP = timedelta(seconds=5)  # server clocks and commit order: read a little twice


def _moment(stamp: str | None) -> datetime | None:
    """A saved cursor, or None when there is none (or it is not an aware moment)."""
    try:
        moment = datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def _coded(concept: Any, system: str) -> str | None:
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict) and coding.get("system") == system:
            code = coding.get("code")
            return code if isinstance(code, str) else None
    return None


def task_result(resource: dict[str, Any]) -> tuple[str, CallReport] | None:
    """Our task id and the call report a completed R4 Task carries, or None (not ours, not
    completed, no outcome). Pure. ReportError when it names a result we do not know."""
    task_id = next(
        (
            i.get("value")
            for i in resource.get("identifier") or ()
            if isinstance(i, dict) and i.get("system") == FHIR_TASK_SYSTEM
        ),
        None,
    )
    if not isinstance(task_id, str) or resource.get("status") != "completed":
        return None
    outcome: str | None = None
    callback_at: str | None = None
    for output in resource.get("output") or ():
        if not isinstance(output, dict):
            continue
        kind = _coded(output.get("type"), FHIR_OUTPUT_SYSTEM)
        if kind == "call-outcome":
            outcome = _coded(output.get("valueCodeableConcept"), FHIR_OUTCOME_SYSTEM)
            outcome = outcome or output.get("valueCode")
        elif kind == "callback-at":
            callback_at = output.get("valueDateTime")
    if outcome is None:
        return None
    owner = (resource.get("owner") or {}).get("reference")
    reported_by = owner.split("/", 1)[-1] if isinstance(owner, str) else None
    period = resource.get("executionPeriod") or {}
    reported_at = period.get("end") if isinstance(period, dict) else None
    report = report_from_tool(
        "fhir",
        task_id,
        str(outcome),
        reported_by=reported_by,
        callback_at=callback_at,
        reported_at=reported_at if isinstance(reported_at, str) and "T" in reported_at else None,
    )
    return task_id, report


class FhirTaskSink:
    name = "fhir_task"

    def __init__(
        self,
        parts: Parts,
        base_url: str,
        token: str = "",
        poll_seconds: float = 30.0,
        lookback: timedelta = timedelta(hours=24),
        timeout: float = 15.0,
    ) -> None:
        self._parts = parts
        self._base = base_url.rstrip("/")
        headers = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = ToolClient(timeout=timeout, headers=headers)
        self._poll_seconds = poll_seconds
        self._cursor = parts.clock.now() - lookback
        self._position = PollPosition(parts, self.name, self._base)  # the cursor, kept
        self._loaded = False
        self._poller = Poller(self.name, self.poll_once, poll_seconds)
        self._seen = Seen()  # the cursor's overlap reads results again

    def start_polling(self) -> None:
        self._poller.start()

    async def deliver(self, task: CallTaskEvent) -> SendReceipt:
        self.start_polling()
        resource = fhir_task(task)
        url = f"{self._base}/Task/{resource['id']}"
        try:
            async with self._client.session().put(
                url, data=json.dumps(resource).encode()
            ) as response:
                status = response.status
                if status in (400, 409, 412, 422):
                    # The server refused the resource itself: it will refuse it again.
                    raise PermanentSendError(self.name, f"fhir_http_{status}")
                if not 200 <= status < 300:
                    raise TransientSendError(self.name, f"http_{status}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientSendError(self.name, type(exc).__name__) from None
        return SendReceipt(self.name, provider_id=resource["id"])

    # --- results back ----------------------------------------------------------------

    async def _pages(self, url: str | None) -> AsyncIterator[dict[str, Any]]:
        while url:
            async with self._client.session().get(url) as response:
                response.raise_for_status()
                bundle = await response.json(content_type=None)
            yield bundle
            url = next(
                (
                    link.get("url")
                    for link in bundle.get("link") or ()
                    if isinstance(link, dict) and link.get("relation") == "next"
                ),
                None,
            )

    async def poll_once(self) -> int:
        """Read the Tasks changed since the cursor; publish each completed one's result.
        Returns how many results were published."""
        if not self._loaded:  # a restarted notifier goes on from the cursor it last saved
            self._cursor = _moment(await self._position.load()) or self._cursor
            self._loaded = True
        query = urlencode(
            {"_lastUpdated": f"ge{self._cursor.isoformat()}", "identifier": f"{FHIR_TASK_SYSTEM}|"}
        )
        published = 0
        server_now: datetime | None = None
        async for bundle in self._pages(f"{self._base}/Task?{query}"):
            if server_now is None:
                stamp = (bundle.get("meta") or {}).get("lastUpdated")
                server_now = datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
            for entry in bundle.get("entry") or ():
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict) and await self._read_back(resource):
                    published += 1
        if server_now is not None:
            self._cursor = server_now - OVERLAP
            await self._position.save(self._cursor.isoformat())
        return published

    async def _read_back(self, resource: dict[str, Any]) -> bool:
        try:
            found = task_result(resource)
        except ReportError as exc:
            log.warning("fhir_task_result_refused", fhir_id=resource.get("id"), reason=str(exc))
            return False
        if found is None:
            return False
        task_id, report = found
        if fhir_task_id(task_id) != resource.get("id"):
            return False  # an identifier copied onto another Task: not one we created
        return await self._seen.publish(self._parts, task_id, report)

    def routes(self) -> tuple[Route, ...]:
        return ()

    async def close(self) -> None:
        await self._poller.stop()
        await self._client.close()


def build(parts: Parts) -> FhirTaskSink:
    s = parts.settings
    sink = FhirTaskSink(
        parts,
        s.fhir_base_url or "",
        token=s.fhir_token,
        poll_seconds=s.fhir_poll_seconds,
        lookback=timedelta(hours=s.fhir_poll_lookback_hours),
    )
    sink.start_polling()  # built inside the service's start: the loop is running
    return sink


def check(settings: NotifierSettings) -> str | None:
    if not settings.fhir_base_url:
        return "FOLLOWUP_FHIR_BASE_URL is required for the fhir_task sink"
    return None
