"""Jira Cloud standing in: the part of its REST API v3 the notifier's jira sink uses, and the
admin webhook Jira sends when an issue changes.

Speaks Jira's documented wire format: basic auth (email + API token, 401 otherwise),
``POST /rest/api/3/issue`` (201 ``{"id", "key", "self"}``; 400 ``{"errorMessages": [],
"errors": {field: message}}`` for a missing project/issue type/summary, a description that
is not an Atlassian Document, a label with a space), ``GET /rest/api/3/search/jql`` (only
``labels = "<label>"`` clauses are understood, ANDed), ``GET`` and ``POST
/rest/api/3/issue/{key}/transitions`` (204; 400 for a transition not offered). ``resolve()``
plays an agent resolving the issue and posts ``jira:issue_updated`` signed with
``X-Hub-Signature: sha256=<hex HMAC-SHA256>`` to the registered webhook.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from standins import Served

TRANSITIONS = {
    "To Do": [
        ("21", "Start progress", "In Progress"), ("31", "Done", "Done"),
        ("41", "Cancel", "Cancelled"),
    ],
    "In Progress": [("31", "Done", "Done"), ("41", "Cancel", "Cancelled")],
    "Done": [("11", "Reopen", "To Do")],
    "Cancelled": [("11", "Reopen", "To Do")],
}  # fmt: skip


def _is_adf(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and doc.get("type") == "doc"
        and doc.get("version") == 1
        and isinstance(doc.get("content"), list)
    )


@dataclass
class JiraStandIn(Served):
    email: str
    api_token: str
    projects: tuple[str, ...] = ("DESK",)
    webhook_url: str | None = None
    webhook_secret: str = ""
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    def routes(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_post("/rest/api/3/issue", self._create)
        app.router.add_get("/rest/api/3/search/jql", self._search)
        app.router.add_get("/rest/api/3/issue/{key}", self._get)
        app.router.add_get("/rest/api/3/issue/{key}/transitions", self._transitions)
        app.router.add_post("/rest/api/3/issue/{key}/transitions", self._transition)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        expected = base64.b64encode(f"{self.email}:{self.api_token}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response(
                {"errorMessages": ["You are not authenticated."], "errors": {}}, status=401
            )
        response: web.StreamResponse = await handler(request)
        return response

    def _error(self, body: Any, errors: dict[str, str]) -> web.Response:
        self.refused.append({"body": body, "errors": errors})
        return web.json_response({"errorMessages": [], "errors": errors}, status=400)

    async def _create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return self._error(None, {"body": "Unexpected character: not JSON"})
        fields = body.get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return self._error(body, {"fields": "Field 'fields' is required."})
        errors: dict[str, str] = {}
        if (fields.get("project") or {}).get("key") not in self.projects:
            errors["project"] = "valid project is required"
        if not (fields.get("issuetype") or {}).get("name"):
            errors["issuetype"] = "Specify an issue type"
        summary = fields.get("summary")
        if not isinstance(summary, str) or not summary.strip() or len(summary) > 255:
            errors["summary"] = "You must specify a summary of the issue."
        if "description" in fields and not _is_adf(fields["description"]):
            errors["description"] = "Operation value must be an Atlassian Document (see ADF)."
        labels = fields.get("labels") or []
        if any(not isinstance(label, str) or " " in label for label in labels):
            errors["labels"] = "The label must not contain spaces."
        if "duedate" in fields and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(fields["duedate"])):
            errors["duedate"] = "Error parsing date string."
        if errors:
            return self._error(body, errors)
        number = len(self.issues) + 1
        key = f"{fields['project']['key']}-{number}"
        self.issues[key] = {
            "id": str(10000 + number),
            "key": key,
            "fields": {**fields, "status": {"name": "To Do"}, "resolution": None},
        }
        url = f"{self.base_url}/rest/api/3/issue/{10000 + number}"
        return web.json_response({"id": str(10000 + number), "key": key, "self": url}, status=201)

    async def _search(self, request: web.Request) -> web.Response:
        jql = request.query.get("jql", "")
        wanted = re.findall(r'labels\s*=\s*"([^"]+)"', jql)
        found = [
            issue
            for issue in self.issues.values()
            if all(label in issue["fields"].get("labels", []) for label in wanted)
        ]
        return web.json_response({"issues": found, "isLast": True})

    async def _get(self, request: web.Request) -> web.Response:
        issue = self.issues.get(request.match_info["key"])
        if issue is None:
            return web.json_response({"errorMessages": ["Issue does not exist"]}, status=404)
        return web.json_response(issue)

    def _offered(self, issue: dict[str, Any]) -> list[tuple[str, str, str]]:
        return TRANSITIONS[issue["fields"]["status"]["name"]]

    async def _transitions(self, request: web.Request) -> web.Response:
        issue = self.issues.get(request.match_info["key"])
        if issue is None:
            return web.json_response({"errorMessages": ["Issue does not exist"]}, status=404)
        offered = [
            {"id": tid, "name": name, "to": {"name": to}} for tid, name, to in self._offered(issue)
        ]
        return web.json_response({"transitions": offered})

    async def _transition(self, request: web.Request) -> web.Response:
        issue = self.issues.get(request.match_info["key"])
        if issue is None:
            return web.json_response({"errorMessages": ["Issue does not exist"]}, status=404)
        body = await request.json()
        wanted = str(((body or {}).get("transition") or {}).get("id"))
        move = next((t for t in self._offered(issue) if t[0] == wanted), None)
        if move is None:
            return self._error(body, {"transition": "Transition id is not valid for this issue."})
        issue["fields"]["status"] = {"name": move[2]}
        done = move[2] in ("Done", "Cancelled")
        issue["fields"]["resolution"] = (
            {"name": "Won't Do" if move[1] == "Cancel" else "Done"} if done else None
        )
        return web.Response(status=204)

    async def resolve(self, key: str, result: str | None, account_id: str = "acc-desk-1") -> int:
        """An agent resolves the issue (Done), adding the result label; the webhook follows.
        Returns the webhook receiver's HTTP status."""
        issue = self.issues[key]
        if result:
            issue["fields"]["labels"] = [*issue["fields"]["labels"], f"followup-result-{result}"]
        issue["fields"]["status"] = {"name": "Done"}
        issue["fields"]["resolution"] = {"name": "Done"}
        issue["fields"]["resolutiondate"] = "2026-03-02T12:00:00.000+0200"
        event = {
            "timestamp": 1772445600000,
            "webhookEvent": "jira:issue_updated",
            "issue_event_type_name": "issue_generic",
            "user": {"accountId": account_id},
            "issue": issue,
            "changelog": {"items": [{"field": "resolution", "toString": "Done"}]},
        }
        return await self.post_webhook(json.dumps(event).encode())

    async def post_webhook(self, body: bytes, secret: str | None = None) -> int:
        assert self.webhook_url is not None
        key = (self.webhook_secret if secret is None else secret).encode()
        signature = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-Hub-Signature": signature}
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.webhook_url, data=body, headers=headers) as reply,
        ):
            return reply.status
