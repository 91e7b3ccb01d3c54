"""Call tasks as Zendesk Support tickets (tickets API), and the call's result back from a
Zendesk webhook when an agent solves the ticket.

Out (``FOLLOWUP_ZENDESK_*``; basic auth ``<email>/token:<api token>``):
- find: ``GET /api/v2/tickets.json?external_id=<task id>`` (the ticket made for this task);
- create: ``POST /api/v2/tickets.json`` with ``Idempotency-Key: <task id>`` and
  ``{"ticket": {"subject", "comment": {"body", "public": false}, "type": "task", "due_at",
  "priority", "external_id": <task id>, "tags": ["followup", ...], "group_id"?}}``: the body is
  a private note for agents (never mailed to anyone), the requester is the API user;
- withdraw: ``PUT /api/v2/tickets/{id}.json`` with ``status: solved``, tag
  ``followup_withdrawn`` and a private note; a closed ticket (422) is left as it is.

Back: a trigger "Ticket is solved and tags contain followup" notifying a webhook to
``POST /zendesk/webhook`` with the JSON body
``{"ticket_id": "{{ticket.id}}", "external_id": "{{ticket.external_id}}",
"tags": "{{ticket.tags}}", "assignee_id": "{{ticket.assignee.id}}",
"updated_at": "{{ticket.updated_at_with_timestamp}}"}``. Zendesk signs it:
``X-Zendesk-Webhook-Signature`` = base64(HMAC-SHA256(signing secret, timestamp + body)) with
``X-Zendesk-Webhook-Signature-Timestamp``. The result is the tag ``followup_result_<code>``
(agents pick it in a drop-down ticket field whose options carry those tags). Solved with no
result tag (our own withdrawal, say): 204, ignored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from common.logs import get_logger
from schemas.events import CALL_RESULTS, CallTaskEvent
from services.notifier.call_reports import CallReport, ReportError
from services.notifier.channels import Parts, PermanentSendError, Route, SendReceipt
from services.notifier.settings import NotifierSettings
from services.notifier.tool_results import (
    ToolClient,
    answer_webhook,
    json_request,
    report_from_tool,
    signed_at_ok,
    task_lines,
)

log = get_logger(__name__)
RESULT_TAG = "followup_result_"
SIGNATURE_HEADER = "X-Zendesk-Webhook-Signature"
TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"


def zendesk_signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def ticket_body(
    task: CallTaskEvent, *, include_notes: bool, group_id: int | None
) -> dict[str, Any]:
    how = (
        "To report: set the call result field (tags "
        + ", ".join(f"{RESULT_TAG}{code}" for code in sorted(CALL_RESULTS))
        + ") and solve the ticket."
    )
    lines = [
        *task_lines(task, include_notes=include_notes),
        "",
        how,
        "",
        f"Script ({task.language}):",
        task.script,
    ]
    ticket: dict[str, Any] = {
        "subject": f"Call patient {task.patient_id}: {task.reason.replace('_', ' ')}",
        "comment": {"body": "\n".join(lines), "public": False},
        "type": "task",
        "due_at": task.window_end.isoformat(),
        "priority": "urgent" if task.purpose == "escalation" else "normal",
        "external_id": task.task_id,
        "tags": ["followup", f"followup_{task.purpose}"],
    }
    if group_id is not None:
        ticket["group_id"] = group_id
    return {"ticket": ticket}


def solved_report(body: Any) -> tuple[str, CallReport] | None:
    """The call report in the solve webhook's body (pure), or None."""
    if not isinstance(body, dict):
        raise ReportError("body must be a JSON object")
    task_id = body.get("external_id")
    tags = body.get("tags")
    tag_list = tags.split() if isinstance(tags, str) else [str(t) for t in tags or ()]
    results = [t.removeprefix(RESULT_TAG) for t in tag_list if t.startswith(RESULT_TAG)]
    if not isinstance(task_id, str) or not task_id or not results:
        return None
    agent = body.get("assignee_id")
    report = report_from_tool(
        "zendesk",
        task_id,
        results[0],
        reported_by=f"zendesk-{agent}" if agent not in (None, "") else None,
    )
    return task_id, report


class ZendeskSink:
    name = "zendesk"

    def __init__(self, parts: Parts) -> None:
        s = parts.settings
        self._parts = parts
        self._base = (s.zendesk_url or "").rstrip("/")
        self._client = ToolClient(
            auth=aiohttp.BasicAuth(f"{s.zendesk_email}/token", s.zendesk_api_token)
        )
        self._secret = s.zendesk_webhook_secret
        self._group = s.zendesk_group_id
        self._include_notes = s.notes_in_tickets

    async def _existing(self, task_id: str) -> int | None:
        url = f"{self._base}/api/v2/tickets.json?external_id={quote(task_id, safe='')}"
        _, found = await json_request(self._client.session(), self.name, "GET", url)
        tickets = (found or {}).get("tickets") or []
        return int(tickets[0]["id"]) if tickets else None

    async def deliver(self, task: CallTaskEvent) -> SendReceipt:
        ticket_id = await self._existing(task.task_id)
        if task.action == "create":
            if ticket_id is None:
                body = ticket_body(task, include_notes=self._include_notes, group_id=self._group)
                url = f"{self._base}/api/v2/tickets.json"
                _, made = await json_request(
                    self._client.session(), self.name, "POST", url, body,
                    headers={"Idempotency-Key": task.task_id},
                )  # fmt: skip
                ticket_id = int((made or {}).get("ticket", {}).get("id", 0)) or None
            return SendReceipt(self.name, provider_id=str(ticket_id))
        if ticket_id is None:
            return SendReceipt(self.name)
        update = {
            "ticket": {
                "status": "solved",
                "additional_tags": ["followup_withdrawn"],
                "comment": {"body": "Withdrawn by followup: no call is needed.", "public": False},
            }
        }
        url = f"{self._base}/api/v2/tickets/{ticket_id}.json"
        try:
            await json_request(self._client.session(), self.name, "PUT", url, update)
        except PermanentSendError as exc:
            if exc.detail != f"{self.name}_http_422":  # 422: closed already, nothing to do
                raise
        return SendReceipt(self.name, provider_id=str(ticket_id))

    def routes(self) -> tuple[Route, ...]:
        return (Route("POST", "/zendesk/webhook", self.webhook),)

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not (
            self._secret
            and hmac.compare_digest(zendesk_signature(self._secret, stamp, body), given)
            and signed_at_ok(stamp, self._parts.clock.now())
        ):
            raise web.HTTPUnauthorized(
                text=f"{SIGNATURE_HEADER}: a valid, recent signature is required"
            )
        return await answer_webhook(self._parts, body, solved_report)

    async def close(self) -> None:
        await self._client.close()


def check(settings: NotifierSettings) -> str | None:
    s = settings
    if s.zendesk_url and s.zendesk_email and s.zendesk_api_token:
        return None
    return "the zendesk sink needs FOLLOWUP_ZENDESK_URL, _EMAIL and _API_TOKEN"
