"""SMS arithmetic and reply words: segments as carriers bill them, and what a reply asks for.

Segments (3GPP TS 23.038 / 23.040):
- GSM-7: 160 septets in one SMS, 153 per part of a concatenated SMS (the 6-octet UDH takes
  the rest). A character of the extension table is ESC + character, two septets, and the
  two are never split across parts.
- UCS-2 (any character outside GSM-7): 70 UTF-16 code units alone, 67 per part. A
  character outside the BMP (emoji) is a surrogate pair that is never split across parts.
- National language single-shift tables (TS 23.038 6.2.1.2.4) are off unless asked for
  (``shift_tables``); a text that needs them costs a 3-octet UDH element in every part.

Reply words: see ``docs/patient-words.md`` for the lists, their sources and the rule.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

# GSM 03.38 basic set and its extension table (extension characters take two septets).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

# National language single-shift tables (3GPP TS 23.038 annex A.2): the characters each
# adds to the default alphabet, at two septets like the default extension table. Only the
# tables of languages whose texts otherwise fall to UCS-2 for a handful of letters.
SHIFT_TABLES: Mapping[str, frozenset[str]] = {
    "tr": frozenset("ŞşĞğİıÇç€"),  # Turkish single shift (A.2.1)
    "es": frozenset("ÁáÍíÓóÚúç€"),  # Spanish single shift (A.2.2)
    "pt": frozenset("ÁáÂâÃãÀÊêÍíÓóÔôÕõÚúçÇ€"),  # Portuguese single shift (A.2.3), letters only
}

Encoding = Literal["gsm7", "ucs2"]

_GSM7_SINGLE, _GSM7_PART = 160, 153
_UCS2_SINGLE, _UCS2_PART = 70, 67
# IEI 0x24/0x25 + length + table id: 3 octets of UDH; with the UDH length octet a lone SMS
# loses 4 octets (32 bits = 5 septets with fill), a part 6 + 3 = 9 octets (11 septets).
_SHIFT_SINGLE, _SHIFT_PART = 155, 149


def encoding_of(text: str) -> Encoding:
    return "gsm7" if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text) else "ucs2"


def _parts(costs: Iterable[int], single: int, part: int) -> int:
    """How many parts units of these costs fill when no unit may straddle two parts."""
    costs = list(costs)
    if sum(costs) <= single:
        return 1
    count, used = 1, 0
    for cost in costs:
        if used + cost > part:
            count, used = count + 1, 0
        used += cost
    return count


def _shift_table_for(text: str, shift_tables: Iterable[str]) -> frozenset[str] | None:
    for language in shift_tables:
        table = SHIFT_TABLES.get(language)
        if table is None:
            raise ValueError(f"no single-shift table for {language!r}")
        if all(c in GSM7_BASIC or c in table or c in GSM7_EXTENDED for c in text):
            return table
    return None


def segment_count(text: str, *, shift_tables: Iterable[str] = ()) -> tuple[Encoding, int]:
    """How many SMS segments ``text`` takes, as carriers count and bill them.

    ``shift_tables``: languages whose national single-shift table the provider may use
    (e.g. ``("tr",)``); empty (the default) means the default alphabet or UCS-2 only.
    """
    if not text:
        return "gsm7", 1
    if encoding_of(text) == "gsm7":
        septets = (2 if c in GSM7_EXTENDED else 1 for c in text)
        return "gsm7", _parts(septets, _GSM7_SINGLE, _GSM7_PART)
    table = _shift_table_for(text, shift_tables)
    if table is not None:
        # The default extension table is replaced by the shift table: € is in each of them;
        # the other extension characters are counted as two septets as well.
        septets = (1 if c in GSM7_BASIC else 2 for c in text)
        return "gsm7", _parts(septets, _SHIFT_SINGLE, _SHIFT_PART)
    units = (2 if ord(c) > 0xFFFF else 1 for c in text)
    return "ucs2", _parts(units, _UCS2_SINGLE, _UCS2_PART)


def segments_within_budget(text: str, budget: int, *, shift_tables: Iterable[str] = ()) -> bool:
    """Whether a rendered SMS stays within ``budget`` billed segments."""
    if budget < 1:
        raise ValueError("a segment budget is at least 1")
    return segment_count(text, shift_tables=shift_tables)[1] <= budget


# --- reply words ---------------------------------------------------------------------------

ReplyMeaning = Literal["opt_out", "opt_in", "help", "reply"]


@dataclass(frozen=True)
class ReplyWords:
    """One language's keywords: spelled as people type them; matching folds the rest."""

    opt_out: frozenset[str]
    opt_in: frozenset[str]
    help: frozenset[str]
    politeness: frozenset[str]


