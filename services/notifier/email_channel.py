"""The email channel: render, send through SMTP (aiosmtplib; one reused connection for
bursts, text and HTML parts), and its inbound routes: bounces (RFC 3464 reports, read in
``bounces.py``) and the one-click unsubscribe link.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime, parseaddr
from typing import Any, Literal
from urllib.parse import urlencode

import aiosmtplib
from aiohttp import web

from common.logs import get_logger
from schemas.events import NotificationCommand, OutcomeEvent
from services.notifier import metrics
from services.notifier.bounces import BounceError, parse_bounce_json, parse_bounce_message
from services.notifier.call_reports import valid_id
from services.notifier.channels import (
    ChannelRules,
    Job,
    Parts,
    PermanentSendError,
    Route,
    SendReceipt,
    Sent,
    TransientSendError,
    require_bearer,
)
from services.notifier.contacts import Contact
from services.notifier.outcomes import command_outcome
from services.notifier.settings import NotifierSettings
from services.notifier.sms_text import read_reply

log = get_logger(__name__)


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    security: str = "starttls"  # none | starttls | tls
    username: str | None = None
    password: str | None = None
    timeout: float = 15.0
    validate_certs: bool = True


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    maintype: str
    subtype: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    text: str
    idempotency_key: str
    html: str | None = None
    list_unsubscribe: str | None = None
    attachments: tuple[Attachment, ...] = ()
    date: datetime | None = None  # the injected clock's now; the Date header
    headers: tuple[tuple[str, str], ...] = ()  # extra headers (an escalation's priority)


def message_id(idempotency_key: str, sender: str) -> str:
    """Deterministic: a resend after a crash carries the same id, so receivers dedupe it."""
    domain = sender.rsplit("@", 1)[-1].strip(">") or "followup.invalid"
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<followup.{digest}@{domain}>"


def unsubscribe_token(secret: str, patient_id: str) -> str:
    """The token of a patient's unsubscribe link: nobody can unsubscribe someone else."""
    return hmac.new(secret.encode(), patient_id.encode(), hashlib.sha256).hexdigest()[:32]


class UriListHeader(UnstructuredHeader):
    """``List-Unsubscribe``: a list of <URI>s, folded only between them, never turned
    into RFC 2047 encoded-words (mail providers read the https URL as it is, RFC 8058)."""

    def fold(self, *, policy: Policy) -> str:
        uris = [part.strip() for part in str(self).split(",") if part.strip()]
        linesep = str(getattr(policy, "linesep", "\n"))
        name = str(getattr(self, "name", "List-Unsubscribe"))  # BaseHeader sets it
        return f"{name}: " + f",{linesep} ".join(uris) + linesep


