"""The administrators' ticketing tool, standing in as a webhook receiver of call tasks.

It accepts a call task only with a valid Standard Webhooks signature (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``), checked with the ``standardwebhooks``
library as a real receiver following docs/call-tasks.md does (key: the shared secret's
UTF-8 bytes), so the stand-in refuses exactly what such a receiver refuses. It records each task
(with the shared clock's time, optionally in a JSON-lines file), can answer a created task
with an administrator's report, and hands each task to a callback (the demo's front desk).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from common.clock import Clock, SystemClock
from standins import serve


def verify(secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """A Standard Webhooks signature of ``body`` under ``secret`` (its UTF-8 bytes), no
    older or newer than the library's five minutes."""
    try:
        Webhook(secret.encode()).verify(body, dict(headers), json_parse=False)
    except (WebhookVerificationError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class ReceivedTask:
    payload: dict[str, Any]
    at: datetime
    path: str = ""  # where it was posted (a tool's queue: tasks, escalations)

    @property
    def task(self) -> dict[str, Any]:
        """The CallTaskEvent: the notifier posts {"task": ..., "fhir": ...}."""
        inner = self.payload.get("task", self.payload)
        return inner if isinstance(inner, dict) else {}

    @property
    def action(self) -> str:
        return str(self.task.get("action", "create"))

    @property
    def purpose(self) -> str:
        return str(self.task.get("purpose", "follow_up"))


@dataclass
class CallTaskReceiver:
    secret: str
    clock: Clock = field(default_factory=SystemClock)
    capture_file: Path | None = None
    on_task: Callable[[ReceivedTask], Awaitable[None]] | None = None
    # task id -> the JSON the tool answers a created task with (an administrator's report).
    replies: dict[str, Any] = field(default_factory=dict)
    captured: list[ReceivedTask] = field(default_factory=list)
    refused: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/call-tasks"

    @property
    def received(self) -> list[dict[str, Any]]:
        """Every accepted body, in order of arrival."""
        return [t.payload for t in self.captured]

    def tasks(self, task_id: str) -> list[dict[str, Any]]:
        return [t.payload for t in self.captured if t.task.get("task_id") == task_id]

    async def start(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        if self.capture_file is not None:
            self.capture_file.parent.mkdir(parents=True, exist_ok=True)
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._receive)
        self._runner, self.port = await serve(app, host, self.port if port is None else port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(self.secret, body, request.headers):
            self.refused += 1
            return web.json_response({"error": "bad signature"}, status=401)
        try:
            payload = json.loads(body)
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(payload, dict):
            return web.json_response({"error": "body is not a JSON object"}, status=400)
        task = ReceivedTask(payload=payload, at=self.clock.now(), path=request.path)
        self.captured.append(task)
        if self.capture_file is not None:
            with self.capture_file.open("a", encoding="utf-8") as f:
                row = {"received_at": task.at.isoformat(), "task": payload}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        if self.on_task is not None:
            await self.on_task(task)
        reply = self.replies.get(str(task.task.get("task_id")))
        if task.action == "create" and reply is not None:
            return web.json_response(reply)
        return web.json_response({"status": "accepted"}, status=202)
