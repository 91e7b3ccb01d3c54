"""Structured logging that never prints personal data.

Log ids, counts and reason codes; never names, phone numbers, addresses or message
bodies. As a second line of defence a processor masks keys that carry personal data
and anything shaped like a phone number or an email address.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
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
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_PHONE = re.compile(r"\+?\d[\d\s().-]{7,}\d")
MASK = "[redacted]"


def redact_text(text: str) -> str:
    return _PHONE.sub(MASK, _EMAIL.sub(MASK, text))


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


def configure(service: str, level: str = "INFO", fmt: str = "json") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        redact_personal_data,
        # After redaction: an ISO date looks like a phone number to the pattern.
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries (aiokafka, faust, asyncpg) log through the standard library; keep them
    # quieter than ours and on the same stream.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(message)s")


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
