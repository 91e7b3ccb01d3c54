"""Email bounces: what a delivery status notification says, read without I/O.

Two forms are taken: a real RFC 3464 report (``multipart/report;
report-type=delivery-status``, as mail servers send it back), parsed with the standard
``email`` package, and a minimal JSON form for mail services that already parsed it:
``{"message_id": "<...>", "status": "5.1.1", "action": "failed"}`` (``action`` defaults
to ``failed``). Either way the original message is found by its ``Message-ID``, which we
derived from the idempotency key when sending. Only a permanent failure (action
``failed``, status ``5.x.x``) is a bounce; a delay or a temporary failure is not.
Reasons for refusal name what is missing, never a value (addresses are personal data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from typing import Any

_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_MESSAGE_ID = re.compile(r"^<[^<>\s]{1,250}>$")
ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})


class BounceError(ValueError):
    """A report that cannot be read; the message is a reason fit for a 400 answer."""


@dataclass(frozen=True)
class Bounce:
    message_id: str
    action: str
    status: str

    @property
    def permanent(self) -> bool:
        return self.action == "failed" and self.status.startswith("5.")

    @property
    def detail(self) -> str:
        """The outcome's reason code, e.g. ``dsn_5.1.1`` (unknown mailbox)."""
        return f"dsn_{self.status}"


def _checked(message_id: Any, action: Any, status: Any) -> Bounce:
    if not isinstance(message_id, str) or not _MESSAGE_ID.match(message_id.strip()):
        raise BounceError("message_id: the original Message-ID, <...>")
    if not isinstance(action, str) or action not in ACTIONS:  # [] or {}: not hashable
        raise BounceError(f"action: one of {', '.join(sorted(ACTIONS))}")
    if not isinstance(status, str) or not _STATUS.match(status.strip()):
        raise BounceError("status: an RFC 3463 status code such as 5.1.1")
    return Bounce(message_id.strip(), action, status.strip())


def parse_bounce_json(body: Any) -> Bounce:
    if not isinstance(body, dict):
        raise BounceError("body must be a JSON object")
    return _checked(body.get("message_id"), body.get("action", "failed"), body.get("status"))


def _original_message_id(report: Message) -> str | None:
    for part in report.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            original = inner[0] if isinstance(inner, list) and inner else None
            if isinstance(original, Message) and original["Message-ID"]:
                return str(original["Message-ID"]).strip()
        elif kind == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if not isinstance(text, bytes):
                continue
            headers = HeaderParser().parsestr(text.decode("utf-8", "replace"))
            if headers["Message-ID"]:
                return str(headers["Message-ID"]).strip()
    return None


def _recipient_fields(report: Message) -> list[Message]:
    """The per-recipient blocks of the message/delivery-status part."""
    for part in report.walk():
        if part.get_content_type() == "message/delivery-status":
            blocks = part.get_payload()
            if isinstance(blocks, list):
                # The first block is about the message, the others about each recipient.
                return [b for b in blocks[1:] if isinstance(b, Message) and b["Action"]]
    return []


def parse_bounce_message(raw: bytes) -> Bounce:
    """An RFC 3464 report, whole (headers included). With several recipients, a failed one
    wins (we send each message to one address)."""
    report = message_from_bytes(raw, policy=compat32)
    if report.get_content_type() != "multipart/report":
        raise BounceError("not a multipart/report message")
    if str(report.get_param("report-type") or "").lower() != "delivery-status":
        raise BounceError("report-type: delivery-status expected")
    recipients = _recipient_fields(report)
    if not recipients:
        raise BounceError("no per-recipient delivery status")
    message_id = _original_message_id(report)
    if message_id is None:
        raise BounceError("message_id: the original message's headers are missing")
    chosen = next((r for r in recipients if str(r["Action"]).strip().lower() == "failed"), None)
    chosen = chosen or recipients[0]
    status = str(chosen["Status"] or "").strip().split(" ", 1)[0]
    return _checked(message_id, str(chosen["Action"]).strip().lower(), status)
