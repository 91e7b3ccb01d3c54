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

Sooner (``FOLLOWUP_FHIR_SUBSCRIPTION=true``): at its first poll the sink PUTs an R4
``Subscription`` (rest-hook, criteria ``Task?identifier=urn:followup:calltask|``, no payload,
endpoint ``<public base>/fhir/subscription`` with a bearer token derived from the link
secret); each notification the server POSTs there makes the next poll come at once. The
notification's body is never read: the poll reads the Tasks themselves, so a lost or forged
notification changes nothing but the timing, and polling stays the fallback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

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
SUBSCRIPTION_PATH = "/fhir/subscription"
SUBSCRIPTION_CRITERIA = f"Task?identifier={FHIR_TASK_SYSTEM}|"


def notification_token(link_secret: str) -> str:
    """The bearer token the FHIR server sends back with each notification: derived from the
    link secret, so it needs no setting of its own (and opens nothing but an early poll)."""
    return hmac.new(link_secret.encode(), b"fhir-subscription", hashlib.sha256).hexdigest()


def subscription(endpoint: str, token: str) -> dict[str, Any]:
    """The R4 rest-hook Subscription on our Tasks, with no payload (an empty notification:
    the poll reads what changed). Its id comes from the endpoint: one per notifier address."""
    return {
        "resourceType": "Subscription",
        "id": "followup-" + hashlib.sha256(endpoint.encode()).hexdigest()[:40],
        "status": "requested",
        "reason": "followup: call results reported on call-task Tasks",
        "criteria": SUBSCRIPTION_CRITERIA,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "header": [f"Authorization: Bearer {token}"],
        },
    }


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
        subscribe_to: str | None = None,
        subscription_token: str = "",
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
        # The rest-hook endpoint to register (None: poll only); done once it is accepted.
        self._subscribe_to = subscribe_to
        self._subscription_token = subscription_token

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
        if self._subscribe_to is not None:
            await self._subscribe(self._subscribe_to)
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

    # --- the rest-hook: the server says something changed, the next poll comes at once ----

    async def _subscribe(self, endpoint: str) -> None:
        """PUT our Subscription (idempotent by its id). Accepted (2xx) or refused (4xx: the
        server has no subscriptions, say) it is not tried again; 5xx and connection errors
        are tried at the next poll."""
        resource = subscription(endpoint, self._subscription_token)
        url = f"{self._base}/Subscription/{resource['id']}"
        try:
            async with self._client.session().put(
                url, data=json.dumps(resource).encode()
            ) as response:
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("fhir_subscription_failed", error=type(exc).__name__)
            return
        if status >= 500:
            log.warning("fhir_subscription_failed", error=f"http_{status}")
            return
        self._subscribe_to = None
        if status >= 400:
            log.warning("fhir_subscription_refused", status=status)  # polling goes on
        else:
            log.info("fhir_subscription_registered", fhir_id=resource["id"])

    async def notified(self, request: web.Request) -> web.Response:
        """A notification of the rest-hook Subscription: its bearer token or 401; then a poll
        at once. Its body (if any) is not read: the poll reads the Tasks from the server."""
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {self._subscription_token}"
        if not self._subscription_token or not hmac.compare_digest(given, expected):
            raise web.HTTPUnauthorized(text="a valid bearer token is required")
        self._poller.nudge()
        return web.Response(status=200)

    def routes(self) -> tuple[Route, ...]:
        return (Route("POST", SUBSCRIPTION_PATH, self.notified),)

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
        subscribe_to=parts.public_base_url.rstrip("/") + SUBSCRIPTION_PATH
        if s.fhir_subscription
        else None,
        subscription_token=notification_token(s.link_secret) if s.link_secret else "",
    )
    sink.start_polling()  # built inside the service's start: the loop is running
    return sink


def check(settings: NotifierSettings) -> str | None:
    if not settings.fhir_base_url:
        return "FOLLOWUP_FHIR_BASE_URL is required for the fhir_task sink"
    if settings.fhir_subscription and not settings.link_secret:
        return "FOLLOWUP_LINK_SECRET is required for FOLLOWUP_FHIR_SUBSCRIPTION"
    if settings.fhir_subscription and settings.fhir_poll_seconds <= 0:
        return "FOLLOWUP_FHIR_SUBSCRIPTION needs FOLLOWUP_FHIR_POLL_SECONDS above 0"
    return None
