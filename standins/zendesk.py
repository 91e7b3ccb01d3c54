"""Zendesk Support standing in: the tickets API the notifier's zendesk sink uses, and the
signed webhook a trigger sends when an agent solves a ticket.

Speaks Zendesk's documented wire format: basic auth ``<email>/token:<api token>`` (401
``{"error": "Couldn't authenticate you"}``), ``POST /api/v2/tickets.json`` (201
``{"ticket": {...}}``; 422 ``{"error": "RecordInvalid", "description": "Record validation
errors", "details": {field: [{"description": ...}]}}`` without a comment body, or for a
``task`` without ``due_at``; the same ``Idempotency-Key`` with the same body answers the same
ticket, with another body 400 ``IdempotentRequestError``),
``GET /api/v2/tickets.json?external_id=``, ``PUT /api/v2/tickets/{id}.json`` (422 on a
closed ticket). ``solve()`` plays an agent and
posts the trigger's webhook with ``X-Zendesk-Webhook-Signature`` (base64 HMAC-SHA256 over
timestamp + body) and ``X-Zendesk-Webhook-Signature-Timestamp``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import aiohttp
from aiohttp import web

from common.clock import Clock, SystemClock
from standins import Served


def _invalid(details: dict[str, str]) -> web.Response:
    return web.json_response(
        {
            "error": "RecordInvalid",
            "description": "Record validation errors",
            "details": {k: [{"description": v}] for k, v in details.items()},
        },
        status=422,
    )


@dataclass
class ZendeskStandIn(Served):
    email: str
    api_token: str
    webhook_url: str | None = None
    signing_secret: str = ""
    clock: Clock = field(default_factory=SystemClock)  # the webhook's timestamp
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    refused: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _idempotent: dict[str, tuple[str, int]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    def routes(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_post("/api/v2/tickets.json", self._create)
        app.router.add_get("/api/v2/tickets.json", self._list)
        app.router.add_put("/api/v2/tickets/{id}.json", self._update)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        expected = base64.b64encode(f"{self.email}/token:{self.api_token}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response({"error": "Couldn't authenticate you"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def _create(self, request: web.Request) -> web.Response:
        raw = await request.read()
        key = request.headers.get("Idempotency-Key")
        if key and key in self._idempotent:
            body_hash, ticket_id = self._idempotent[key]
            if body_hash != hashlib.sha256(raw).hexdigest():
                return web.json_response({"error": "IdempotentRequestError"}, status=400)
            return web.json_response({"ticket": self.tickets[ticket_id]}, status=201)
        try:
            ticket = json.loads(raw)["ticket"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "InvalidEndpoint"}, status=400)
        problems: dict[str, str] = {}
        if not str((ticket.get("comment") or {}).get("body") or "").strip():
            problems["base"] = "Description: cannot be blank"
        if ticket.get("type") == "task" and not ticket.get("due_at"):
            problems["due_at"] = "Due date: is required for tasks"
        if ticket.get("priority") not in (None, "low", "normal", "high", "urgent"):
            problems["priority"] = "Priority: is invalid"
        if problems:
            self.refused.append(ticket)
            return _invalid(problems)
        ticket_id = len(self.tickets) + 1
        stored = {**ticket, "id": ticket_id, "status": "open", "comments": [ticket["comment"]]}
        self.tickets[ticket_id] = stored
        if key:
            self._idempotent[key] = (hashlib.sha256(raw).hexdigest(), ticket_id)
        return web.json_response({"ticket": stored}, status=201)

    async def _list(self, request: web.Request) -> web.Response:
        wanted = request.query.get("external_id")
        found = [
            t for t in self.tickets.values() if wanted is None or t.get("external_id") == wanted
        ]
        return web.json_response({"tickets": found, "count": len(found)})

    async def _update(self, request: web.Request) -> web.Response:
        ticket = self.tickets.get(int(request.match_info["id"]))
        if ticket is None:
            return web.json_response({"error": "RecordNotFound"}, status=404)
        if ticket["status"] == "closed":
            return _invalid({"status": "Status: closed prevents ticket update"})
        change = (await request.json())["ticket"]
        if "status" in change:
            ticket["status"] = change["status"]
        ticket["tags"] = [*ticket.get("tags", []), *change.get("additional_tags", [])]
        if "comment" in change:
            ticket["comments"].append(change["comment"])
        return web.json_response({"ticket": ticket})

    async def solve(self, ticket_id: int, result: str | None, assignee_id: int = 3001) -> int:
        """An agent picks the result and solves the ticket; the trigger's webhook follows.
        Returns the receiver's HTTP status."""
        ticket = self.tickets[ticket_id]
        if result:
            ticket["tags"] = [*ticket["tags"], f"followup_result_{result}"]
        ticket["status"] = "solved"
        body = {
            "ticket_id": str(ticket_id),
            "external_id": ticket.get("external_id", ""),
            "tags": " ".join(ticket["tags"]),  # {{ticket.tags}} renders space-separated
            "assignee_id": str(assignee_id),
            "updated_at": self.clock.now().isoformat(),
        }
        return await self.post_webhook(json.dumps(body).encode())

    async def post_webhook(
        self, body: bytes, secret: str | None = None, timestamp: str | None = None
    ) -> int:
        assert self.webhook_url is not None
        stamp = timestamp or self.clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        key = (self.signing_secret if secret is None else secret).encode()
        signature = base64.b64encode(hmac.new(key, stamp.encode() + body, hashlib.sha256).digest())
        headers = {
            "Content-Type": "application/json",
            "X-Zendesk-Webhook-Signature": signature.decode(),
            "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.webhook_url, data=body, headers=headers) as reply,
        ):
            return reply.status