class _Headers(HeaderRegistry):
    """The stdlib's registry builds a new class (``type(...)``) every time it is asked for
    a header's class: for each header set, each count check and each fold, ~17% of an
    email's samples. The class for a name never changes, so each is built once."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, Any] = {}

    def map_to_type(self, name: str, cls: Any) -> None:
        super().map_to_type(name, cls)
        self._made.clear()

    def __getitem__(self, name: str) -> Any:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made


_HEADERS = _Headers()
_HEADERS.map_to_type("list-unsubscribe", UriListHeader)
# The message's policy: the generator (ours or aiosmtplib's) folds each header with the
# header object this policy made, so the URL stays whole however long it is.
MESSAGE_POLICY = email.policy.SMTP.clone(header_factory=_HEADERS)


def build_message(email: Email, sender: str) -> EmailMessage:
    msg = EmailMessage(policy=MESSAGE_POLICY)
    msg["From"] = sender
    msg["To"] = email.to
    msg["Subject"] = email.subject
    msg["Date"] = format_datetime(email.date or datetime.now(UTC))
    msg["Message-ID"] = message_id(email.idempotency_key, sender)
    msg["X-Followup-Key"] = email.idempotency_key
    for name, value in email.headers:
        msg[name] = value
    if email.list_unsubscribe:
        msg["List-Unsubscribe"] = email.list_unsubscribe
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(email.text)
    if email.html:
        msg.add_alternative(email.html, subtype="html")
    for item in email.attachments:
        msg.add_attachment(
            item.content,
            maintype=item.maintype,
            subtype=item.subtype,
            filename=item.filename,
            params=item.params,
        )
    return msg


class Mailer:
    name = "smtp"

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config
        self._smtp: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        c = self._config
        smtp = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            use_tls=c.security == "tls",
            start_tls=c.security == "starttls",
            timeout=c.timeout,
            validate_certs=c.validate_certs,
        )
        await smtp.connect()
        if c.username and c.password:
            await smtp.login(c.username, c.password)
        self._smtp = smtp
        return smtp

    async def send(self, email: Email) -> SendReceipt:
        msg = build_message(email, self._config.sender)
        async with self._lock:
            # One retry on a fresh connection: the server may have closed an idle one.
            for attempt in (1, 2):
                try:
                    smtp = await self._connected()
                    await smtp.send_message(msg)
                    return SendReceipt(self.name, msg["Message-ID"])
                except aiosmtplib.SMTPServerDisconnected:
                    self._smtp = None
                    if attempt == 2:
                        raise TransientSendError(self.name, "disconnected") from None
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    codes = [err.code for err in exc.recipients]
                    raise _by_code(self.name, min(codes) if codes else 550) from None
                except aiosmtplib.SMTPResponseException as exc:
                    raise _by_code(self.name, exc.code) from None
                except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                    self._smtp = None
                    raise TransientSendError(self.name, type(exc).__name__) from None
        raise TransientSendError(self.name, "unreachable")  # pragma: no cover

    async def close(self) -> None:
        if self._smtp is not None and self._smtp.is_connected:
            try:
                await self._smtp.quit()
            except aiosmtplib.SMTPException:
                self._smtp.close()
        self._smtp = None


def _by_code(provider: str, code: int) -> Exception:
    if 400 <= code < 500:
        return TransientSendError(provider, f"smtp_{code}")
    return PermanentSendError(provider, f"smtp_{code}")


# --- the channel -------------------------------------------------------------------------


def _missing_address(contact: Contact) -> str | None:
    return None if contact.email else "no_email"


RULES = ChannelRules(
    consent="email", reaches_patient=True, resend_when_unsure=True, missing=_missing_address
)


class EmailChannel:
    name: Literal["email"] = "email"
    rules = RULES

    def __init__(self, parts: Parts) -> None:
        self._parts = parts
        self._settings = parts.settings

    def unsubscribe_link(self, patient_id: str) -> str:
        token = unsubscribe_token(self._settings.link_secret, patient_id)
        query = urlencode({"patient": patient_id, "token": token})
        return f"{self._parts.public_base_url}/unsubscribe?{query}"

    def render(self, command: NotificationCommand, contact: Contact) -> Email:
        assert contact.email is not None
        link = self.unsubscribe_link(command.patient_id)
        # The body names the link it carries (and only then): the same one-click URL.
        # To a proxy: the text that names no one and no visit (never more than needed).
        context = self._parts.voice.context(command, contact, redacted=contact.proxy is not None)
        context = replace(context, unsubscribe_url=link)
        unsubscribe = [f"<{link}>"]
        if self._settings.unsubscribe_mailto:
            unsubscribe.insert(
                0, f"<mailto:{self._settings.unsubscribe_mailto}?subject=unsubscribe>"
            )
        return Email(
            to=contact.email,
            subject=self._parts.book.render("email_subject", contact.language, context),
            text=self._parts.book.render("email_text", contact.language, context),
            html=self._parts.book.render("email_html", contact.language, context),
            idempotency_key=command.idempotency_key,
            list_unsubscribe=", ".join(unsubscribe),
            date=self._parts.clock.now(),
        )

    async def send(self, job: Job) -> Sent:
        if self._parts.mailer is None:
            raise PermanentSendError("none", "channel_not_configured")
        assert job.contact is not None
        receipt = await self._parts.mailer.send(self.render(job.command, job.contact))
        return Sent("sent", provider=receipt.provider, provider_id=receipt.provider_id)

    def routes(self) -> Sequence[Route]:
        return (
            Route("POST", "/email/bounces", self.bounce),
            Route("*", "/unsubscribe", self.unsubscribe),
            Route("POST", "/email/inbound", self.inbound),
        )

    async def close(self) -> None:
        return None  # the shared Mailer is closed by the composition root

    async def bounce(self, request: web.Request) -> web.Response:
        """``POST /email/bounces``: an RFC 3464 report (the whole message, or its body with
        ``Content-Type: multipart/report; ...``) or the minimal JSON form (``bounces.py``)."""
        require_bearer(request, self._settings.api_token)
        raw = await request.read()
        try:
            if request.content_type == "application/json":
                try:
                    body = json.loads(raw)
                except (ValueError, RecursionError):  # RecursionError: nested thousands deep
                    raise BounceError("body is not JSON") from None
                bounce = parse_bounce_json(body)
            else:
                if request.content_type == "multipart/report":
                    # The MIME headers came as HTTP headers: put them back on the message.
                    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n"
                    raw = head.encode() + raw
                bounce = parse_bounce_message(raw)
        except BounceError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        if not bounce.permanent:
            return web.json_response({"result": "ignored", "status": bounce.status})
        command = await self._parts.ledger.sent_command(self.name, provider_id=bounce.message_id)
        if command is None:
            raise web.HTTPNotFound(text="unknown Message-ID")
        event = command_outcome(command, "bounced", self._parts.clock.now(), detail=bounce.detail)
        await self._parts.publish_outcome(event)
        log.info("email_bounced", key=command.idempotency_key, status=bounce.status)
        return web.json_response({"result": "bounced", "event_id": event.event_id}, status=202)

    async def unsubscribe(self, request: web.Request) -> web.Response:
        """``/unsubscribe?patient=&token=``: RFC 8058 one-click. ``POST`` (the mail
        provider's ``List-Unsubscribe=One-Click``, or the confirm page's button) records the
        opt-out; ``GET`` (a person following the link) only shows the confirm page, so a
        link scanner opening every URL unsubscribes nobody."""
        patient_id = request.query.get("patient", "")
        token = request.query.get("token", "")
        if not (
            valid_id(patient_id)
            and self._settings.link_secret
            and hmac.compare_digest(
                token, unsubscribe_token(self._settings.link_secret, patient_id)
            )
        ):
            raise web.HTTPForbidden(text="invalid unsubscribe link")
        if request.method not in ("GET", "POST"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        contact = await self._parts.directory.contact(patient_id)
        language = contact.language if contact else self._parts.book.default_language
        words = self._parts.book.phrases(language)
        if request.method == "GET":
            page = UNSUBSCRIBE_PAGE.format(
                lang=html.escape(language),
                question=html.escape(words["unsubscribe_question"]),
                action=html.escape(self.unsubscribe_link(patient_id)),
                button=html.escape(words["unsubscribe_button"]),
            )
            return web.Response(text=page, content_type="text/html")
        if contact is not None and contact.email:
            await self._opt(patient_id, contact.email, True, f"unsubscribe:{patient_id}:email")
        page = UNSUBSCRIBE_DONE.format(
            lang=html.escape(language), done=html.escape(words["unsubscribe_done"])
        )
        return web.Response(text=page, content_type="text/html")

    async def _opt(self, patient_id: str, address: str, out: bool, event_id: str) -> None:
        now = self._parts.clock.now()
        await self._parts.directory.set_opt_out(address, self.name, out, now, event_id)
        if out:
            metrics.OPT_OUTS.labels(self.name).inc()
        await self._parts.publish_outcome(
            OutcomeEvent(
                event_id=event_id,
                occurred_at=now,
                source="notifier",
                outcome="opt_out" if out else "opt_in",
                patient_id=patient_id,
                channel=self.name,
            )
        )

    async def inbound(self, request: web.Request) -> web.Response:
        """``POST /email/inbound``: a patient's reply, forwarded by the mailbox (the whole
        RFC 5322 message as ``message/rfc822``, or JSON ``{"message_id", "from", "text"}``).
        Its first line read like an SMS reply (``sms_text.read_reply``, every language):
        "unsubscribe", "atsisakyti", "отписаться" ... opt the sender's address out of
        email; anything else is a ``reply`` (a conversation) for the patients with it."""
        require_bearer(request, self._settings.api_token)
        try:
            reply = parse_inbound_email(await request.read(), request.content_type)
        except InboundEmailError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        patients = await self._parts.directory.patients_with_email(reply.sender)
        reading = read_reply(reply.first_line)
        event_base = "email:" + hashlib.sha256(reply.message_id.encode()).hexdigest()[:32]
        now = self._parts.clock.now()
        for patient_id in patients:
            event_id = event_base if len(patients) == 1 else f"{event_base}:{patient_id}"
            if reading.meaning in ("opt_out", "opt_in"):
                await self._opt(patient_id, reply.sender, reading.meaning == "opt_out", event_id)
                continue
            await self._parts.publish_outcome(
                OutcomeEvent(
                    event_id=event_id,
                    occurred_at=now,
                    source="notifier",
                    outcome=reading.meaning,
                    patient_id=patient_id,
                    channel=self.name,
                )
            )
        log.info("email_reply", meaning=reading.meaning, patients=len(patients))
        return web.json_response({"result": reading.meaning, "patients": len(patients)}, status=202)


UNSUBSCRIBE_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{button}</title></head>
<body><form method="post" action="{action}"><p>{question}</p>
<button type="submit">{button}</button></form></body></html>"""
UNSUBSCRIBE_DONE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{done}</title></head>
<body><p>{done}</p></body></html>"""


class InboundEmailError(Exception):
    """A forwarded reply we cannot read; the reason names fields, never values."""


@dataclass(frozen=True)
class InboundEmail:
    message_id: str
    sender: str  # lower-cased address
    first_line: str  # the reply's first own line (quotes and signature left out)


# "On <date>, <name> wrote:" as mail programs write it in en, lt, ru and bg.
_QUOTE_INTRO = re.compile(
    r"^(on .+ wrote:|.+ rašė:|.+ писал[а]?:|.+ написа:)$",  # noqa: RUF001
    re.IGNORECASE,
)


def _first_own_line(text: str) -> str:
    for raw in text.splitlines():
        line = raw.strip()
        if line == "--" or line.startswith(">") or _QUOTE_INTRO.match(line):
            break  # the signature or the quoted message: nothing of the reply's own below
        if line:
            return line
    return ""


def parse_inbound_email(raw: bytes, content_type: str) -> InboundEmail:
    if content_type == "application/json":
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested thousands deep
            raise InboundEmailError("body is not JSON") from None
        if not isinstance(body, dict):
            raise InboundEmailError("body must be a JSON object")
        message_id, sender, text = body.get("message_id"), body.get("from"), body.get("text")
        if not all(isinstance(v, str) and v for v in (message_id, sender)) or not isinstance(
            text, str
        ):
            raise InboundEmailError("message_id, from and text are required strings")
        subject = ""
    else:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        message_id, sender = msg.get("Message-ID"), msg.get("From")
        subject = str(msg.get("Subject") or "")
        part = msg.get_body(preferencelist=("plain",)) if isinstance(msg, EmailMessage) else None
        text = part.get_content() if part is not None else ""
        if not message_id or not sender:
            raise InboundEmailError("Message-ID and From headers are required")
    address = parseaddr(str(sender))[1].strip().lower()
    if "@" not in address:
        raise InboundEmailError("From is not an email address")
    first = _first_own_line(str(text))
    if not first:  # "unsubscribe" in the subject, nothing in the body
        first = re.sub(r"^((re|aw|sv|fw|fwd|отв|ats)\s*:\s*)+", "", subject, flags=re.I).strip()
    return InboundEmail(str(message_id).strip(), address, first)


def build_mailer(s: NotifierSettings) -> Mailer | None:
    """The one SMTP connection (email channel and front-desk sink), when SMTP is set."""
    if not s.smtp_host:
        return None
    return Mailer(
        SmtpConfig(
            host=s.smtp_host,
            port=s.smtp_port,
            sender=s.smtp_sender,
            security=s.smtp_security,
            username=s.smtp_username,
            password=s.smtp_password,
            validate_certs=s.smtp_validate_certs,
        )
    )
