"""The WhatsApp channel: the WhatsApp Business Cloud API (Meta Graph API), in its words.

Send: ``POST {url}/{phone-number-id}/messages`` with ``Authorization: Bearer <token>`` and
JSON ``{messaging_product: "whatsapp", to, type, ...}``. WhatsApp's rule: a business may
write freely only inside the 24-hour customer-service window that each message from the
patient opens; outside it only a template Meta approved beforehand (``type: "template"``,
its name, language and body parameters). The channel keeps when the patient last wrote
and picks text or template by it; the template names nobody and no visit (its parameters
are the clinic's name and phone). The answer is ``{"messages": [{"id": "wamid..."}]}`` or
``{"error": {"code": ...}}``: 131047 (outside the window), 131026 (not on WhatsApp),
130429/131056 (throttled, later).

Webhook ``/whatsapp/webhook``: ``GET`` is Meta's verification (``hub.mode=subscribe``,
``hub.verify_token``, echo ``hub.challenge``); ``POST`` carries ``entry[].changes[].value``
with ``messages`` (the patient writing) and ``statuses`` (sent, delivered, read, failed),
signed with ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body with the app
secret>``; anything else is refused (403) and nothing is recorded.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

from aiohttp import web

from common.logs import get_logger
from schemas.events import NotificationCommand, OutcomeKind
from schemas.vocabulary import NUMBER_WRONG
from services.notifier.channels import (
    ChannelRules,
    Parts,
    PermanentSendError,
    Route,
    SendReceipt,
    TransientSendError,
)
from services.notifier.contacts import Contact, normalise_phone
from services.notifier.messenger import (
    ChatMessage,
    ChatTemplate,
    Messenger,
    MessengerApi,
    read_json,
)

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
SERVICE_WINDOW = timedelta(hours=24)
STATUSES: dict[str, OutcomeKind] = {"delivered": "delivered", "read": "read", "failed": "failed"}
# Error codes of the Cloud API and what they say (developers.facebook.com, "Error codes").
OUTSIDE_WINDOW = 131047
NOT_ON_WHATSAPP = 131026
THROTTLED = frozenset({4, 80007, 130429, 131056})


def hub_signature(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def error_verdict(code: object) -> tuple[OutcomeKind, str]:
    """A Cloud API error code as (outcome, detail) of the command."""
    if code == OUTSIDE_WINDOW:
        return "failed", "outside_service_window"
    if code == NOT_ON_WHATSAPP:
        return "channel_impossible", "no_chat_account"
    return "failed", f"provider_{code}"


class CloudApi(MessengerApi):
    provider = "whatsapp"

    def __init__(self, base_url: str, phone_number_id: str, token: str, parts: Parts) -> None:
        super().__init__(50.0, parts)
        self._url = f"{base_url.rstrip('/')}/{phone_number_id}/messages"
        self._headers = {"Authorization": f"Bearer {token}"}

    async def deliver(self, message: ChatMessage) -> SendReceipt:
        status, payload = await self.post(self._url, request_body(message), self._headers)
        messages = payload.get("messages")
        if 200 <= status < 300 and isinstance(messages, list) and messages:
            return SendReceipt(self.provider, str(messages[0].get("id")))
        error = payload.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        if status == 429 or status >= 500 or code in THROTTLED:
            raise TransientSendError(self.provider, f"http_{status}")
        outcome, detail = error_verdict(code if code is not None else status)
        raise PermanentSendError(self.provider, detail, outcome)


def request_body(message: ChatMessage) -> dict[str, Any]:
    """The Cloud API's message object: a text, or the approved template."""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.to.lstrip("+"),  # WhatsApp ids are the number's digits
    }
    template = message.template
    if template is None:
        return body | {"type": "text", "text": {"preview_url": False, "body": message.text}}
    parameters = [{"type": "text", "text": p} for p in template.parameters]
    return body | {
        "type": "template",
        "template": {
            "name": template.name,
            "language": {"code": template.language},
            "components": [{"type": "body", "parameters": parameters}],
        },
    }


def _missing_phone(contact: Contact) -> str | None:
    if not contact.phone_raw:
        return "no_phone"
    if contact.phone is None:
        return "invalid_phone"
    # A landline may still carry WhatsApp (verified by a voice call); a wrong number not.
    return contact.phone_mark if contact.phone_mark == NUMBER_WRONG else None


