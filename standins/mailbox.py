"""A real SMTP server's handler (aiosmtpd) that keeps every message it receives.

``Inbox`` is the handler: run it under ``aiosmtpd.controller.Controller`` (its own thread,
optionally with TLS, as the notifier's tests do) or under ``Mailbox`` (a server in the
caller's event loop, as the demo does). Each message is kept parsed, with the client's
address, whether TLS was on, the shared clock's time and, given a directory, as a .eml file.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

from common.clock import Clock, SystemClock


@dataclass(frozen=True)
class MailRecord:
    mail_from: str
    rcpt_to: tuple[str, ...]
    subject: str
    text: str
    headers: dict[str, str]
    at: datetime  # the clock's time of receipt
    path: Path | None
    peer: Any = None
    tls: bool = False
    # The iTIP METHOD of an attached iCalendar (REQUEST, CANCEL, PUBLISH), if there is one.
    calendar_method: str | None = None


def _text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    content = part.get_content()
    return content if isinstance(content, str) else ""


def _calendar_method(message: EmailMessage) -> str | None:
    for part in message.walk():
        if part.get_content_type() == "text/calendar":
            method = part.get_param("method")
            if isinstance(method, str):
                return method.upper()
            content = part.get_content()
            text = content.decode() if isinstance(content, bytes) else str(content)
            for line in text.splitlines():
                if line.upper().startswith("METHOD:"):
                    return line.split(":", 1)[1].strip().upper()
    return None


class Inbox:
    """aiosmtpd handler: keeps every message (``messages`` parsed, ``records`` described)."""

    def __init__(self, clock: Clock | None = None, directory: Path | None = None) -> None:
        self.clock = clock or SystemClock()
        self.directory = directory
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self.messages: list[EmailMessage] = []
        self.records: list[MailRecord] = []
        self.raw: list[bytes] = []
        # Handed each message after it is kept (the demo's patients read their mail).
        self.on_message: Callable[[MailRecord], Awaitable[None]] | None = None

    @property
    def connections(self) -> list[Any]:
        """The client's address, per message."""
        return [r.peer for r in self.records]

    @property
    def tls(self) -> list[bool]:
        return [r.tls for r in self.records]

    def for_key(self, key: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["X-Followup-Key"] == key]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content or envelope.content
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        path = None
        if self.directory is not None:
            path = self.directory / f"{len(self.messages) + 1:05d}.eml"
            path.write_bytes(raw)
        self.messages.append(parsed)
        self.raw.append(raw)  # as it crossed the wire (header folding, encoded-words)
        record = MailRecord(
            mail_from=str(envelope.mail_from),
            rcpt_to=tuple(str(r) for r in envelope.rcpt_tos),
            subject=str(parsed.get("Subject", "")),
            text=_text_of(parsed),
            headers={k: str(v) for k, v in parsed.items()},
            at=self.clock.now(),
            path=path,
            peer=session.peer,
            tls=session.ssl is not None,
            calendar_method=_calendar_method(parsed),
        )
        self.records.append(record)
        if self.on_message is not None:
            await self.on_message(record)
        return "250 Message accepted for delivery"


class Mailbox:
    """The clinic's outgoing mail, caught on a real SMTP socket in this event loop."""

    def __init__(self, clock: Clock, directory: Path) -> None:
        self.handler = Inbox(clock, directory)
        self.directory = directory
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    @property
    def records(self) -> list[MailRecord]:
        return self.handler.records

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self.handler, enable_SMTPUTF8=True, hostname="mailbox.local"),
            host,
            port,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
