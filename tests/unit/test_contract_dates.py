"""Absurd dates are refused at the edge, naming the field (issue 19).

Year 200 round-tripped 16 s off (the zone's local mean time), a visit in year 1 or after
9999-12-01 was accepted and then dead-lettered by the detector (datetime overflow)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from pydantic import ValidationError

from common.codec import DecodeError, decode, encode
from schemas import AppointmentEvent
from schemas.base import EARLIEST_YEAR, LATEST_YEAR
from schemas.topics import APPOINTMENTS, PLANS
from tests.support.samples import sample_events


@pytest.mark.parametrize(
    "when",
    ["0001-03-02T10:00:00+02:00", "0200-03-02T10:00:00+02:00", "1899-12-31T23:59:59+00:00",
     "9999-12-01T10:00:00+02:00", "9999-12-31T23:59:59-12:00"],
)  # fmt: skip
@pytest.mark.parametrize("field", ["start", "occurred_at"])
def test_a_timestamp_outside_the_plausible_years_names_its_field(field: str, when: str) -> None:
    data = json.loads(encode(sample_events()[APPOINTMENTS]))
    data[field] = when
    with pytest.raises(DecodeError) as info:
        decode(AppointmentEvent, json.dumps(data).encode())
    assert info.value.reason.startswith(f"{field}: ")
    assert "year outside" in info.value.reason


@pytest.mark.parametrize("year", [EARLIEST_YEAR, 2026, LATEST_YEAR])
def test_plausible_years_pass(year: int) -> None:
    event = sample_events()[APPOINTMENTS]
    assert isinstance(event, AppointmentEvent) and event.start is not None
    moved = event.start.replace(year=year)
    again = AppointmentEvent.model_validate({**event.model_dump(), "start": moved, "end": None})
    assert again.start is not None and again.start.year == year


def test_nested_dates_are_checked_too() -> None:
    plan = sample_events()[PLANS]
    data = plan.model_dump()
    dated = [k for k, v in data.items() if isinstance(v, date)]
    assert dated, "the sample plan carries a date"
    with pytest.raises(ValidationError, match="year outside"):
        type(plan).model_validate({**data, dated[0]: data[dated[0]].replace(year=1)})