# Sources (docs/patient-words.md): FCC 24-18 (47 CFR 64.1200(a)(10)): stop, quit, end,
# revoke, opt out, cancel, unsubscribe; CTIA Messaging Principles and carriers' defaults
# (Twilio: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT; START, YES,
# UNSTOP; HELP, INFO; AWS adds REMOVE). Misspellings are the usual typos of STOP.
REPLY_WORDS: Mapping[str, ReplyWords] = {
    "en": ReplyWords(
        opt_out=frozenset({
            "stop", "stopall", "stop all", "unsubscribe", "cancel", "end", "quit", "revoke",
            "opt out", "optout", "opt-out", "remove",
            "stopp", "sotp", "stpo", "stoop", "sstop", "stp", "unsubscibe", "unsubcribe",
            "stop texting", "stop texting me", "stop messaging me", "stop sms",
            "stop messages", "no more texts", "do not text", "dont text me",
            "do not text me", "unsubscribe me", "opt me out",
        }),
        opt_in=frozenset({"start", "unstop", "yes", "subscribe"}),
        help=frozenset({"help", "info"}),
        politeness=frozenset({"please", "pls", "plz", "thanks", "thank you", "thx", "now"}),
    ),
    "lt": ReplyWords(
        opt_out=frozenset({
            "atsisakyti", "atsisakau", "atsisakymas", "stabdyti", "sustabdyti", "baigti",
            "nebesiųsti", "nesiųsti", "nesiųskite", "nebesiųskite", "nebenoriu",
            "atšaukti", "stop sms",
        }),
        opt_in=frozenset({"pradėti", "startas", "prenumeruoti"}),
        help=frozenset({"pagalba", "informacija", "info"}),
        politeness=frozenset({"prašau", "ačiū", "dėkui", "dėkoju"}),
    ),
    "ru": ReplyWords(
        opt_out=frozenset({
            "стоп", "отписаться", "отписка", "отписать", "отпишите", "отказ", "отказаться",
            "хватит", "не присылать", "не присылайте", "не пишите", "стпо", "сотп",
            "otpisatsya", "otpiska", "otkaz", "hvatit", "khvatit",
        }),
        opt_in=frozenset({"старт", "начать", "подписаться"}),
        help=frozenset({"помощь", "справка", "инфо", "помогите"}),
        politeness=frozenset({"пожалуйста", "спасибо", "плиз", "pozhaluysta"}),
    ),
    "bg": ReplyWords(
        opt_out=frozenset({
            "стоп", "спри", "спрете", "отпиши", "отпишете", "отписване", "откажи", "отказ",
            "стига", "не пращайте", "spri", "otpishi", "otpisvane", "otkazhi", "stiga",
        }),
        opt_in=frozenset({"старт", "започни", "абонирай", "абониране", "zapochni"}),
        help=frozenset({"помощ", "инфо", "информация", "pomosht"}),
        politeness=frozenset({"моля", "благодаря", "мерси", "molya", "blagodarya"}),
    ),
}  # fmt: skip

