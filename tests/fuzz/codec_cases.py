"""The codec's hostile-input property, shared by the hypothesis tests and the atheris target.

Property: whatever bytes arrive for whichever contract, ``common.codec.decode`` returns a
model or raises DecodeError, nothing else; a decoded event encodes and decodes to itself;
and the dead letter of those bytes fits the topic. Inputs are raw bytes, or a valid sample
of the contract with fields replaced by hostile JSON values (the shape that found
``"timezone": "Europe"``), so the fuzzer spends its time past the JSON parser.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from common.codec import LIMIT_MAX_ORIGINAL_BYTES, DecodeError, dead_letter, decode, encode
from schemas.base import Envelope
from schemas.topics import CATALOGUE
from tests.support.samples import sample_events

CONTRACTS: list[type[Envelope]] = [spec.model for spec in CATALOGUE]
SAMPLES: dict[type[Envelope], dict[str, Any]] = {
    spec.model: json.loads(encode(event)) for spec, event in sample_events().items()
}
ERROR_TYPES = frozenset({"empty", "invalid_json", "invalid_event"})
PRODUCER_LIMIT = 1024 * 1024
NOW = datetime(2026, 3, 2, tzinfo=UTC)

# Values that broke or nearly broke contracts: directories and paths as zones, dates at the
# ends of the calendar, offsets at their limits, ids with odd characters, huge numbers.
INTERESTING: list[Any] = [
    "Europe", "America", "Etc", "posixrules", "zone.tab", "../etc/passwd", "/etc/localtime",
    "Europe/Vilnius", "UTC", "", " ", "\x00", "\ud800", "A" * 300,
    "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59.999999+00:00", "1899-12-31T23:59:59Z", "2026-03-29T03:30:00+03:00",
    "2026-02-30T10:00:00Z", "2026-03-02T10:00:00", "2026-03-02T10:00:00+24:00", "2026-03-02",
    "P1D", "PT0S", "-P1D", "sms", "email", "call_task", "no_show", "booked", "en", "lt-LT",
    0, -1, 2**31, 2**63, 10**40, 1e308, -0.0, True, None, [], {}, [None], {"": None},
]  # fmt: skip


def mutate(model: type[Envelope], replacements: list[tuple[int, Any]]) -> bytes:
    """The sample of ``model`` with the field at each index (modulo the field count, over
    the top level and one level down) replaced by a value; a value ``...`` drops the field."""
    data = json.loads(json.dumps(SAMPLES[model]))
    for index, value in replacements:
        paths = paths_of(data)
        target, key = paths[index % len(paths)]
        if value is ...:
            if isinstance(target, dict):
                target.pop(key, None)
        else:
            target[key] = value
    return json.dumps(data).encode()


def paths_of(data: dict[str, Any]) -> list[tuple[Any, Any]]:
    paths: list[tuple[Any, Any]] = [(data, key) for key in data]
    for value in data.values():
        if isinstance(value, dict):
            paths += [(value, key) for key in value]
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    paths += [(item, key) for key in item]
    return paths


def check(model: type[Envelope], raw: bytes) -> Envelope | None:
    """Fails (by raising anything but DecodeError, or an AssertionError) when the property
    breaks; returns the event, or None for a refused input."""
    letter = dead_letter(
        raw,
        raw[:64],
        error=DecodeError("fuzz", "invalid_json"),
        service="fuzz",
        now=NOW,
        topic="followup.fuzz",
        partition=0,
        offset=0,
        max_original_bytes=LIMIT_MAX_ORIGINAL_BYTES,
    )
    assert len(encode(letter)) < PRODUCER_LIMIT
    try:
        event = decode(model, raw)
    except DecodeError as error:
        assert error.error_type in ERROR_TYPES, error.error_type
        assert isinstance(error.reason, str) and error.reason
        return None
    again = decode(model, encode(event))
    assert again == event, "a decoded event does not survive encode/decode"
    return event
