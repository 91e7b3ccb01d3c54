"""The Telegram channel: the Bot API's ``sendMessage`` and its webhook, in its vocabulary.

Send: ``POST {url}/bot{token}/sendMessage`` with JSON ``{chat_id, text}``; the answer is
``{"ok": true, "result": {"message_id": ...}}`` or ``{"ok": false, "error_code": 403,
"description": "Forbidden: bot was blocked by the user"}`` (the patient's STOP), 400
``chat not found`` (the id is wrong), 429 with ``parameters.retry_after`` (later).

Inbound: Telegram posts each ``Update`` to ``/telegram/webhook`` with the header
``X-Telegram-Bot-Api-Secret-Token`` set to the ``secret_token`` given to ``setWebhook``;
anything else is refused (401) and nothing is recorded. ``message`` is the patient writing;
``my_chat_member`` with the new status ``kicked`` is the patient blocking the bot (STOP).
The webhook's answer may carry one Bot API call (Telegram documents it): STOP, START and
HELP are confirmed that way, in the patient's language.

Telegram gives bots no delivery or read receipts: the ``sendMessage`` answer (the message
is in the patient's chat) is the only receipt, recorded as ``sent`` with its message id.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any, Literal

from aiohttp import web

from common.logs import get_logger
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

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class TelegramBotApi(MessengerApi):
    provider = "telegram"

    def __init__(self, base_url: str, bot_token: str, parts: Parts, timeout: float = 10.0) -> None:
        super().__init__(30.0, parts, timeout)  # Telegram: about 30 messages a second
        self._url = f"{base_url.rstrip('/')}/bot{bot_token}/sendMessage"

    async def deliver(self, message: ChatMessage) -> SendReceipt:
        body = {"chat_id": int(message.to), "text": message.text}
        status, payload = await self.post(self._url, body)
        return _answer(status, payload, message.to)


def _answer(status: int, payload: dict[str, Any], chat_id: str) -> SendReceipt:
    result = payload.get("result")
    if payload.get("ok") is True and isinstance(result, dict) and "message_id" in result:
        # A message id is unique within its chat only.
        return SendReceipt("telegram", f"{chat_id}:{result['message_id']}")
    code = payload.get("error_code", status)
    description = str(payload.get("description", "")).lower()
    if code == 429 or (isinstance(code, int) and code >= 500):
        raise TransientSendError("telegram", f"http_{code}")
    if code == 403:  # "bot was blocked by the user", "user is deactivated"
        if "deactivated" in description:
            raise PermanentSendError("telegram", "account_deleted", "channel_impossible")
        raise PatientLeft("telegram", "blocked")
    if code == 400 and "chat not found" in description:
        raise PermanentSendError("telegram", "no_chat_account", "channel_impossible")
    raise PermanentSendError("telegram", f"provider_{code}")


class TelegramChannel(Messenger):
    name: Literal["telegram"] = "telegram"
    rules = missing_chat_id("telegram")

    def __init__(self, parts: Parts, client: TelegramBotApi | None) -> None:
        super().__init__(parts, client)
        self._secret = parts.settings.telegram_webhook_secret

    def routes(self) -> Sequence[Route]:
        return (Route("POST", "/telegram/webhook", self.webhook),)

    async def webhook(self, request: web.Request) -> web.Response:
        """``POST /telegram/webhook``: one Update; 200 whatever it is, once checked."""
        given = request.headers.get(SECRET_HEADER, "")
        if not self._secret or not hmac.compare_digest(given.encode(), self._secret.encode()):
            log.warning("provider_signature_refused", path=request.path)
            raise web.HTTPUnauthorized(text=f"{SECRET_HEADER} does not match")
        update = read_json(await request.read())
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            raise web.HTTPBadRequest(text="an Update with an integer update_id is required")
        answer: dict[str, Any] = {}

        async def act() -> None:
            message = update.get("message")
            if isinstance(message, dict):
                answer.update(await self._message(message))
            member = update.get("my_chat_member")
            if isinstance(member, dict):
                await self._member(member, update["update_id"])

        await self.once(f"telegram:{update['update_id']}", act)
        if answer:
            return web.json_response(answer)  # the confirmation, as a Bot API call
        return web.Response(status=200)

    async def _message(self, message: dict[str, Any]) -> dict[str, Any]:
        chat = message.get("chat")
        chat_id = chat.get("id") if isinstance(chat, dict) else None
        if not isinstance(chat_id, int) or not isinstance(message.get("message_id"), int):
            raise web.HTTPBadRequest(text="message.chat.id and message.message_id are required")
        text = message.get("text")
        address = str(chat_id)
        confirmation = await self.patient_wrote(
            address, f"{address}:{message['message_id']}", text if isinstance(text, str) else ""
        )
        if confirmation is None:
            return {}
        return {"method": "sendMessage", "chat_id": chat_id, "text": confirmation}

    async def _member(self, member: dict[str, Any], update_id: int) -> None:
        chat = member.get("chat")
        new = member.get("new_chat_member")
        chat_id = chat.get("id") if isinstance(chat, dict) else None
        status = new.get("status") if isinstance(new, dict) else None
        if not isinstance(chat_id, int):
            raise web.HTTPBadRequest(text="my_chat_member.chat.id is required")
        if status == "kicked":  # the patient blocked the bot
            await self.patient_left(str(chat_id), f"telegram:{update_id}")


def build(parts: Parts) -> TelegramChannel:
    s = parts.settings
    client = None
    if s.telegram_url and s.telegram_bot_token:
        client = TelegramBotApi(s.telegram_url, s.telegram_bot_token, parts)
    return TelegramChannel(parts, client)
