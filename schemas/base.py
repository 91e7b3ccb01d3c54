"""Building blocks shared by every contract: strict models, ids, time zones, the envelope."""

from __future__ import annotations

import zoneinfo
from datetime import date
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    FutureDate,
    FutureDatetime,
    NaiveDatetime,
    PastDate,
    PastDatetime,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

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


# Every date and timestamp of a contract lies in these years. Year 1 or 9999 is a typo or a
# placeholder, never a visit; outside the range zone arithmetic shifts (LMT offsets before
# time zones were standard) or overflows (near datetime.max), so it is refused at the edge.
EARLIEST_YEAR = 1900
LATEST_YEAR = 9998
_OUT_OF_RANGE = PydanticCustomError(
    "date_out_of_range", f"year outside {EARLIEST_YEAR}..{LATEST_YEAR}"
)
_DATE_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {}


# pydantic's constrained date types are markers, not subclasses of date.
_DATE_MARKERS = (AwareDatetime, NaiveDatetime, PastDate, FutureDate, PastDatetime, FutureDatetime)


def _mentions_date(annotation: Any) -> bool:
    if isinstance(annotation, type):
        return issubclass(annotation, (date, *_DATE_MARKERS))  # datetime is a date too
    return any(_mentions_date(arg) for arg in get_args(annotation))


def _date_fields(model: type[BaseModel]) -> tuple[str, ...]:
    names = _DATE_FIELDS.get(model)
    if names is None:
        names = tuple(n for n, f in model.model_fields.items() if _mentions_date(f.annotation))
        _DATE_FIELDS[model] = names
    return names


# A tuple, not ``list | tuple | ...``: that expression builds a union object on every call,
# which made this check a fifth of the tracker's decoding time (issue 16's profile).
_COLLECTIONS = (list, tuple, frozenset, set)


def _implausible(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, date):
        return not EARLIEST_YEAR <= value.year <= LATEST_YEAR
    if isinstance(value, _COLLECTIONS):
        return any(_implausible(item) for item in value)
    return False


class Contract(BaseModel):
    """Strict: no coercion, no unknown fields, immutable once built."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _dates_in_range(self) -> Self:
        # One check per model over its date fields only (found once per class): a validator
        # on every field cost the decoding hot path more than half its speed.
        errors = [
            InitErrorDetails(type=_OUT_OF_RANGE, loc=(name,), input=getattr(self, name))
            for name in _date_fields(type(self))
            if _implausible(getattr(self, name))
        ]
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


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
