"""Signed, expiring links by which an administrator reports a call's result in one click.

Each call task carries one link per result (``LINK_RESULTS``). A link is
``<base>/call-tasks/report/<token>``; the token is ``<payload>.<mac>``, both base64url:
the payload is ``{"t": task id, "r": result, "e": expiry (unix seconds)}`` and the mac is
HMAC-SHA256 under ``FOLLOWUP_LINK_SECRET`` with a purpose prefix (so an unsubscribe token
can never pass as a report token). Nothing personal is in the link.

**Why GET does not record.** Mail scanners (Safe Links), chat unfurlers and browsers'
prefetch open links on their own. ``GET`` only shows a page with one button; the ``POST``
of that page records the result.

**CSRF.** The form carries the signed token itself in its body (there is no cookie and no
session: the token is the whole credential, so a forged cross-site request would need the
token, which only the link's holder has). As defence in depth a ``POST`` whose ``Origin``
(or, without one, ``Sec-Fetch-Site``) shows another site is refused with 403, and the page
forbids framing. Pure: the HTTP handlers live in ``call_task_channel.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

from schemas.events import OutcomeKind
from services.notifier import localise

# The link's word -> the call result it reports (``schemas.events.CALL_RESULTS``).
LINK_RESULTS: dict[str, OutcomeKind] = {
    "rebooked": "answered_rebooked",
    "declined": "answered_declined",
    "no_answer": "no_answer",
    "voicemail": "voicemail",
    "wrong_number": "wrong_number",
    "call_back": "callback_requested",
}
PATH = "/call-tasks/report"
_PURPOSE = b"followup call report link v1\n"


class LinkError(ValueError):
    """A token that does not hold: ``why`` is ``invalid`` or ``expired``."""

    def __init__(self, why: Literal["invalid", "expired"]) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class ReportLink:
    task_id: str
    result: str  # a key of LINK_RESULTS
    expires_at: int  # unix seconds

    @property
    def outcome(self) -> OutcomeKind:
        return LINK_RESULTS[self.result]

    @property
    def report_id(self) -> str:
        """One report per task through the links: a second click finds the first."""
        return f"link:{self.task_id}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, purpose: bytes, payload: str, size: int) -> str:
    digest = hmac.new(secret.encode(), purpose + payload.encode(), hashlib.sha256).digest()
    return _b64(digest[:size])


# --- signing: the one home of the notifier's signed links (report links, rebooking links) ---


def signature(secret: str, purpose: bytes, text: str, *, size: int = 32) -> str:
    """HMAC-SHA256 of ``text`` under ``secret`` with a ``purpose`` prefix, base64url, cut
    to ``size`` bytes: an id nobody can derive without the secret (rebooking link ids)."""
    if not secret:
        raise ValueError("FOLLOWUP_LINK_SECRET is required to sign links")
    return _mac(secret, purpose, text, size)


def seal(secret: str, purpose: bytes, body: str, *, mac_bytes: int = 32) -> str:
    """``body`` as ``<payload>.<mac>`` (both base64url), HMAC-SHA256 under ``secret`` with a
    ``purpose`` prefix, so a token of one kind never passes as another. ``mac_bytes`` may
    shorten the mac (16 bytes still leave 2^128 guesses) where a link must fit an SMS."""
    if not secret:
        raise ValueError("FOLLOWUP_LINK_SECRET is required to sign links")
    payload = _b64(body.encode())
    return f"{payload}.{_mac(secret, purpose, payload, mac_bytes)}"


def unseal(secret: str, purpose: bytes, token: str, *, mac_bytes: int = 32) -> str:
    """The body a token sealed, or LinkError("invalid") (tampered, foreign, malformed)."""
    payload, _, mac = token.partition(".")
    expected = _mac(secret, purpose, payload, mac_bytes) if secret else ""
    if not secret or not payload or not hmac.compare_digest(mac, expected):
        raise LinkError("invalid")
    try:
        return _unb64(payload).decode()
    except (ValueError, UnicodeDecodeError):
        raise LinkError("invalid") from None


def sign(secret: str, link: ReportLink) -> str:
    if not secret:
        raise ValueError("FOLLOWUP_LINK_SECRET is required to sign report links")
    body = json.dumps(
        {"t": link.task_id, "r": link.result, "e": link.expires_at}, separators=(",", ":")
    )
    return seal(secret, _PURPOSE, body)


def verify(secret: str, token: str, now: datetime) -> ReportLink:
    """The link ``token`` stands for, or LinkError (tampered, foreign, or expired)."""
    body = unseal(secret, _PURPOSE, token)
    try:
        data = json.loads(body)
        link = ReportLink(str(data["t"]), str(data["r"]), int(data["e"]))
    except (ValueError, KeyError, TypeError):
        raise LinkError("invalid") from None
    if link.result not in LINK_RESULTS:
        raise LinkError("invalid")
    if now.timestamp() >= link.expires_at:
        raise LinkError("expired")
    return link


def links_for(secret: str, base_url: str, task_id: str, expires_at: datetime) -> dict[str, str]:
    """One signed URL per result for the task ``task_id`` (empty without a secret)."""
    if not secret:
        return {}
    expiry = int(expires_at.timestamp())
    return {
        result: f"{base_url}{PATH}/{sign(secret, ReportLink(task_id, result, expiry))}"
        for result in LINK_RESULTS
    }


def link_expiry(window_end: datetime, grace: timedelta) -> datetime:
    """Links stay valid a while after the window: results are often written up later."""
    return window_end + grace


def same_site(origin: str | None, fetch_site: str | None, base_url: str) -> bool:
    """Whether a POST came from our own page (Origin first; Sec-Fetch-Site without one)."""
    if origin and origin != "null":
        ours = urlsplit(base_url)
        theirs = urlsplit(origin)
        return (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc)
    return fetch_site in (None, "same-origin", "none")


# --- the page ----------------------------------------------------------------------------

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}"
    "button{font-size:1.2rem;padding:.6rem 1.2rem}label{display:block;margin:1rem 0}"
)


def page(language: str, title_key: str, body: str) -> str:
    """A whole small page; ``body`` is already escaped HTML."""
    lang = localise.language_of(language)
    title = html.escape(localise.word(lang, title_key))
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{title}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{title}</h1>{body}</body></html>"
    )


def form_page(
    language: str, link: ReportLink, token: str, first_name: str | None, zone: str
) -> str:
    """The page a link opens: who (first name only) and one button for its result."""
    result = localise.result_label(language, link.outcome)
    parts = []
    if first_name:
        patient = localise.word(language, "patient")
        parts.append(f'<p id="patient">{html.escape(patient)}: {html.escape(first_name)}</p>')
    parts.append(f'<form method="post" action="{PATH}">')
    parts.append(f'<input type="hidden" name="token" value="{html.escape(token)}">')
    if link.outcome == "callback_requested":
        label = html.escape(localise.word(language, "callback_at", zone=zone))
        parts.append(
            f'<label>{label} <input type="datetime-local" name="callback_at" required></label>'
        )
    button = html.escape(localise.word(language, "record", result=result))
    parts.append(f'<button type="submit" id="record">{button}</button></form>')
    return page(language, "page_title", "".join(parts))


def message_page(language: str, key: str, **values: object) -> str:
    text = html.escape(localise.word(language, key, **values))
    return page(language, "page_title", f'<p id="message" data-key="{key}">{text}</p>')