# Cyrillic letters that look like Latin ones: a word typed in two scripts (the Cyrillic stop
# word with a Latin c) reads as the word it looks like. Keywords and replies fold alike.
_LOOKALIKE = str.maketrans("асеорхукмнвтіј", "aceopxykmhbtij")
# A Russian word typed with the keyboard left on the Latin layout (ЙЦУКЕН -> QWERTY), and a
# Latin word typed on the Russian layout: "cnjg" is "стоп", "ыещз" is "stop".
_RU_KEYS = "йцукенгшщзхъфывапролджэячсмитьбю"
_LATIN_KEYS = "qwertyuiop[]asdfghjkl;'zxcvbnm,."
_RU_TO_LATIN_KEYS = str.maketrans(_RU_KEYS, _LATIN_KEYS)
_LATIN_TO_RU_KEYS = str.maketrans(_LATIN_KEYS, _RU_KEYS)
_WORD = re.compile(r"\w+")


def _tokens(text: str) -> list[str]:
    """Lower-case words without accents, punctuation, emoji or repeated words."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    bare = "".join(c for c in folded if not unicodedata.combining(c)).replace("_", " ")
    words = _WORD.findall(bare)
    return [w for i, w in enumerate(words) if i == 0 or w != words[i - 1]]


def _key(tokens: Iterable[str]) -> str:
    """One spelling for "opt out", "opt-out" and "optout", and for mixed-script lookalikes."""
    return "".join(tokens).translate(_LOOKALIKE)


def _keys(words: Iterable[str]) -> set[str]:
    keys = set()
    for word in words:
        typed = unicodedata.normalize("NFC", word).casefold()
        keys.add(_key(_tokens(typed)))
        # Short words typed on the wrong layout look like abbreviations ("end" -> "утв").
        if sum(c.isalpha() for c in typed) >= 4:
            keys.add(_key(_tokens(typed.translate(_RU_TO_LATIN_KEYS))))
            keys.add(_key(_tokens(typed.translate(_LATIN_TO_RU_KEYS))))
    keys.discard("")
    return keys


_MEANINGS: tuple[Literal["opt_out", "opt_in", "help"], ...] = ("opt_out", "opt_in", "help")
_KEYWORDS: dict[str, tuple[ReplyMeaning, str]] = {}  # key -> (meaning, language)
_POLITENESS: set[str] = set()
for _language, _words in REPLY_WORDS.items():
    _POLITENESS |= {_key(_tokens(p)) for p in _words.politeness}
    for _meaning in _MEANINGS:
        for _k in _keys(getattr(_words, _meaning)):
            _KEYWORDS.setdefault(_k, (_meaning, _language))
_POLITENESS_TOKENS = max(len(_tokens(p)) for w in REPLY_WORDS.values() for p in w.politeness)


@dataclass(frozen=True)
class ReplyReading:
    """What a reply asks for, and in which language's word (None for a conversation)."""

    meaning: ReplyMeaning
    language: str | None = None


def _without_politeness(tokens: list[str]) -> Iterable[list[str]]:
    """The tokens, then without one politeness phrase at the start or the end."""
    yield tokens
    for n in range(1, _POLITENESS_TOKENS + 1):
        if len(tokens) > n:
            if _key(tokens[:n]) in _POLITENESS:
                yield tokens[n:]
            if _key(tokens[-n:]) in _POLITENESS:
                yield tokens[:-n]


def read_reply(body: str) -> ReplyReading:
    """What an inbound SMS asks for. The whole message must be one keyword (or keyword
    phrase), optionally with one politeness word before or after it: "STOP", "stop please",
    "Prašau, atsisakyti!" are opt-outs; "stop by tomorrow?" is a conversation."""
    tokens = _tokens(body)
    if not tokens or len(tokens) > 6:
        return ReplyReading("reply")
    for candidate in _without_politeness(tokens):
        found = _KEYWORDS.get(_key(candidate))
        if found is not None:
            return ReplyReading(*found)
    return ReplyReading("reply")


def classify_reply(body: str) -> ReplyMeaning:
    """What an inbound SMS asks for: opt_out, opt_in, help, or reply (a conversation)."""
    return read_reply(body).meaning
