"""Call tasks as short notices in the front desk's chat: Slack (incoming webhook, Block
Kit), Microsoft Teams (a Workflows "When a Teams webhook request is received" URL, or a
legacy connector URL: an Adaptive Card attachment) and Mattermost (incoming webhook).

A notice is a heads-up, not the record: it carries what ``FOLLOWUP_CHAT_FIELDS`` lists
(default ``patient_id,reason,window,report_links``: no name, no phone; add ``name``,
``phone``, ``stage``) and the doctor's notes only with ``FOLLOWUP_NOTES_IN_CHAT=true``. A
withdrawal posts a second notice ("Withdrawn: no call needed"); incoming webhooks cannot
edit an earlier message. Results come back through the report links, not the chat.

A refused payload (Slack's ``400 no_text`` / ``invalid_blocks``, Mattermost's 400, a Teams
400) is a permanent failure at once, never retried until the window ends; 429 and 5xx are
retried.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from schemas.events import CallTaskEvent
from services.notifier.channels import NoRoutes, Parts, SendReceipt
from services.notifier.settings import NotifierSettings
from services.notifier.tool_results import ToolClient, json_request, report_links

FIELDS = ("patient_id", "name", "phone", "reason", "window", "stage", "report_links")
UTC_ZONE = ZoneInfo("UTC")
DEFAULT_FIELDS = "patient_id,reason,window,report_links"


def notice_facts(
    task: CallTaskEvent, fields: tuple[str, ...], *, include_notes: bool, zone: ZoneInfo
) -> list[tuple[str, str]]:
    """(label, value) pairs the notice shows, in a fixed order, limited to ``fields``; times
    in the clinic's zone, named."""
    facts: list[tuple[str, str]] = []
    if "patient_id" in fields:
        facts.append(("Patient", task.patient_id))
    if "name" in fields and task.patient_name:
        facts.append(("Name", task.patient_name))
    if "phone" in fields:
        shared = " (shared number)" if task.phone_shared else ""
        facts.append(("Phone", (task.phone or "unknown") + shared))
    if "reason" in fields:
        facts.append(("Why", f"{task.reason.replace('_', ' ')} ({task.purpose.replace('_', ' ')})"))
    if "window" in fields:
        start, end = task.window_start.astimezone(zone), task.window_end.astimezone(zone)
        facts.append(("Call between", f"{start:%Y-%m-%d %H:%M} - {end:%H:%M} ({zone})"))
    if "stage" in fields and (task.stage_name or task.stage_deadline):
        deadline = f", deadline {task.stage_deadline:%Y-%m-%d}" if task.stage_deadline else ""
        facts.append(("Stage", f"{task.stage_name or '-'}{deadline}"))
    if include_notes and task.doctor_notes:
        facts.append(("Doctor's notes", task.doctor_notes))
    return facts


def _title(task: CallTaskEvent) -> str:
    if task.action == "withdraw":
        return f"Withdrawn: no call needed for patient {task.patient_id}"
    urgent = "Urgent call" if task.purpose == "escalation" else "Call task"
    return f"{urgent}: patient {task.patient_id}"


def _links(task: CallTaskEvent, fields: tuple[str, ...]) -> list[str]:
    return report_links(task) if "report_links" in fields and task.action == "create" else []


def slack_message(
    task: CallTaskEvent, facts: list[tuple[str, str]], links: list[str]
) -> dict[str, Any]:
    """Block Kit, with the top-level ``text`` Slack requires (notifications, screen readers)."""
    title = _title(task)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}}
    ]
    if facts:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{label}*\n{value}"[:2000]}
                    for label, value in facts[:10]
                ],
            }
        )
    if links:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Report the result"},
                        "url": url,
                        "action_id": f"report_{n}",
                    }
                    for n, url in enumerate(links[:5])
                ],
            }
        )
    return {"text": title, "blocks": blocks}


def teams_message(
    task: CallTaskEvent, facts: list[tuple[str, str]], links: list[str]
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": _title(task),
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
            },
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in facts]},
        ],
        "actions": [
            {"type": "Action.OpenUrl", "title": "Report the result", "url": u} for u in links
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def mattermost_message(
    task: CallTaskEvent, facts: list[tuple[str, str]], links: list[str]
) -> dict[str, Any]:
    lines = [f"#### {_title(task)}", *(f"**{k}:** {v}" for k, v in facts)]
    lines += [f"[Report the result]({url})" for url in links]
    return {"text": "\n".join(lines), "username": "followup"}


RENDER = {"slack": slack_message, "teams": teams_message, "mattermost": mattermost_message}


class ChatSink(NoRoutes):
    def __init__(
        self,
        kind: str,
        url: str,
        fields: tuple[str, ...],
        include_notes: bool,
        zone: ZoneInfo = UTC_ZONE,
    ) -> None:
        self.name = kind
        self._zone = zone
        self._render = RENDER[kind]
        self._url = url
        self._fields = fields
        self._include_notes = include_notes
        self._client = ToolClient(timeout=10)

    def message(self, task: CallTaskEvent) -> dict[str, Any]:
        facts = notice_facts(task, self._fields, include_notes=self._include_notes, zone=self._zone)
        return self._render(task, facts, _links(task, self._fields))

    async def deliver(self, task: CallTaskEvent) -> SendReceipt:
        await json_request(self._client.session(), self.name, "POST", self._url, self.message(task))
        return SendReceipt(self.name)

    async def close(self) -> None:
        await self._client.close()


def chat_fields(settings: NotifierSettings) -> tuple[str, ...]:
    return tuple(f.strip() for f in settings.chat_fields.split(",") if f.strip())


def _builder(kind: str) -> Any:
    def build(parts: Parts) -> ChatSink:
        s = parts.settings
        url = getattr(s, f"{kind}_webhook_url")
        zone = ZoneInfo(s.clinic_timezone)
        return ChatSink(kind, url or "", chat_fields(s), s.notes_in_chat, zone)

    return build


def _checker(kind: str) -> Any:
    def check(settings: NotifierSettings) -> str | None:
        unknown = sorted(set(chat_fields(settings)) - set(FIELDS))
        if unknown:
            return f"FOLLOWUP_CHAT_FIELDS: unknown field(s) {unknown}; known: {', '.join(FIELDS)}"
        if not getattr(settings, f"{kind}_webhook_url"):
            return f"the {kind} sink needs FOLLOWUP_{kind.upper()}_WEBHOOK_URL"
        return None

    return check


build_slack, check_slack = _builder("slack"), _checker("slack")
build_teams, check_teams = _builder("teams"), _checker("teams")
build_mattermost, check_mattermost = _builder("mattermost"), _checker("mattermost")
