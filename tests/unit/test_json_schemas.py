"""The published JSON Schemas, checked with a third-party validator (jsonschema, Draft 2020-12)
the way an integrator would: valid events pass, a naive timestamp and an unknown zone fail."""

from __future__ import annotations

import json
import re
import zoneinfo
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import ValidationError
from referencing import Registry, Resource

from schemas.generate import AWARE_DATETIME, IANA_ZONE, META_PATH, path_of, rendered_metaschema
from schemas.topics import APPOINTMENTS, CATALOGUE, CONTACTS, PLANS, TopicSpec
from tests.support.samples import sample_events

META = json.loads(META_PATH.read_text(encoding="utf-8"))
FORMAT_ASSERTION = "https://json-schema.org/draft/2020-12/vocab/format-assertion"


def schema(spec: TopicSpec) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path_of(spec).read_text(encoding="utf-8"))
    return loaded


def validator(spec: TopicSpec, *, formats: bool = True) -> Draft202012Validator:
    """As an integrator sets one up: the committed schema, its metaschema registered."""
    registry: Registry[Any] = Registry().with_resource(META["$id"], Resource.from_contents(META))
    return Draft202012Validator(
        schema(spec), registry=registry, format_checker=FormatChecker() if formats else None
    )


def sample(spec: TopicSpec) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(sample_events()[spec].model_dump_json())
    return event


def errors(spec: TopicSpec, event: dict[str, Any], *, formats: bool = True) -> list[str]:
    return [
        "/".join(str(p) for p in error.absolute_path)
        for error in validator(spec, formats=formats).iter_errors(event)
    ]


def test_the_metaschema_declares_format_assertion_and_is_committed() -> None:
    assert META_PATH.read_text(encoding="utf-8") == rendered_metaschema()
    assert META["$vocabulary"][FORMAT_ASSERTION] is True
    Draft202012Validator.check_schema(META)


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.name)
def test_every_schema_is_valid_draft_2020_12_and_accepts_its_sample_event(
    spec: TopicSpec,
) -> None:
    Draft202012Validator.check_schema(schema(spec))
    assert schema(spec)["$schema"] == META["$id"]
    assert errors(spec, sample(spec)) == []


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.name)
@pytest.mark.parametrize("formats", [True, False], ids=["with-format", "plain"])
def test_a_naive_timestamp_fails_in_any_validator(spec: TopicSpec, formats: bool) -> None:
    event = sample(spec) | {"occurred_at": "2026-03-02T09:30:00"}
    assert errors(spec, event, formats=formats) == ["occurred_at"]
    with pytest.raises(ValidationError):  # and the model refuses it as well
        spec.model.model_validate_json(json.dumps(event))


@pytest.mark.parametrize("formats", [True, False], ids=["with-format", "plain"])
def test_naive_timestamps_fail_in_nested_and_optional_fields(formats: bool) -> None:
    appointment = sample(APPOINTMENTS) | {"end": "2026-03-02T10:00:00"}
    assert errors(APPOINTMENTS, appointment, formats=formats) == ["end"]
    plan = sample(PLANS)
    plan["stages"][0]["completed_at"] = "2026-02-20 10:00"
    assert errors(PLANS, plan, formats=formats) == ["stages/0/completed_at"]


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "+02:00", "Europe", "Vilnius", "Europe/Vilnius ", "CET+1"]
)
def test_an_unknown_zone_fails_the_schema_and_the_model(zone: str) -> None:
    event = sample(CONTACTS) | {"timezone": zone}
    assert errors(CONTACTS, event) == ["timezone"]
    if zone == "Europe":
        return  # a tzdata directory: the model's own refusal is issue 19's (schemas/base.py)
    with pytest.raises(ValidationError):
        CONTACTS.model.model_validate_json(json.dumps(event))


def test_a_well_formed_name_tzdata_does_not_know_is_left_to_the_consumer() -> None:
    # What the descriptions say: the pattern checks the shape, the consumer checks tzdata.
    event = sample(CONTACTS) | {"timezone": "Europe/Atlantis"}
    assert errors(CONTACTS, event) == []
    with pytest.raises(ValidationError):
        CONTACTS.model.model_validate_json(json.dumps(event))
    assert "tzdata" in schema(CONTACTS)["properties"]["timezone"]["description"]


def test_the_zone_pattern_admits_every_canonical_tzdata_zone() -> None:
    pattern = re.compile(IANA_ZONE)
    areas = ["Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic", "Australia"]
    areas += ["Europe", "Indian", "Pacific", "Etc"]
    canonical = {
        z for z in zoneinfo.available_timezones() if z.split("/")[0] in areas or z == "UTC"
    }
    assert len(canonical) > 400
    assert sorted(z for z in canonical if not pattern.match(z)) == []


def test_the_timestamp_pattern_admits_rfc_3339_with_an_offset() -> None:
    pattern = re.compile(AWARE_DATETIME)
    for good in ["2026-03-02T09:30:00+02:00", "2026-03-02T07:30:00Z", "2026-03-02t07:30:00.5z"]:
        assert pattern.match(good), good
    for bad in ["2026-03-02T09:30:00", "2026-03-02", "2026-03-02T09:30:00+0200"]:
        assert not pattern.match(bad), bad


def test_end_before_start_is_explained_where_the_schema_cannot_check_it() -> None:
    event = sample(APPOINTMENTS) | {"end": "2026-03-02T09:00:00+02:00"}
    assert errors(APPOINTMENTS, event) == []  # a rule across fields: JSON Schema cannot say it
    with pytest.raises(ValidationError, match="end is before start"):
        APPOINTMENTS.model.model_validate_json(json.dumps(event))
    assert "not be before start" in schema(APPOINTMENTS)["properties"]["end"]["description"]


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.name)
def test_every_field_is_described_for_integrators(spec: TopicSpec) -> None:
    published = schema(spec)
    objects = [(published["title"], published), *published.get("$defs", {}).items()]
    undescribed = [
        f"{title}.{name}"
        for title, obj in objects
        for name, prop in obj.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert undescribed == []
    assert "patient_id" in published["properties"]
    assert published["x-key"] == "patient_id"
