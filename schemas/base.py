"""Building blocks shared by every contract: strict models, ids, time zones, the envelope."""

from __future__ import annotations

import zoneinfo
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

SCHEMA_VERSION: Literal[1] = 1

# Ids are opaque to us; the pattern keeps them safe in keys, logs and SQL without quoting.
Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]*$"),
]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(max_length=4000)]
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]


def _known_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    # Not only ZoneInfoNotFoundError: a name that is a tzdata directory ("Europe") raises
    # IsADirectoryError, a path-like one ValueError; any of them is a bad field, not a crash.
    except Exception as exc:
        raise ValueError("unknown IANA time zone") from exc
    return name


TimeZoneName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    AfterValidator(_known_zone),
    Field(description="IANA time zone name, e.g. Europe/Vilnius"),
]

Channel = Literal["sms", "email", "call_task"]
TriggerKind = Literal["no_show", "unanswered_call", "stage_window_at_risk", "late_cancellation"]


# Every date and timestamp of a contract lies in these years. Year 1 or 9999 is a typo or a
# placeholder, never a visit; outside the range zone arithmetic shifts (LMT offsets before
# time zones were standard) or overflows (near datetime.max), so it is refused at the edge.
EARLIEST_YEAR = 1900
LATEST_YEAR = 9998


def _plausible_dates(value: Any) -> None:
    if isinstance(value, date):  # datetime is a date too
        if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
            raise ValueError(f"year outside {EARLIEST_YEAR}..{LATEST_YEAR}")
    elif isinstance(value, list | tuple | frozenset | set):
        for item in value:
            _plausible_dates(item)


class Contract(BaseModel):
    """Strict: no coercion, no unknown fields, immutable once built."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _dates_in_range(cls, value: Any) -> Any:
        _plausible_dates(value)
        return value


class Envelope(Contract):
    """Carried by every message on every topic."""

    event_id: Id = Field(description="Unique and, where the fact allows, deterministic.")
    occurred_at: AwareDatetime = Field(description="When the fact happened (with offset).")
    source: ShortText = Field(description="Who produced it: service or ingest path.")
    schema_version: Literal[1] = SCHEMA_VERSION

    def key(self) -> bytes:
        """The Kafka key: the patient, so one patient's events stay in order."""
        patient_id: str = getattr(self, "patient_id")  # noqa: B009 - every topic model has it
        return patient_id.encode()
