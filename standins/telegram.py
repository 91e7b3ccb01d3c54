"""A stand-in for the Telegram Bot API, on a real socket (core.telegram.org/bots/api).

- ``POST /bot<token>/sendMessage`` (JSON or form: ``chat_id``, ``text``) answers
  ``{"ok": true, "result": Message}``; a wrong token ``{"ok": false, "error_code": 401,
  "description": "Unauthorized"}``; an empty text 400 "Bad Request: message text is empty";
  a chat that never started the bot 400 "Bad Request: chat not found"; a patient who
  blocked the bot 403 "Forbidden: bot was blocked by the user".
- Updates go to the webhook set with ``setWebhook`` (``webhook_url``) with the header
  ``X-Telegram-Bot-Api-Secret-Token`` = its ``secret_token``; the webhook's answer may be a
  Bot API call (``{"method": "sendMessage", ...}``), which Telegram performs: kept in
  ``answers``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from standins import Served

BOT = {"id": 7000000001, "is_bot": True, "first_name": "Clinic", "username": "clinic_bot"}


def _fail(code: int, description: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error_code": code, "description": description}, status=code
    )


@dataclass
class TelegramStandIn(Served):
    bot_token: str = "123456:ABC-standin"
    secret_token: str = "tg-secret"
    webhook_url: str = ""
    chats: set[int] = field(default_factory=set)  # private chats that started the bot
    blocked: set[int] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)  # Message objects sent
    answers: list[dict[str, Any]] = field(default_factory=list)  # calls in webhook answers
    # The patient's phone (the demo's simulator): handed each message sent, after the API
    # has answered.
    on_message: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    port: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _runner: web.AppRunner | None = None
    _updates: Any = field(default_factory=lambda: itertools.count(100000001))
    _messages: Any = field(default_factory=lambda: itertools.count(1))

    def routes(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._method)
        return app

    async def _method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.bot_token:
            return _fail(401, "Unauthorized")
        if request.match_info["method"] != "sendMessage":
            return _fail(404, "Not Found")
        if request.content_type == "application/json":
            try:
                params = json.loads(await request.read())
            except ValueError:
                return _fail(400, "Bad Request: can't parse JSON")
        else:
            params = dict(await request.post())
        if not isinstance(params, dict):
            return _fail(400, "Bad Request: invalid parameters")
        return self.send_message(params)

    def send_message(self, params: dict[str, Any]) -> web.Response:
        try:
            chat_id = int(params.get("chat_id", ""))
        except ValueError:
            return _fail(400, "Bad Request: chat not found")
        if not str(params.get("text", "")).strip():
            return _fail(400, "Bad Request: message text is empty")
        if chat_id in self.blocked:
            return _fail(403, "Forbidden: bot was blocked by the user")
        if chat_id not in self.chats:
            return _fail(400, "Bad Request: chat not found")
        message = {
            "message_id": next(self._messages),
            "from": BOT,
            "chat": {"id": chat_id, "type": "private"},
            "date": int(datetime.now(UTC).timestamp()),
            "text": str(params["text"]),
        }
        self.sent.append(message)
        if self.on_message is not None:
            task = asyncio.ensure_future(self.on_message(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response({"ok": True, "result": message})

    # --- updates to the bot's webhook -------------------------------------------------

    async def post_update(self, update: dict[str, Any], *, secret: str | None = None) -> int:
        token = self.secret_token if secret is None else secret
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                self.webhook_url,
                json=update,
                headers={"X-Telegram-Bot-Api-Secret-Token": token},
            ) as response,
        ):
            text = await response.text()
            if response.status == 200 and text:
                call = json.loads(text)
                if call.get("method") == "sendMessage":
                    self.answers.append(call)  # Telegram performs it
            return response.status

    async def patient_writes(self, chat_id: int, text: str, *, secret: str | None = None) -> int:
        self.chats.add(chat_id)
        update = {
            "update_id": next(self._updates),
            "message": {
                "message_id": next(self._messages),
                "from": {"id": chat_id, "is_bot": False, "first_name": "Patient"},
                "chat": {"id": chat_id, "type": "private", "first_name": "Patient"},
                "date": int(datetime.now(UTC).timestamp()),
                "text": text,
            },
        }
        return await self.post_update(update, secret=secret)

    async def patient_blocks(self, chat_id: int) -> int:
        """The patient blocks the bot: Telegram sends a ``my_chat_member`` update."""
        self.blocked.add(chat_id)
        update = {
            "update_id": next(self._updates),
            "my_chat_member": {
                "chat": {"id": chat_id, "type": "private"},
                "from": {"id": chat_id, "is_bot": False, "first_name": "Patient"},
                "date": int(datetime.now(UTC).timestamp()),
                "old_chat_member": {"user": BOT, "status": "member"},
                "new_chat_member": {"user": BOT, "status": "kicked", "until_date": 0},
            },
        }
        return await self.post_update(update)
