"""The Viber channel: the REST bot API's ``send_message`` and its callbacks, in its words.

Send: ``POST {url}/pa/send_message`` with the header ``X-Viber-Auth-Token`` and JSON
``{receiver, min_api_version, sender: {name}, tracking_data, type: "text", text}``; the
answer is ``{"status": 0, "status_message": "ok", "message_token": ...}`` or a non-zero
``status``: 5 receiverNotRegistered (no Viber on that id), 6 receiverNotSubscribed (the
patient unsubscribed: their STOP), 12 tooManyRequests (later); the others are ours.

Callbacks: Viber posts events to ``/viber/webhook`` signed with ``X-Viber-Content-Signature``
= hex HMAC-SHA256 of the raw body with the bot's auth token; anything else is refused (403)
and nothing is recorded. ``delivered`` and ``seen`` are receipts (``delivered``, ``read``),
``failed`` a failure, ``message`` the patient writing, ``unsubscribed`` their STOP;
``subscribed``, ``conversation_started`` and ``webhook`` (set_webhook's check) are
acknowledged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any, Literal

from aiohttp import web

from common.logs import get_logger
from schemas.events import OutcomeKind
from services.notifier.channels import (
    Parts,
    PermanentSendError,
    Route,
    SendReceipt,
    TransientSendError,
)
from services.notifier.messenger import (
    ChatMessage,
    Messenger,
    MessengerApi,
    PatientLeft,
    missing_chat_id,
    read_json,
)

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Viber-Content-Signature"
RECEIPTS: dict[str, OutcomeKind] = {"delivered": "delivered", "seen": "read", "failed": "failed"}


def viber_signature(auth_token: str, body: bytes) -> str:
    return hmac.new(auth_token.encode(), body, hashlib.sha256).hexdigest()


class ViberBotApi(MessengerApi):
    provider = "viber"

    def __init__(self, base_url: str, auth_token: str, sender_name: str, parts: Parts) -> None:
        super().__init__(20.0, parts)
        self._url = f"{base_url.rstrip('/')}/pa/send_message"
        self._headers = {"X-Viber-Auth-Token": auth_token}
        self._sender = sender_name[:28]  # Viber's limit on the sender's name

    async def deliver(self, message: ChatMessage) -> SendReceipt:
        body = {
            "receiver": message.to,
            "min_api_version": 1,
            "sender": {"name": self._sender},
            "type": "text",
            "text": message.text,
        }
        http_status, payload = await self.post(self._url, body, self._headers)
        if http_status == 429 or http_status >= 500:
            raise TransientSendError(self.provider, f"http_{http_status}")
        return _answer(payload)


def _answer(payload: dict[str, Any]) -> SendReceipt:
    status = payload.get("status")
    if status == 0 and payload.get("message_token") is not None:
        return SendReceipt("viber", str(payload["message_token"]))
    if status == 6:
        raise PatientLeft("viber", "receiverNotSubscribed")
    if status == 5:
        raise PermanentSendError("viber", "no_chat_account", "channel_impossible")
    if status == 12:
        raise TransientSendError("viber", "tooManyRequests")
    raise PermanentSendError("viber", f"provider_{status}")


class ViberChannel(Messenger):
    name: Literal["viber"] = "viber"
    rules = missing_chat_id("viber")

    def __init__(self, parts: Parts, client: ViberBotApi | None) -> None:
        super().__init__(parts, client)
        self._token = parts.settings.viber_auth_token

    def routes(self) -> Sequence[Route]:
        return (Route("POST", "/viber/webhook", self.webhook),)

    async def webhook(self, request: web.Request) -> web.Response:
        """``POST /viber/webhook``: one callback event; 200 once checked and acted on."""
        body = await request.read()
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not self._token or not hmac.compare_digest(viber_signature(self._token, body), given):
            log.warning("provider_signature_refused", path=request.path)
            raise web.HTTPForbidden(text=f"invalid {SIGNATURE_HEADER}")
        event = read_json(body)
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            raise web.HTTPBadRequest(text="a callback with an event is required")
        kind = event["event"]
        if kind in RECEIPTS:
            await self._receipt(event, RECEIPTS[kind])
        elif kind == "message":
            await self._message(event)
        elif kind == "unsubscribed":
            user = event.get("user_id")
            if not isinstance(user, str) or not user:
                raise web.HTTPBadRequest(text="unsubscribed needs a user_id")
            stamp = event.get("timestamp")
            key = f"viber:unsubscribed:{user}:{stamp}"
            await self.once(key, lambda: self.patient_left(user, key))
        return web.Response(status=200)

    async def _receipt(self, event: dict[str, Any], outcome: OutcomeKind) -> None:
        token = event.get("message_token")
        if not isinstance(token, int):
            raise web.HTTPBadRequest(text=f"{event['event']} needs an integer message_token")
        detail = "provider_failed" if outcome == "failed" else None

        async def act() -> None:
            # A receipt of a message not ours (a confirmation we sent back) is no outcome.
            await self.receipt(str(token), outcome, detail)

        await self.once(f"viber:{event['event']}:{token}", act)

    async def _message(self, event: dict[str, Any]) -> None:
        sender = event.get("sender")
        user = sender.get("id") if isinstance(sender, dict) else None
        token = event.get("message_token")
        message = event.get("message")
        if not isinstance(user, str) or not user or not isinstance(token, int):
            raise web.HTTPBadRequest(text="message needs sender.id and message_token")
        text = message.get("text") if isinstance(message, dict) else None
        answer: list[str] = []

        async def act() -> None:
            said = await self.patient_wrote(user, str(token), text if isinstance(text, str) else "")
            if said is not None:
                answer.append(said)

        await self.once(f"viber:message:{token}", act)
        for said in answer:
            await self.answer(user, said)


def build(parts: Parts) -> ViberChannel:
    s = parts.settings
    client = None
    if s.viber_url and s.viber_auth_token:
        client = ViberBotApi(s.viber_url, s.viber_auth_token, s.viber_sender_name, parts)
    return ViberChannel(parts, client)
