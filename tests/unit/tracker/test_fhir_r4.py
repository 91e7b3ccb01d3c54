"""FHIR R4 as the specification shapes it: its own examples, CarePlan rules, references,
hostile bodies, and a property: the mapping gives events or a clear refusal, never a crash."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.base import Envelope
from services.tracker.fhir_mapping import (
    Invalid,
    appointment_event,
    care_plan_event,
    patient_events,
)
from tests.unit.tracker.fhir_mutations import mutated
from tests.unit.tracker.fhir_samples import (
    EXAMPLE_NAMES,
    REFUSED,
    fhir_appointment,
    fhir_care_plan,
    fhir_patient,
    r4_example,
)

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
ZONE = "Europe/Vilnius"


def map_any(body: dict[str, Any], path_id: str | None = None) -> list[Envelope]:
    kind = body.get("resourceType")
    if kind == "Appointment":
        return [appointment_event(body, path_id=path_id, zone=ZONE, department="general", now=NOW)]
    if kind == "Patient":
        contact, status = patient_events(body, path_id=path_id, zone=ZONE, now=NOW)
        return [contact] if status is None else [contact, status]
    return [care_plan_event(body, path_id=path_id, zone=ZONE, department="general", now=NOW)]


def test_every_careplan_appointment_and_patient_example_of_r4_is_here() -> None:
    kinds = [name.split("-")[0] for name in EXAMPLE_NAMES]
    assert (kinds.count("careplan"), kinds.count("appointment"), kinds.count("patient")) == (
        11,
        3,
        20,
    )


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_the_specifications_examples_are_stored_or_refused_with_the_element(name: str) -> None:
    body = r4_example(name)
    if name in REFUSED:
        with pytest.raises(Invalid) as refused:
            map_any(body)
        assert refused.value.expression == REFUSED[name]
        return
    events = map_any(body)
    assert events and events[0].source == "tracker.fhir"
    assert getattr(events[0], "patient_id", None)


def test_careplan_without_author_is_stored_with_no_responsible_practitioner() -> None:
    # R4 CarePlan.author is 0..1; 10 of the 11 examples have none.
    plan = care_plan_event(
        r4_example("careplan-example-f001-heart.json"),
        path_id=None,
        zone=ZONE,
        department="cardio",
        now=NOW,
    )
    assert (plan.plan_id, plan.patient_id, plan.responsible_practitioner_id) == (
        "f001",
        "f001",
        None,
    )
    assert [s.name for s in plan.stages] == ["Operation on heart"]  # the coding's display


@pytest.mark.parametrize(
    ("author", "contributor", "responsible"),
    [
        ({"reference": "Practitioner/dr-7"}, [], "dr-7"),
        ({"reference": "https://ehr.example/fhir/Practitioner/dr-7/_history/2"}, [], "dr-7"),
        ({"reference": "Organization/clinic"}, [{"reference": "Practitioner/dr-9"}], "dr-9"),
        ({"reference": "CareTeam/team-1"}, [], None),
        ({"display": "Dr Adam Careful"}, [], None),
    ],
)
def test_author_of_any_r4_type_is_accepted(
    author: dict[str, str], contributor: list[dict[str, str]], responsible: str | None
) -> None:
    body = fhir_care_plan() | {"author": author, "contributor": contributor}
    plan = care_plan_event(body, path_id=None, zone=ZONE, department="dental", now=NOW)
    assert plan.responsible_practitioner_id == responsible


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ({"text": "Implant", "coding": [{"code": "x", "display": "y"}]}, "Implant"),
        (
            {"coding": [{"system": "http://snomed.info/sct", "code": "1", "display": "Crown"}]},
            "Crown",
        ),
        ({"coding": [{"code": "nursecon"}]}, "nursecon"),
        ({"coding": [{"code": "a"}, {"code": "b", "display": "Bridge"}]}, "Bridge"),
        ({"coding": [{"system": "http://x.example"}]}, "Check healing first."),
    ],
)
def test_stage_name_is_text_else_display_else_code_else_description(
    code: dict[str, Any], name: str
) -> None:
    body = fhir_care_plan()
    body["activity"][1]["detail"]["code"] = code
    plan = care_plan_event(body, path_id=None, zone=ZONE, department="dental", now=NOW)
    assert plan.stages[1].name == name


def test_a_stage_with_no_name_at_all_is_refused_with_the_element() -> None:
    body = fhir_care_plan()
    body["activity"][1]["detail"]["code"] = {"coding": [{"system": "http://x.example"}]}
    del body["activity"][1]["detail"]["description"]  # else the description names it
    with pytest.raises(Invalid) as refused:
        care_plan_event(body, path_id=None, zone=ZONE, department="dental", now=NOW)
    assert refused.value.expression == "CarePlan.activity[1].detail.code"


def test_a_completion_given_as_a_date_is_that_days_start_in_the_clinics_zone() -> None:
    body = fhir_care_plan()
    body["activity"][0]["detail"]["scheduledPeriod"] = {"end": "2026-03-02"}
    plan = care_plan_event(body, path_id=None, zone=ZONE, department="dental", now=NOW)
    assert plan.stages[0].completed_at == datetime(2026, 3, 2, tzinfo=ZoneInfo(ZONE))


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/p-1",
        "Patient/p-1/_history/4",
        "https://ehr.example/fhir/Patient/p-1",
        "http://ehr.example/base/R4/Patient/p-1/_history/4",
    ],
)
def test_relative_versioned_and_absolute_references_name_the_same_patient(
    reference: str,
) -> None:
    participants = [
        {"actor": {"reference": reference}, "status": "accepted"},
        {
            "actor": {"reference": "https://ehr.example/fhir/Practitioner/dr-7"},
            "status": "accepted",
        },
    ]
    event = appointment_event(
        fhir_appointment(participant=participants),
        path_id="apt-1",
        zone=ZONE,
        department="general",
        now=NOW,
    )
    assert (event.patient_id, event.practitioner_id) == ("p-1", "dr-7")
    plan = care_plan_event(
        fhir_care_plan() | {"subject": {"reference": reference}},
        path_id=None,
        zone=ZONE,
        department="dental",
        now=NOW,
    )
    assert plan.patient_id == "p-1"


@pytest.mark.parametrize(
    "reference", ["Patient/", "#contained", "Group/p-1", "urn:uuid:1234", "x/Patient/p-1"]
)
def test_references_that_name_no_patient_are_refused(reference: str) -> None:
    participants = [{"actor": {"reference": reference}, "status": "accepted"}]
    with pytest.raises(Invalid) as refused:
        appointment_event(
            fhir_appointment(participant=participants),
            path_id="apt-1",
            zone=ZONE,
            department="general",
            now=NOW,
        )
    assert refused.value.expression == "Appointment.participant"


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        # fhir.resources let these through or raised its own AttributeError (a 500 before).
        (fhir_patient(communication=[{"language": None}]), "Patient.communication[0].language"),
        (fhir_patient(meta={"_versionId": "3"}), "Patient"),
        (fhir_appointment(meta={"_lastUpdated": 7}), "Appointment.meta._lastUpdated"),
        (fhir_patient(id="pat\x00-1"), "Patient.id"),
        # A contained resource of no known type: a KeyError inside fhir.resources before.
        (fhir_care_plan() | {"contained": [{"resourceType": "POST", "id": "x"}]}, "CarePlan"),
        (fhir_patient(name=[{"given": [{"deep": [[[[]]]]}]}]), "Patient.name[0].given[0]"),
    ],
)
def test_hostile_bodies_are_refused_with_the_element(body: dict[str, Any], expression: str) -> None:
    with pytest.raises(Invalid) as refused:
        map_any(body)
    assert refused.value.expression == expression
    assert "\x00" not in refused.value.reason


# --- property: anything a sender can put in a resource ends as events or a refusal ----------

SAMPLES = [fhir_appointment(), fhir_patient(), fhir_care_plan()] + [
    r4_example(name)
    for name in (
        "careplan-example.json",
        "careplan-example-f202-malignancy.json",  # contained resources
        "patient-example.json",
        "appointment-example2doctors.json",
    )
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(SAMPLES), st.one_of(st.none(), st.text(max_size=20)))
def test_the_mapping_gives_events_or_a_clear_refusal(
    body: dict[str, Any], path_id: str | None
) -> None:
    try:
        events = map_any(body, path_id)
    except Invalid as refused:
        assert refused.expression and refused.reason
        return
    assert events and all(isinstance(event, Envelope) for event in events)


def test_a_refusal_explains_the_form_instead_of_quoting_a_regex() -> None:
    with pytest.raises(Invalid) as refused:
        map_any(fhir_appointment(start="2026-03-02T09:30:00"), "apt-1")
    assert refused.value.expression == "Appointment.start"
    assert "regex" not in refused.value.reason and "offset" in refused.value.reason


def test_a_value_the_canonical_contract_refuses_is_named_by_its_field() -> None:
    participants = [
        {"actor": {"reference": "Patient/pat-1"}, "status": "accepted"},
        {"actor": {"reference": "Practitioner/" + "d" * 200}, "status": "accepted"},
    ]
    with pytest.raises(Invalid) as refused:
        map_any(fhir_appointment(participant=participants), "apt-1")
    assert refused.value.expression == "Appointment"
    assert refused.value.reason.startswith("practitioner_id:")


def _education(*parts: tuple[str, str, object]) -> dict[str, Any]:
    return {
        "url": "https://followup.example/fhir/StructureDefinition/patient-education",
        "extension": [{"url": name, kind: value} for name, kind, value in parts],
    }


def test_a_stage_carries_its_patient_education_per_language() -> None:
    body = fhir_care_plan()
    body["activity"][1]["detail"]["extension"] = [
        _education(
            ("language", "valueCode", "lt"),
            ("text", "valueString", "Implantas turi sugyti, kitaip gydymas užtruks."),
            ("url", "valueUri", "https://clinic.example/implant"),
        ),
        _education(("language", "valueCode", "en"), ("text", "valueString", "It must heal.")),
    ]
    plan = care_plan_event(body, path_id=None, zone=ZONE, department="dental", now=NOW)
    [lt, en] = plan.stages[1].education
    assert (lt.language, lt.url) == ("lt", "https://clinic.example/implant")
    assert lt.text.startswith("Implantas") and en.url is None
    assert plan.stages[0].education == []


def test_patient_education_without_a_text_is_refused_with_the_element() -> None:
    body = fhir_care_plan()
    body["activity"][1]["detail"]["extension"] = [_education(("language", "valueCode", "lt"))]
    with pytest.raises(Invalid) as refused:
        care_plan_event(body, path_id=None, zone=ZONE, department="dental", now=NOW)
    assert refused.value.expression.endswith("activity[1].detail.extension(patient-education)")
