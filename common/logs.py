"""Structured logging that never prints personal data.

Log ids, counts and reason codes; never names, phone numbers, addresses or message
bodies. As a second line of defence a processor masks keys that carry personal data
and anything shaped like a phone number or an email address.

Client libraries (aiokafka, aiohttp, asyncpg) log through the standard library. Their
records go through the same redaction and come out as the same JSON lines as ours, and a
line that repeats (a broker outage makes aiokafka log one reconnect failure per node many
times a second) is kept to a few per minute, with a count of what was left out.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog

PERSONAL_KEYS = frozenset(
    {
        "name",
        "given_name",
        "family_name",
        "patient_name",
        "phone",
        "phone_number",
        "to",
        "from_",
        "email",
        "address",
        "birth_date",
        "body",
        "text",
        "message_body",
    }
)
MASK = "[redacted]"

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# A candidate phone: an international number (+ or 00, then digits with the separators
# people write: spaces, dots, dashes, brackets), or a national one in groups
# ("(0612) 345 678", "8 912 345-67-89", "555-123-4567"), or a national number written
# without separators that starts with the trunk prefix 0 or 8 ("0612345678",
# "89123456789"). Never a digit run glued to an id ("pat-123456789", "appt_123456789",
# "dl:topic:1:123456789"): the neighbours decide, then the digit count (7-15, E.164).
_CANDIDATE = re.compile(
    r"(?<![\w/:.@#-])"  # not the tail of an id, a path, a version or a position
    r"(?:\+|00)?\(?\d[\d ().-]{5,22}\d"
    r"(?![\w/@-]|:\d|\.\d)"
)
_INTERNATIONAL_TAIL = re.compile(r"(?<![\w])\+\d[\d ().-]{5,22}\d(?![\w/@-])")
_DATE_OR_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}.*)?|\d{1,2}\.\d{1,2}\.\d{2,4}|\d{2}:\d{2}.*"
)
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_GROUPS = re.compile(r"\d+")


def _is_phone(candidate: str) -> bool:
    digits = sum(len(g) for g in _GROUPS.findall(candidate))
    if not 7 <= digits <= 15:
        return False
    if candidate.startswith(("+", "00")):
        return digits >= 8
    if _DATE_OR_TIME.fullmatch(candidate) or _IPV4.fullmatch(candidate):
        return False
    groups = _GROUPS.findall(candidate)
    if len(groups) == 1:  # one bare run: only a national number with its trunk prefix
        return candidate[0] in "08" and 9 <= digits <= 11
    # Grouped like a phone: every group short, as people and formatters write them.
    return all(len(g) <= 5 for g in groups) and len(groups) <= 6


def _mask_phone(match: re.Match[str]) -> str:
    candidate = match.group(0)
    stripped = candidate.rstrip(" .-(")
    if _is_phone(stripped):
        return MASK + candidate[len(stripped) :]
    return candidate


def redact_text(text: str) -> str:
    if not any(c.isdigit() or c == "@" for c in text):
        return text  # most lines: nothing to look at
    text = _EMAIL.sub(MASK, text)
    text = _CANDIDATE.sub(_mask_phone, text)
    # "tel:+370..." and "to=+370...": a + number after a separator the first pass skips.
    return _INTERNATIONAL_TAIL.sub(_mask_phone, text)


def redact_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        value = event_dict[key]
        if key in PERSONAL_KEYS:
            event_dict[key] = MASK
        elif isinstance(value, str):
            event_dict[key] = redact_text(value)
    return event_dict


@dataclass
class _Repeats:
    window_start: float
    passed: int
    suppressed: int


class RepeatLimiter(logging.Filter):
    """Passes ``burst`` records of one kind (logger, level, message template) per ``window``
    seconds and drops the rest; the first record of the next window carries
    ``repeats_suppressed``, the number dropped. The template, not the formatted text: a
    reconnect failure names a different node or error each time but is one kind of line."""

    MAX_KINDS = 1000

    def __init__(
        self, burst: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._clock = clock
        self._kinds: dict[tuple[str, int, str], _Repeats] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        seen = self._kinds.get(kind)
        if seen is None or now - seen.window_start >= self.window:
            if seen is None and len(self._kinds) >= self.MAX_KINDS:
                self._kinds.clear()  # bounded memory; at worst a few lines pass again
            if seen is not None and seen.suppressed:
                record.repeats_suppressed = seen.suppressed
            self._kinds[kind] = _Repeats(now, 1, 0)
            return True
        if seen.passed < self.burst:
            seen.passed += 1
            return True
        seen.suppressed += 1
        return False


def _processors() -> list[Any]:
    return [
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        redact_personal_data,
        # After redaction: an ISO date must never meet the phone pattern's judgement.
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


class _LibraryHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current sys.stderr (tests and the demo swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def library_handler(renderer: Any, limiter: RepeatLimiter | None = None) -> logging.Handler:
    """A standard-library handler that writes library records as our JSON lines: redacted,
    with ``logger`` and ``service``, repeats limited."""
    handler = _LibraryHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=["repeats_suppressed"]),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_processors(),
                renderer,
            ],
        )
    )
    handler.addFilter(limiter or RepeatLimiter())
    return handler


def configure(service: str, level: str = "INFO", fmt: str = "json") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *_processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries (aiokafka, aiohttp, asyncpg) log through the standard library; keep them
    # quieter than ours, on the same stream, in the same shape.
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LibraryHandler)]:
        root.removeHandler(old)  # configured again (tests): one handler, not two
    root.addHandler(library_handler(renderer))
    root.setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
