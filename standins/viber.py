"""A stand-in for the Viber REST bot API on a real socket (developers.viber.com, REST Bot API).

- ``POST /pa/send_message`` with ``X-Viber-Auth-Token`` and JSON ``{receiver, sender:
  {name}, type: "text", text, ...}`` answers ``{"status": 0, "status_message": "ok",
  "message_token": <int64>, "chat_hostname": ...}``; errors keep HTTP 200 and say it in
  ``status``: 2 invalidAuthToken, 3 badData, 5 receiverNotRegistered, 6
  receiverNotSubscribed.
- Callbacks to the bot's webhook (``webhook_url``): ``delivered``, ``seen``, ``failed``,
  ``message``, ``subscribed``, ``unsubscribed``, ``conversation_started``, signed with
  ``X-Viber-Content-Signature`` = hex HMAC-SHA256 of the body with the auth token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from standins import Served


def _status(code: int, message: str) -> web.Response:
    return web.json_response({"status": code, "status_message": message})


def _stamp() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)  # Viber: epoch milliseconds


@dataclass
class ViberStandIn(Served):
    auth_token: str = "445da6az1s345z78-dazcczb2542zv51a-e0vc5fva17480im9"
    webhook_url: str = ""
    subscribed: set[str] = field(default_factory=set)  # users who subscribed to the bot
    unsubscribed: set[str] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)  # bodies, with message_token
    # The patient's phone (the demo's simulator): handed each message sent, after the API
    # has answered.
    on_message: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    port: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _runner: web.AppRunner | None = None
    _tokens: Any = field(default_factory=lambda: itertools.count(5741311803571721087))

    def routes(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/pa/send_message", self._send_message)
        return app

    async def _send_message(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Viber-Auth-Token") != self.auth_token:
            return _status(2, "invalidAuthToken")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _status(3, "badData")
        if not isinstance(body, dict) or body.get("type") != "text" or not body.get("text"):
            return _status(3, "badData")
        if not (body.get("sender") or {}).get("name"):
            return _status(4, "missingData")
        receiver = body.get("receiver")
        if receiver in self.unsubscribed:
            return _status(6, "receiverNotSubscribed")
        if receiver not in self.subscribed:
            return _status(5, "receiverNotRegistered")
        token = next(self._tokens)
        self.sent.append(body | {"message_token": token})
        if self.on_message is not None:
            task = asyncio.ensure_future(self.on_message(self.sent[-1]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(
            {
                "status": 0,
                "status_message": "ok",
                "message_token": token,
                "chat_hostname": "SN-CHAT-01_",
                "billing_status": 1,
            }
        )

    # --- callbacks to the bot's webhook ------------------------------------------------

    async def post_event(self, event: dict[str, Any], *, valid_signature: bool = True) -> int:
        body = json.dumps(event).encode()
        key = self.auth_token if valid_signature else "not-the-auth-token"
        signature = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                self.webhook_url,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Viber-Content-Signature": signature,
                },
            ) as response,
        ):
            await response.read()
            return response.status

    async def receipt(
        self, sent: dict[str, Any], event: str = "delivered", *, valid_signature: bool = True
    ) -> int:
        """``delivered``, ``seen`` or ``failed`` of one sent message."""
        payload: dict[str, Any] = {
            "event": event,
            "timestamp": _stamp(),
            "chat_hostname": "SN-CHAT-01_",
            "message_token": sent["message_token"],
            "user_id": sent["receiver"],
        }
        if event == "failed":
            payload["desc"] = "failure description"
        return await self.post_event(payload, valid_signature=valid_signature)

    async def patient_writes(self, user_id: str, text: str, *, valid_signature: bool = True) -> int:
        self.subscribed.add(user_id)
        payload = {
            "event": "message",
            "timestamp": _stamp(),
            "chat_hostname": "SN-CHAT-01_",
            "message_token": next(self._tokens),
            "sender": {"id": user_id, "name": "Patient", "language": "lt", "api_version": 10},
            "message": {"type": "text", "text": text},
            "silent": False,
        }
        return await self.post_event(payload, valid_signature=valid_signature)

    async def patient_unsubscribes(self, user_id: str) -> int:
        self.subscribed.discard(user_id)
        self.unsubscribed.add(user_id)
        payload = {"event": "unsubscribed", "timestamp": _stamp(), "user_id": user_id}
        return await self.post_event(payload)
