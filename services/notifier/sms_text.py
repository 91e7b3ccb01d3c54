"""SMS arithmetic and reply words: segments by encoding, and what a reply asks for."""

from __future__ import annotations

import unicodedata
from typing import Literal

# GSM 03.38 basic set and its extension table (extension characters take two septets).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

Encoding = Literal["gsm7", "ucs2"]


def encoding_of(text: str) -> Encoding:
    return "gsm7" if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text) else "ucs2"


def segment_count(text: str) -> tuple[Encoding, int]:
    """How many SMS segments ``text`` takes: 160/153 septets (GSM-7) or 70/67 UTF-16 units."""
    encoding = encoding_of(text)
    if encoding == "gsm7":
        units = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
        single, multi = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
    if units <= single:
        return encoding, 1
    return encoding, -(-units // multi)


ReplyMeaning = Literal["opt_out", "opt_in", "help", "reply"]

# Carrier-standard English words plus their usual equivalents in lt, ru and bg.
_KEYWORDS: dict[ReplyMeaning, frozenset[str]] = {
    "opt_out": frozenset(
        {
            "stop", "stopall", "unsubscribe", "cancel", "end", "quit", "optout",
            "stop sms", "atsisakyti", "atsisakau", "stabdyti", "nebesiųsti",
            "стоп", "отписаться", "отписка", "отказ", "хватит", "спри", "откажи",
        }
    ),
    "opt_in": frozenset(
        {"start", "unstop", "yes", "subscribe", "pradėti", "pradeti", "старт", "начать",
         "подписаться", "започни", "абонирай"}
    ),
    "help": frozenset({"help", "info", "pagalba", "помощь", "справка", "помощ", "инфо"}),
}  # fmt: skip


def classify_reply(body: str) -> ReplyMeaning:
    """What an inbound SMS asks for. Only the whole message as one keyword counts."""
    word = unicodedata.normalize("NFC", body).strip().strip(".!").casefold()
    for meaning, words in _KEYWORDS.items():
        if word in words:
            return meaning
    return "reply"