class WhatsAppChannel(Messenger):
    name: Literal["whatsapp"] = "whatsapp"
    rules = ChannelRules(
        consent="whatsapp", reaches_patient=True, resend_when_unsure=False, missing=_missing_phone
    )

    def __init__(self, parts: Parts, client: CloudApi | None) -> None:
        super().__init__(parts, client)
        s = parts.settings
        self._secret = s.whatsapp_app_secret
        self._verify_token = s.whatsapp_verify_token
        self._templates = dict(s.whatsapp_templates)
        self._default_template = s.whatsapp_template_default

    def address(self, contact: Contact) -> str | None:
        return contact.phone  # E.164: opt-outs and windows are kept by it, as for SMS

    def redacted(self, contact: Contact) -> bool:
        return contact.phone_shared_by > 1 or contact.proxy is not None

    def template(self, command: NotificationCommand, contact: Contact) -> ChatTemplate:
        language = contact.language
        voice = self._parts.voice.for_site(command.site)  # a chain's clinic: its name, phone
        name = voice.name_for(language) or self._parts.book.phrase(language, "clinic")
        wanted = "feedback" if command.purpose == "feedback" else command.reason
        return ChatTemplate(
            self._templates.get(wanted, self._default_template),
            language,
            (name, voice.clinic_phone),
        )

    async def prepare(self, command: NotificationCommand, contact: Contact) -> ChatMessage:
        message = self.render(command, contact)
        last = await self._parts.directory.last_written(self.name, message.to)
        if last is not None and self._parts.clock.now() - last < SERVICE_WINDOW:
            return message  # inside the customer-service window: the text itself
        return ChatMessage(message.to, message.text, self.template(command, contact))

    async def patients_at(self, address: str) -> list[str]:
        return await self._parts.directory.patients_with_phone(address)

    def routes(self) -> Sequence[Route]:
        return (
            Route("GET", "/whatsapp/webhook", self.verify),
            Route("POST", "/whatsapp/webhook", self.webhook),
        )

    async def verify(self, request: web.Request) -> web.Response:
        """Meta's subscription check: echo ``hub.challenge`` when the token is ours."""
        q = request.query
        token = q.get("hub.verify_token", "")
        ours = bool(self._verify_token) and hmac.compare_digest(
            token.encode(), self._verify_token.encode()
        )
        if q.get("hub.mode") != "subscribe" or not ours:
            raise web.HTTPForbidden(text="hub.mode=subscribe and our hub.verify_token needed")
        return web.Response(text=q.get("hub.challenge", ""))

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not self._secret or not hmac.compare_digest(hub_signature(self._secret, body), given):
            log.warning("provider_signature_refused", path=request.path)
            raise web.HTTPForbidden(text=f"invalid {SIGNATURE_HEADER}")
        payload = read_json(body)
        if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list):
            raise web.HTTPBadRequest(text="a whatsapp_business_account payload with entry[]")
        for value in _values(payload):
            for message in _list(value.get("messages")):
                await self._message(message)
            for status in _list(value.get("statuses")):
                await self._status(status)
        return web.Response(status=200)

    async def _message(self, message: dict[str, Any]) -> None:
        phone = normalise_phone("+" + str(message.get("from", "")), "ZZ")
        message_id = message.get("id")
        if phone is None or not isinstance(message_id, str) or not message_id:
            raise web.HTTPBadRequest(text="messages[] need a valid from and id")
        answer: list[str] = []

        async def act() -> None:
            said = await self.patient_wrote(phone, message_id, _text(message))
            if said is not None:
                answer.append(said)

        await self.once(f"whatsapp:{message_id}", act)
        for said in answer:  # the patient just wrote: inside the window, a plain text
            await self.answer(phone, said)

    async def _status(self, status: dict[str, Any]) -> None:
        message_id, kind = status.get("id"), status.get("status")
        if not isinstance(message_id, str) or not isinstance(kind, str):
            raise web.HTTPBadRequest(text="statuses[] need an id and a status")
        outcome = STATUSES.get(kind)
        if outcome is None:
            return  # "sent": already recorded when the API accepted it
        detail = None
        if outcome == "failed":
            errors = _list(status.get("errors"))
            outcome, detail = error_verdict(errors[0].get("code") if errors else None)

        async def act() -> None:
            await self.receipt(message_id, outcome, detail)

        await self.once(f"whatsapp_status:{message_id}:{kind}", act)


def _list(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _values(payload: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for entry in _list(payload.get("entry")):
        for change in _list(entry.get("changes")):
            value = change.get("value")
            if change.get("field") == "messages" and isinstance(value, dict):
                found.append(value)
    return found


def _text(message: dict[str, Any]) -> str:
    """What the patient wrote: a text, or the label of a quick-reply button they tapped."""
    for part, key in (("text", "body"), ("button", "text")):
        found = message.get(part)
        if isinstance(found, dict) and isinstance(found.get(key), str):
            return str(found[key])
    return ""


def build(parts: Parts) -> WhatsAppChannel:
    s = parts.settings
    client = None
    if s.whatsapp_url and s.whatsapp_access_token and s.whatsapp_phone_number_id:
        client = CloudApi(
            s.whatsapp_url, s.whatsapp_phone_number_id, s.whatsapp_access_token, parts
        )
    return WhatsAppChannel(parts, client)
