from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pydantic import ValidationError

from common.codec import decode, encode
from schemas import AppointmentEvent, TreatmentPlanEvent
from schemas.generate import path_of, rendered
from schemas.topics import APPOINTMENTS, CATALOGUE, PLANS, TopicSpec
from tests.support.samples import sample_events


def test_every_topic_has_a_sample() -> None:
    assert set(sample_events()) == set(CATALOGUE)


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.name)
def test_committed_json_schema_matches_model(spec: TopicSpec) -> None:
    committed = path_of(spec).read_text(encoding="utf-8")
    assert committed == rendered(spec), f"{path_of(spec).name} is stale: run `make schemas`"


def test_drift_is_detected_when_a_model_gains_a_field() -> None:
    class Changed(AppointmentEvent):
        room: str | None = None

    changed = TopicSpec(APPOINTMENTS.name, Changed, APPOINTMENTS.description)
    assert rendered(changed) != path_of(APPOINTMENTS).read_text(encoding="utf-8")


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.name)
def test_json_round_trip(spec: TopicSpec) -> None:
    event = sample_events()[spec]
    assert spec.model.model_validate_json(event.model_dump_json()) == event


def sample_appointment_json() -> dict[str, object]:
    data: dict[str, object] = json.loads(sample_events()[APPOINTMENTS].model_dump_json())
    return data


def test_naive_datetime_is_refused() -> None:
    data = sample_appointment_json()
    data["start"] = "2026-03-02T09:30:00"
    with pytest.raises(ValidationError, match="timezone"):
        AppointmentEvent.model_validate_json(json.dumps(data))


def test_unknown_field_is_refused() -> None:
    data = sample_appointment_json()
    data["ssn"] = "x"
    with pytest.raises(ValidationError, match="Extra inputs"):
        AppointmentEvent.model_validate_json(json.dumps(data))


def test_unknown_time_zone_is_refused() -> None:
    data = sample_appointment_json()
    data["timezone"] = "Mars/Olympus"
    with pytest.raises(ValidationError, match="unknown IANA time zone"):
        AppointmentEvent.model_validate_json(json.dumps(data))


def test_strict_no_coercion_of_numbers_to_strings() -> None:
    data = sample_appointment_json()
    data["patient_id"] = 12345
    with pytest.raises(ValidationError):
        AppointmentEvent.model_validate_json(json.dumps(data))


def test_end_before_start_is_refused() -> None:
    data = sample_appointment_json()
    data["end"] = "2026-03-01T09:30:00+02:00"
    with pytest.raises(ValidationError, match="end is before start"):
        AppointmentEvent.model_validate_json(json.dumps(data))


def test_plan_stages_must_be_ordered() -> None:
    plan = sample_events()[PLANS]
    data = json.loads(plan.model_dump_json())
    data["stages"].reverse()
    with pytest.raises(ValidationError, match="increasing sequence"):
        TreatmentPlanEvent.model_validate_json(json.dumps(data))


def test_messages_are_keyed_by_patient() -> None:
    for spec, event in sample_events().items():
        if spec.name != "followup.deadletter":
            assert event.key() == b"pat-1", spec.name


def test_envelope_is_everywhere() -> None:
    for spec in CATALOGUE:
        fields = spec.model.model_fields
        for name in ("event_id", "type", "occurred_at", "source", "schema_version"):
            assert name in fields, (spec.name, name)


def test_occurred_at_keeps_its_offset() -> None:
    event = sample_events()[APPOINTMENTS]
    # Through the wire: the clinic's offset survives, not just the instant.
    received = decode(AppointmentEvent, encode(event))
    assert received.occurred_at.utcoffset() == timedelta(hours=2)
