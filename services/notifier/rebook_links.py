"""The patient's rebooking link and its page (pure: the HTTP handlers are in rebooking.py).

Every SMS and email of a case carries its own link ``<base>/r/<id>``. The id is an HMAC of
the message's idempotency key (``<case>:<attempt>``: one patient, one case), 9 bytes
base64url (12 characters: an SMS has room for little more than a short URL; 2^72 ids
cannot be guessed online), signed with ``report_links.signature`` (HMAC-SHA256 under
``FOLLOWUP_LINK_SECRET``, its own purpose prefix). The notifier stores the id with the key
and the expiry when it accepts the message (``rebook_links`` table), so the id alone finds
it; on use the id is derived again from the stored key and compared. A tampered id finds
nothing. The link is valid ``FOLLOWUP_REBOOK_LINK_DAYS`` after the message's window, never
past the stage deadline (but at least as long as the window). Nothing personal is in it.

The page says why we write (the templates' care-first opening), the stage and its deadline
in plain words, free slots before the deadline in the patient's zone and language, and
"none of these fit: call me back". Plain HTML forms, no script; the patient's first name
and the visit are the only personal data on it. ``GET`` only shows (link scanners open
links); the form's ``POST`` asks. CSRF: as the report links (token in the body, Origin
checked, no framing).
"""

from __future__ import annotations

import hmac
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from schemas.events import NotificationCommand
from services.notifier import localise
from services.notifier.report_links import LinkError, signature
from services.notifier.slots import FreeSlot

PATH = "/r"
_PURPOSE = b"followup rebook link v1\n"
_ID_BYTES = 9
ID_LENGTH = 12  # base64url of 9 bytes, no padding
_ID_SHAPE = re.compile(r"^[A-Za-z0-9_-]{12}$")


def link_id(secret: str, key: str) -> str:
    """The link id of the message ``key`` (deterministic: rendering twice gives one link)."""
    return signature(secret, _PURPOSE, key, size=_ID_BYTES)


def well_formed(token: str) -> bool:
    return bool(_ID_SHAPE.match(token))


def check(secret: str, token: str, key: str, expires_at: datetime, now: datetime) -> None:
    """LinkError unless ``token`` is the id of ``key`` (the stored row) and still valid."""
    if not secret or not hmac.compare_digest(token, link_id(secret, key)):
        raise LinkError("invalid")
    if now >= expires_at:
        raise LinkError("expired")


def link_expiry(command: NotificationCommand, valid: timedelta) -> datetime:
    expiry = command.window_end + valid
    if command.stage_deadline is not None:
        expiry = min(expiry, command.stage_deadline)
    return max(expiry, command.window_end)


def link_for(secret: str, base_url: str, command: NotificationCommand) -> str:
    """The message's own rebooking URL."""
    return f"{base_url}{PATH}/{link_id(secret, command.idempotency_key)}"


# --- the page ----------------------------------------------------------------------------

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:1rem auto;padding:0 1rem;"
    "line-height:1.4}button{font-size:1.1rem;padding:.6rem 1.2rem;margin:.6rem 0}"
    "label{display:block;padding:.5rem 0;font-size:1.1rem}fieldset{border:1px solid #999;"
    "margin:1rem 0}"
)


@dataclass(frozen=True)
class PageFacts:
    """What the page may say: first name only, the visit (in the opening), the stage."""

    language: str
    zone: str  # the patient's
    token: str
    first_name: str | None
    opening: str  # the templates' care-first opening for the case's reason
    stage_name: str | None
    stage_deadline: datetime | None
    clinic_phone: str


def page(language: str, body: str) -> str:
    """A whole small page; ``body`` is already escaped HTML."""
    lang = localise.language_of(language)
    title = html.escape(localise.patient_word(lang, "rebook_title"))
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{title}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{title}</h1>{body}</body></html>"
    )


def _p(id_: str, text: str) -> str:
    return f'<p id="{id_}">{html.escape(text)}</p>'


def slot_label(slot: FreeSlot, zone: str, language: str) -> str:
    return localise.format_visit_time(slot.start, zone, language)


