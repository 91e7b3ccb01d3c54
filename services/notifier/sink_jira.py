"""Call tasks as Jira (Jira Service Management or Jira Software) issues, REST API v3, and the
call's result back from Jira's webhook when the issue is resolved.

Out (``FOLLOWUP_JIRA_*``; basic auth with an account's email and API token):
- find: ``GET /rest/api/3/search/jql?jql=project = "<KEY>" AND labels = "<task label>"``:
  the issue made for this task, if any (redelivery after a crash updates nothing twice);
- create: ``POST /rest/api/3/issue`` with ``project``, ``issuetype``, ``summary`` ("Call
  patient <id>: <reason>"), ``description`` (Atlassian Document Format), ``duedate`` (the
  window's last day) and ``labels`` (``followup``, the task label ``followup-<base64url of the
  task id>``);
- withdraw: ``GET /rest/api/3/issue/{key}/transitions``, then ``POST .../transitions`` with
  the one named ``FOLLOWUP_JIRA_WITHDRAW_TRANSITION`` (default "Cancel"); an issue with no
  such transition left (already done) is left as it is.

Back: a Jira admin webhook (event "Issue updated", JQL ``labels = followup``) to
``POST /jira/webhook`` with the webhook's secret: Jira signs the body as
``X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, body)>``. A ``jira:issue_updated`` whose
issue has a ``resolution`` and a label ``followup-result-<code>`` (``followup-result-no_answer``
...) is that call report (``reported_by``: the user's accountId). Anything else is answered
204 and ignored; a wrong signature 401.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from common.logs import get_logger
from schemas.events import CALL_RESULTS, CallTaskEvent
from services.notifier.call_reports import CallReport
from services.notifier.channels import Parts, Route, SendReceipt
from services.notifier.settings import NotifierSettings
from services.notifier.tool_results import (
    ToolClient,
    answer_webhook,
    json_request,
    report_from_tool,
    task_lines,
)

log = get_logger(__name__)
RESULT_LABEL = "followup-result-"
SIGNATURE_HEADER = "X-Hub-Signature"


def task_label(task_id: str) -> str:
    """A Jira label naming the task (labels take no spaces; the id comes back from it)."""
    return "followup-" + base64.urlsafe_b64encode(task_id.encode()).decode().rstrip("=")


def task_of_label(label: str) -> str | None:
    if not label.startswith("followup-") or label.startswith(RESULT_LABEL):
        return None
    encoded = label.removeprefix("followup-")
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def adf(lines: list[str]) -> dict[str, Any]:
    """Plain lines as an Atlassian Document (one paragraph each; blank lines dropped)."""
    return {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": line}]}
            for line in lines
            if line.strip()
        ],
    }


def issue_fields(
    task: CallTaskEvent, project: str, issue_type: str, *, include_notes: bool
) -> dict[str, Any]:
    how = (
        "To report: resolve the issue with the label "
        + ", ".join(f"{RESULT_LABEL}{code}" for code in sorted(CALL_RESULTS))
        + "."
    )
    return {
        "project": {"key": project},
        "issuetype": {"name": issue_type},
        "summary": f"Call patient {task.patient_id}: {task.reason.replace('_', ' ')}",
        "description": adf(
            [
                *task_lines(task, include_notes=include_notes),
                how,
                f"Script ({task.language}):",
                *task.script.splitlines(),
            ]
        ),
        "duedate": task.window_end.date().isoformat(),
        "labels": ["followup", task_label(task.task_id)]
        + (["followup-escalation"] if task.purpose == "escalation" else []),
    }


def jira_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def resolution_report(event: Any) -> tuple[str, CallReport] | None:
    """The call report a ``jira:issue_updated`` webhook body carries (pure), or None."""
    if not isinstance(event, dict) or event.get("webhookEvent") != "jira:issue_updated":
        return None
    fields = (event.get("issue") or {}).get("fields") or {}
    labels = [str(label) for label in fields.get("labels") or ()]
    task_id = next((t for t in map(task_of_label, labels) if t), None)
    results = [
        label.removeprefix(RESULT_LABEL) for label in labels if label.startswith(RESULT_LABEL)
    ]
    if task_id is None or not fields.get("resolution") or not results:
        return None
    user = (event.get("user") or {}).get("accountId")
    report = report_from_tool(
        "jira",
        task_id,
        results[0],
        reported_by=user if isinstance(user, str) else None,
        reported_at=_iso(fields.get("resolutiondate")),
    )
    return task_id, report


def _iso(value: Any) -> str | None:
    """Jira's ``2026-03-02T10:00:00.000+0200`` as ISO 8601 with a colon in the offset."""
    if not isinstance(value, str) or len(value) < 5:
        return None
    if value[-5] in "+-" and value[-3] != ":":
        return f"{value[:-2]}:{value[-2:]}"
    return str(value)


class JiraSink:
    name = "jira"

    def __init__(self, parts: Parts) -> None:
        s = parts.settings
        self._parts = parts
        self._base = (s.jira_base_url or "").rstrip("/")
        self._project = s.jira_project_key
        self._issue_type = s.jira_issue_type
        self._withdraw = s.jira_withdraw_transition
        self._secret = s.jira_webhook_secret
        self._include_notes = s.notes_in_tickets
        self._client = ToolClient(auth=aiohttp.BasicAuth(s.jira_email, s.jira_api_token))

    async def _existing(self, task_id: str) -> str | None:
        jql = f'project = "{self._project}" AND labels = "{task_label(task_id)}"'
        url = f"{self._base}/rest/api/3/search/jql?jql={quote(jql)}&fields=status&maxResults=1"
        _, found = await json_request(self._client.session(), self.name, "GET", url)
        issues = (found or {}).get("issues") or []
        return str(issues[0]["key"]) if issues else None

    async def deliver(self, task: CallTaskEvent) -> SendReceipt:
        key = await self._existing(task.task_id)
        if task.action == "create":
            if key is None:
                fields = issue_fields(
                    task, self._project, self._issue_type, include_notes=self._include_notes
                )
                _, made = await json_request(
                    self._client.session(), self.name, "POST", f"{self._base}/rest/api/3/issue",
                    {"fields": fields},
                )  # fmt: skip
                key = str((made or {}).get("key"))
            return SendReceipt(self.name, provider_id=key)
        if key is None:
            return SendReceipt(self.name)  # nothing to withdraw in Jira
        url = f"{self._base}/rest/api/3/issue/{key}/transitions"
        _, offered = await json_request(self._client.session(), self.name, "GET", url)
        wanted = next(
            (
                t
                for t in (offered or {}).get("transitions") or ()
                if str(t.get("name", "")).lower() == self._withdraw.lower()
            ),
            None,
        )
        if wanted is not None:
            await json_request(
                self._client.session(),
                self.name,
                "POST",
                url,
                {"transition": {"id": str(wanted["id"])}},
            )
        return SendReceipt(self.name, provider_id=key)

    def routes(self) -> tuple[Route, ...]:
        return (Route("POST", "/jira/webhook", self.webhook),)

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not self._secret or not hmac.compare_digest(jira_signature(self._secret, body), given):
            raise web.HTTPUnauthorized(text=f"{SIGNATURE_HEADER}: a valid signature is required")
        return await answer_webhook(self._parts, body, resolution_report)

    async def close(self) -> None:
        await self._client.close()


def check(settings: NotifierSettings) -> str | None:
    s = settings
    if s.jira_base_url and s.jira_project_key and s.jira_email and s.jira_api_token:
        return None
    return "the jira sink needs FOLLOWUP_JIRA_BASE_URL, _PROJECT_KEY, _EMAIL and _API_TOKEN"
