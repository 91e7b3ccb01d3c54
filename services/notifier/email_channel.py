"""The email channel: render, send through SMTP (aiosmtplib; one reused connection for
bursts, text and HTML parts), and its inbound routes: bounces (RFC 3464 reports, read in
``bounces.py``) and the one-click unsubscribe link.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Literal

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
    headers: tuple[tuple[str, str], ...] = ()  # extra headers (an escalation's priority)


def message_id(idempotency_key: str, sender: str) -> str:
    """Deterministic: a resend after a crash carries the same id, so receivers dedupe it."""
    domain = sender.rsplit("@", 1)[-1].strip(">") or "followup.invalid"
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<followup.{digest}@{domain}>"


def unsubscribe_token(secret: str, patient_id: str) -> str:
    """The token of a patient's unsubscribe link: nobody can unsubscribe someone else."""
    return hmac.new(secret.encode(), patient_id.encode(), hashlib.sha256).hexdigest()[:32]


def build_message(email: Email, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = email.to
    msg["Subject"] = email.subject
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

    def render(self, command: NotificationCommand, contact: Contact) -> Email:
        assert contact.email is not None
        context = self._parts.voice.context(command, contact)
        token = unsubscribe_token(self._settings.link_secret, command.patient_id)
        link = (
            f"{self._parts.public_base_url}/unsubscribe?patient={command.patient_id}&token={token}"
        )
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
                except ValueError:
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
        """``GET/POST /unsubscribe?patient=&token=``: List-Unsubscribe, one click."""
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
        if contact is not None and contact.email:
            now = self._parts.clock.now()
            event_id = f"unsubscribe:{patient_id}:email"
            await self._parts.directory.set_opt_out(contact.email, self.name, True, now, event_id)
            metrics.OPT_OUTS.labels(self.name).inc()
            await self._parts.publish_outcome(
                OutcomeEvent(
                    event_id=event_id,
                    occurred_at=now,
                    source="notifier",
                    outcome="opt_out",
                    patient_id=patient_id,
                    channel=self.name,
                )
            )
        return web.Response(text="You will receive no more emails from us.")


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