def callback_choices(now: datetime, zone: str, days: int = 3) -> list[datetime]:
    """Morning and afternoon of the next ``days`` weekdays, in the patient's zone (the
    scheduler places the call inside the desk's hours from there)."""
    local = now.astimezone(ZoneInfo(zone))
    found: list[datetime] = []
    day = local.date()
    while len(found) < 2 * days:
        day = day + timedelta(days=1)
        if day.weekday() >= 5:
            continue
        for hour in (10, 15):
            found.append(datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(zone)))
    return found


def choice_page(
    facts: PageFacts,
    slots: Sequence[FreeSlot] | None,
    callbacks: Sequence[datetime],
    *,
    notice: str | None = None,
) -> str:
    """The page the link opens; ``slots`` None: the hospital's system did not answer."""
    lang = facts.language
    word = localise.patient_word
    parts: list[str] = []
    if notice:
        parts.append(_p("notice", word(lang, notice)))
    name = facts.first_name
    parts.append(
        _p("greeting", word(lang, "hello", name=name) if name else word(lang, "hello_anonymous"))
    )
    parts.append(_p("why", facts.opening))
    deadline = (
        localise.format_visit_date(facts.stage_deadline, facts.zone, lang)
        if facts.stage_deadline
        else None
    )
    if facts.stage_name:
        stage = word(lang, "stage", stage=facts.stage_name)
        if deadline:
            stage += " " + word(lang, "stage_by", date=deadline)
        parts.append(_p("stage", stage))
    token = f'<input type="hidden" name="token" value="{html.escape(facts.token)}">'
    if slots is None:
        parts.append(_p("no_slots", word(lang, "slots_unavailable")))
    elif not slots:
        parts.append(_p("no_slots", word(lang, "no_slots", date=deadline or "-")))
    else:
        parts.append(f'<form method="post" action="{PATH}">{token}')
        parts.append(f"<fieldset><legend>{html.escape(word(lang, 'free_times'))}</legend>")
        for index, slot in enumerate(slots):
            label = html.escape(slot_label(slot, facts.zone, lang))
            value = html.escape(slot.slot_id)
            checked = " checked" if index == 0 else ""
            parts.append(
                f'<label><input type="radio" name="slot" value="{value}"{checked}> {label}</label>'
            )
        parts.append(
            f'</fieldset><button type="submit" id="book" name="action" value="book">'
            f"{html.escape(word(lang, 'book'))}</button></form>"
        )
    parts.append(f'<form method="post" action="{PATH}">{token}')
    parts.append(f'<fieldset><legend id="none_fit">{html.escape(word(lang, "none_fit"))}</legend>')
    parts.append(f"<p>{html.escape(word(lang, 'call_when'))}</p>")
    parts.append(
        '<label><input type="radio" name="call_at" value="soon" checked> '
        f"{html.escape(word(lang, 'call_soon'))}</label>"
    )
    for moment in callbacks:
        label = html.escape(localise.format_visit_time(moment, facts.zone, lang))
        parts.append(
            f'<label><input type="radio" name="call_at" value="{moment.isoformat()}"> '
            f"{label}</label>"
        )
    parts.append(
        f'</fieldset><button type="submit" id="callback" name="action" value="callback">'
        f"{html.escape(word(lang, 'call_me'))}</button></form>"
    )
    parts.append(_p("phone", word(lang, "call_clinic", phone=facts.clinic_phone)))
    return page(lang, "".join(parts))


def message_page(language: str, key: str, **values: object) -> str:
    """A page of one sentence; ``data-key`` lets tests and monitors read which one."""
    text = html.escape(localise.patient_word(language, key, **values))
    return page(language, f'<p id="message" data-key="{key}">{text}</p>')


def used_page(language: str, kind: str, state: str, time: str | None) -> str:
    """A link of a case that already asked: what was asked and how it stands (``status``'s
    ``data-key``: ``callback``, ``requested`` until the hospital's booking, ``confirmed``)."""
    word = localise.patient_word
    if kind == "callback":
        key, status = "callback", word(language, "callback_asked")
    elif time is not None:
        key = "confirmed" if state == "confirmed" else "requested"
        status = word(language, key, time=time)
    else:
        key, status = state, ""
    body = (
        f'<p id="message" data-key="used">{html.escape(word(language, "used"))}</p>'
        f'<p id="status" data-key="{key}">{html.escape(status)}</p>'
    )
    return page(language, body)
