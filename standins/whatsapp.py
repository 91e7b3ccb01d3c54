"""A stand-in for the WhatsApp Business Cloud API (Meta Graph API), on a real socket.

What it speaks, as Meta documents it (developers.facebook.com/docs/whatsapp/cloud-api):

- ``POST /{version}/{phone-number-id}/messages`` with ``Authorization: Bearer <token>``
  and a JSON message object (``messaging_product: "whatsapp"``, ``to``, ``type`` text or
  template). Answers ``{"messaging_product", "contacts": [{"input", "wa_id"}],
  "messages": [{"id": "wamid..."}]}``; a bad token 401 with error code 190; a template not
  approved (name and language) 404 with 132001; a malformed object 400 with 100.
- The 24-hour customer-service window is the platform's own rule: a free-form message to
  someone who has not written within 24 hours is accepted and then fails, as on the real
  API, with a ``failed`` status carrying error 131047 (Re-engagement message).
- Webhooks to the business (``webhook_url``): the GET verification with ``hub.mode``,
  ``hub.verify_token`` and ``hub.challenge``; POSTs of ``whatsapp_business_account``
  payloads (``entry[].changes[].value`` with ``messages`` or ``statuses``) signed with
  ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body with the app secret>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from standins import Served

WINDOW = timedelta(hours=24)


def _error(status: int, code: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "OAuthException", "code": code}}
    return web.json_response(body | {"fbtrace_id": "AbCdEf"}, status=status)


@dataclass
class WhatsAppStandIn(Served):
    phone_number_id: str = "1234567890"
    access_token: str = "wa-token"
    app_secret: str = "wa-app-secret"
    webhook_url: str = ""  # the business's webhook (the notifier's /whatsapp/webhook)
    display_phone_number: str = "37052000000"
    # (name, language) of templates Meta approved for this business.
    approved_templates: set[tuple[str, str]] = field(default_factory=set)
    # When the wall clock of the window is asked for: a test's or the demo's clock.
    now: Any = None
    messages: list[dict[str, Any]] = field(default_factory=list)  # accepted, with "id"
    last_inbound: dict[str, datetime] = field(default_factory=dict)  # wa_id -> when
    webhooks: list[tuple[dict[str, Any], int]] = field(default_factory=list)  # sent, status
    # The patient's phone (the demo's simulator): handed each accepted message, after the
    # API has answered, as the platform hands it on.
    on_message: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    port: int = 0
    _runner: web.AppRunner | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def routes(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{version}/{number_id}/messages", self._messages)
        return app

    def _now(self) -> datetime:
        return self.now() if self.now is not None else datetime.now(UTC)

    async def _messages(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            return _error(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if request.match_info["number_id"] != self.phone_number_id:
            return _error(400, 100, "Unsupported post request. Object does not exist")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, 100, "Invalid parameter")
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return _error(400, 100, "The parameter messaging_product is required.")
        to = str(body.get("to", ""))
        if not to.isdigit():
            return _error(400, 100, "Invalid parameter: to")
        kind = body.get("type")
        if kind == "template":
            template = body.get("template") or {}
            key = (template.get("name"), (template.get("language") or {}).get("code"))
            if key not in self.approved_templates:
                return _error(404, 132001, "Template name does not exist in the translation")
        elif kind == "text":
            if not (body.get("text") or {}).get("body"):
                return _error(400, 100, "The parameter text['body'] is required.")
        else:
            return _error(400, 100, "Invalid parameter: type")
        wamid = f"wamid.HBgL{next(self._ids):020d}"
        self.messages.append(body | {"id": wamid})
        if self.on_message is not None:
            task = asyncio.ensure_future(self.on_message(self.messages[-1]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid}],
            }
        )

    def in_window(self, wa_id: str) -> bool:
        last = self.last_inbound.get(wa_id)
        return last is not None and self._now() - last < WINDOW

    # --- webhooks to the business ----------------------------------------------------

    def _payload(self, value: dict[str, Any]) -> dict[str, Any]:
        metadata = {
            "display_phone_number": self.display_phone_number,
            "phone_number_id": self.phone_number_id,
        }
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "WHATSAPP_BUSINESS_ACCOUNT_ID",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {"messaging_product": "whatsapp", "metadata": metadata}
                            | value,
                        }
                    ],
                }
            ],
        }

    async def post_webhook(self, payload: dict[str, Any], *, valid_signature: bool = True) -> int:
        body = json.dumps(payload).encode()
        secret = self.app_secret if valid_signature else "not-the-app-secret"
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                self.webhook_url,
                data=body,
                headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
            ) as response,
        ):
            await response.read()
            self.webhooks.append((payload, response.status))
            return response.status

    async def verify_webhook(self, verify_token: str, challenge: str) -> tuple[int, str]:
        """Meta's subscription check of the webhook URL: (status, body)."""
        params = {"hub.mode": "subscribe", "hub.verify_token": verify_token}
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.webhook_url, params=params | {"hub.challenge": challenge}) as r,
        ):
            return r.status, await r.text()

    async def patient_writes(
        self, wa_id: str, text: str, *, name: str = "Patient", valid_signature: bool = True
    ) -> int:
        """The patient sends a text to the business; it opens their 24-hour window."""
        message_id = f"wamid.IN{next(self._ids):020d}"
        when = self._now()
        value = {
            "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
            "messages": [
                {
                    "from": wa_id,
                    "id": message_id,
                    "timestamp": str(int(when.timestamp())),
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        }
        status = await self.post_webhook(self._payload(value), valid_signature=valid_signature)
        if valid_signature:
            self.last_inbound[wa_id] = when
        return status

    async def send_status(
        self, message: dict[str, Any], status: str, *, valid_signature: bool = True
    ) -> int:
        """A status of an accepted message: sent, delivered, read, or failed. A free-form
        text outside the recipient's window fails with 131047, as the platform does."""
        entry: dict[str, Any] = {
            "id": message["id"],
            "status": status,
            "timestamp": str(int(self._now().timestamp())),
            "recipient_id": message["to"],
        }
        if status == "failed":
            entry["errors"] = [{"code": 131047, "title": "Re-engagement message"}]
        value = {"statuses": [entry]}
        return await self.post_webhook(self._payload(value), valid_signature=valid_signature)

    async def deliver(self, message: dict[str, Any]) -> str:
        """What the platform does with an accepted message: delivered, or failed when it is
        free-form text outside the window. Returns the status it reported."""
        outside = message["type"] == "text" and not self.in_window(message["to"])
        status = "failed" if outside else "delivered"
        await self.send_status(message, status)
        return status
