"""Email through SMTP (aiosmtplib): one reused connection for bursts, text and HTML parts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass, field
from email.message import EmailMessage

import aiosmtplib

from services.notifier.channels import PermanentSendError, SendReceipt, TransientSendError


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
