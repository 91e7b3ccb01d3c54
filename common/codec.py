"""Bytes on a topic <-> contract models, and dead letters for what does not parse."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import TypeVar

from pydantic import ValidationError

from schemas.base import Envelope
from schemas.events import DeadLetter

M = TypeVar("M", bound=Envelope)

MAX_REASON = 3900
# A dead letter carries the original bytes base64-encoded (4/3 larger) beside its own fields;
# keeping at most this much of them keeps every letter under the producer's 1 MiB limit.
DEFAULT_MAX_ORIGINAL_BYTES = 256 * 1024
LIMIT_MAX_ORIGINAL_BYTES = 700_000
MAX_KEY_BYTES = 1024


class DecodeError(Exception):
    """The message is unusable. ``reason`` names fields and rules, never the values."""

    def __init__(self, reason: str, error_type: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


def encode(event: Envelope) -> bytes:
    return event.model_dump_json(exclude_none=False).encode()


def decode(model: type[M], raw: bytes | None) -> M:
    if raw is None:
        raise DecodeError("empty message (a tombstone where an event was expected)", "empty")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise DecodeError(*describe(exc)) from None


def describe(exc: ValidationError) -> tuple[str, str]:
    """A reason an integrator can act on, without echoing the input (it may be personal)."""
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err["loc"]) or "<message>"
        parts.append(f"{where}: {err['msg']}")
    invalid_json = any(err["type"] == "json_invalid" for err in errors)
    reason = "; ".join(parts)
    if len(reason) > MAX_REASON:
        reason = reason[:MAX_REASON] + " ..."
    return reason, "invalid_json" if invalid_json else "invalid_event"


def dead_letter(
    raw: bytes | None,
    key: bytes | None,
    *,
    error: DecodeError,
    service: str,
    now: datetime,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    max_original_bytes: int = DEFAULT_MAX_ORIGINAL_BYTES,
) -> DeadLetter:
    body = raw or b""
    kept = body[: min(max_original_bytes, LIMIT_MAX_ORIGINAL_BYTES)]
    if topic is not None and partition is not None and offset is not None:
        event_id = f"dl:{topic}:{partition}:{offset}"
    else:
        # No position (HTTP, MLLP): the bytes themselves identify the letter.
        event_id = "dl:" + hashlib.sha256(body).hexdigest()[:32]
    return DeadLetter(
        event_id=event_id,
        occurred_at=now,
        source=service,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        original_key_b64=None if key is None else base64.b64encode(key[:MAX_KEY_BYTES]).decode(),
        original_key_length=None if key is None else len(key),
        original_b64=base64.b64encode(kept).decode(),
        original_length=len(body),
        original_sha256=hashlib.sha256(body).hexdigest(),
        reason=(error.reason or "unusable message")[:MAX_REASON],
        error_type=error.error_type,
    )
