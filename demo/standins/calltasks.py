"""The administrators' ticketing tool, standing in as a webhook receiver.

It accepts call tasks only with a valid HMAC-SHA256 signature of the raw body (keyed with
the shared secret), records each in a JSON-lines file and hands it to the front desk.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from common.clock import Clock
from demo.standins import serve

# Header names senders use for an HMAC-SHA256 body signature; the first present is used.
SIGNATURE_HEADERS = (
    "X-Followup-Signature",
    "X-Signature-256",
    "X-Hub-Signature-256",
    "X-Signature",
)
TIMESTAMP_HEADERS = ("X-Followup-Timestamp", "X-Timestamp")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """Accept ``sha256=<hex>`` or bare hex, over the body or ``<timestamp>.<body>``."""
    given = next((headers[h] for h in SIGNATURE_HEADERS if h in headers), None)
    if not given:
        return False
    given = given.strip()
    if given.startswith("sha256="):
        given = given[len("sha256=") :]
    payloads = [body]
    for name in TIMESTAMP_HEADERS:
        if name in headers:
            payloads.append(headers[name].encode() + b"." + body)
    for payload in payloads:
        expected = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, given.lower()):
            return True
    return False


@dataclass(frozen=True)
class ReceivedTask:
    payload: dict[str, Any]
    at: datetime

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


class CallTaskReceiver:
    def __init__(
        self,
        *,
        secret: str,
        clock: Clock,
        capture_file: Path,
        on_task: Callable[[ReceivedTask], Awaitable[None]] | None = None,
    ) -> None:
        self.secret = secret
        self.clock = clock
        self.capture_file = capture_file
        capture_file.parent.mkdir(parents=True, exist_ok=True)
        self.on_task = on_task
        self.tasks: list[ReceivedTask] = []
        self.refused = 0
        self.app = web.Application()
        self.app.router.add_post("/{tail:.*}", self._receive)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/call-tasks"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner, self.port = await serve(self.app, host, port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

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
        task = ReceivedTask(payload=payload, at=self.clock.now())
        self.tasks.append(task)
        with self.capture_file.open("a", encoding="utf-8") as f:
            row = {"received_at": task.at.isoformat(), "task": payload}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        if self.on_task is not None:
            await self.on_task(task)
        return web.json_response({"status": "accepted"}, status=202)
