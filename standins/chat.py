"""Chat services' incoming webhooks standing in: Slack, Microsoft Teams (Workflows webhook)
and Mattermost, each refusing what the real one refuses.

- Slack ``POST /slack/services/<path>``: invalid JSON 400 ``invalid_payload``; no top-level
  ``text`` 400 ``no_text`` (what a Block-Kit-only payload gets today); a block without a
  known ``type``, a header over 150 characters, a section with more than 10 fields, a button
  without text or url: 400 ``invalid_blocks``; otherwise 200 ``ok`` (text/plain).
- Teams ``POST /teams/workflows/<id>``: invalid JSON 400; no ``attachments`` with an
  ``application/vnd.microsoft.card.adaptive`` ``content`` of ``type: AdaptiveCard`` 400;
  otherwise 202 (the flow runs later).
- Mattermost ``POST /mattermost/hooks/<key>``: invalid JSON 400
  ``web.incoming_webhook.parse.app_error``; no ``text`` and no ``attachments`` 400
  ``web.incoming_webhook.text.app_error``; otherwise 200 ``ok``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from standins import Served

SLACK_BLOCKS = {"header", "section", "actions", "context", "divider", "image", "rich_text"}


def _slack_blocks_ok(blocks: Any) -> bool:
    if blocks is None:
        return True
    if not isinstance(blocks, list) or len(blocks) > 50:
        return False
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") not in SLACK_BLOCKS:
            return False
        if block["type"] == "header" and len(str((block.get("text") or {}).get("text", ""))) > 150:
            return False
        if block["type"] == "section" and len(block.get("fields") or []) > 10:
            return False
        for element in block.get("elements") or []:
            if element.get("type") == "button" and not (element.get("text") and element.get("url")):
                return False
    return True


@dataclass
class ChatStandIn(Served):
    received: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"slack": [], "teams": [], "mattermost": []}
    )
    refused: list[tuple[str, int, str]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def slack_url(self) -> str:
        return f"{self.base_url}/slack/services/T000/B000/XXXX"

    @property
    def teams_url(self) -> str:
        return f"{self.base_url}/teams/workflows/flow-1"

    @property
    def mattermost_url(self) -> str:
        return f"{self.base_url}/mattermost/hooks/key-1"

    def routes(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/slack/services/{path:.+}", self._slack)
        app.router.add_post("/teams/workflows/{id}", self._teams)
        app.router.add_post("/mattermost/hooks/{key}", self._mattermost)
        return app

    def _refuse(
        self, service: str, status: int, text: str, json_body: bool = False
    ) -> web.Response:
        self.refused.append((service, status, text))
        if json_body:
            return web.json_response({"id": text, "status_code": status}, status=status)
        return web.Response(status=status, text=text)

    @staticmethod
    async def _json(request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except ValueError:
            return ValueError

    async def _slack(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if body is ValueError or not isinstance(body, dict):
            return self._refuse("slack", 400, "invalid_payload")
        if not isinstance(body.get("text"), str) or not body["text"].strip():
            return self._refuse("slack", 400, "no_text")
        if not _slack_blocks_ok(body.get("blocks")):
            return self._refuse("slack", 400, "invalid_blocks")
        self.received["slack"].append(body)
        return web.Response(text="ok")

    async def _teams(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if body is ValueError or not isinstance(body, dict):
            return self._refuse("teams", 400, "Invalid JSON")
        cards = [
            a.get("content")
            for a in body.get("attachments") or []
            if isinstance(a, dict)
            and a.get("contentType") == "application/vnd.microsoft.card.adaptive"
        ]
        if not cards or not all(
            isinstance(c, dict) and c.get("type") == "AdaptiveCard" for c in cards
        ):
            return self._refuse(
                "teams", 400, "Bad payload: an Adaptive Card attachment is required"
            )
        self.received["teams"].append(body)
        return web.Response(status=202)

    async def _mattermost(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if body is ValueError or not isinstance(body, dict):
            return self._refuse("mattermost", 400, "web.incoming_webhook.parse.app_error", True)
        if not body.get("text") and not body.get("attachments"):
            return self._refuse("mattermost", 400, "web.incoming_webhook.text.app_error", True)
        self.received["mattermost"].append(body)
        return web.Response(text="ok")
