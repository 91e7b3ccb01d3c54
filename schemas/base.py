"""Building blocks shared by every contract: strict models, ids, time zones, the envelope."""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION: Literal[1] = 1

# Ids are the hospital's opaque strings, kept as it spells them (`OR 4`, `A2^HIS` split
# already): bounded, no control characters, no surrounding blanks. SQL takes them as
# parameters and logs as values, so nothing more is needed to keep them safe.
Id = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=128,
        pattern=r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
    ),
]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(max_length=4000)]
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]


def _known_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r}") from exc
    return name


TimeZoneName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    AfterValidator(_known_zone),
    Field(description="IANA time zone name, e.g. Europe/Vilnius"),
]

Channel = Literal["sms", "email", "call_task"]
TriggerKind = Literal[
    "no_show",
    "unanswered_call",
    "stage_window_at_risk",
    "late_cancellation",
    # the clinic cancelled or bumped the visit (doctor ill, room closed): rebook at once
    "clinic_cancellation",
    # attended, and the visit the department expects next is not booked
    "next_visit_due",
]


class Contract(BaseModel):
    """Strict: no coercion, no unknown fields, immutable once built."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


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
