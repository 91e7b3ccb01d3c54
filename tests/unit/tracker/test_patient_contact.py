"""Issue 15 in the tracker: proxies from HL7 NK1 and FHIR Patient.contact, preferences and
the patient's zone from FHIR Patient extensions (ids-only PatientStatusEvent)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from services.tracker.fhir_mapping import (
    CONTACT_WINDOW_EXTENSION,
    PREFERRED_CHANNEL_EXTENSION,
    TIMEZONE_EXTENSION,
    Invalid,
    patient_events,
)
from tests.unit.tracker.hl7_samples import siu
from tests.unit.tracker.test_hl7 import mapped

NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def with_nk1(born: str, *nk1: str) -> str:
    text = siu("S12", "M-NK1").replace("|19800101|", f"|{born}|")
    return text + "".join(f"{segment}\r" for segment in nk1)


def test_hl7_a_minor_is_reached_through_the_guardian_not_the_next_of_kin() -> None:
    text = with_nk1(
        "20150501",
        "NK1|1|Jonaitis^Petras|N^Next of kin^HL70063||+37060000090",
        "NK1|2|Kazlauskiene^Rasa|MTH^Mother^HL70063||+37060000091",
    )
    contact = mapped(text).contact
    assert contact is not None and contact.proxy is not None
    assert (contact.proxy.relationship, contact.proxy.reason) == ("parent", "minor")
    assert (contact.proxy.given_name, contact.proxy.phone) == ("Rasa", "+37060000091")
    assert contact.fields_sent is not None and "proxy" in contact.fields_sent


def test_hl7_an_adult_reached_through_the_proxy_they_named() -> None:
    text = with_nk1("19400101", "NK1|1|Petraitis^Jonas|CGV^Caregiver^HL70063||+37060000092")
    contact = mapped(text).contact
    assert contact is not None and contact.proxy is not None
    assert (contact.proxy.relationship, contact.proxy.reason) == ("caregiver", "named")
    # A next of kin alone is nobody to write to instead of an adult patient.
    alone = mapped(with_nk1("19400101", "NK1|1|Petraitis^Jonas|N^Next of kin||+37060000093"))
    assert alone.contact is not None and alone.contact.proxy is None
    # Without NK1 the stored proxy is left as it is (not news).
    plain = mapped(siu("S12", "M-plain")).contact
    assert plain is not None and plain.fields_sent is not None
    assert "proxy" not in plain.fields_sent


def patient(**extra: Any) -> dict[str, Any]:
    base = {"resourceType": "Patient", "id": "p-1", "name": [{"family": "K", "given": ["Ona"]}]}
    return base | extra


def test_fhir_contact_guardian_of_a_child_and_the_preferred_language() -> None:
    body = patient(
        birthDate="2016-02-29",
        communication=[
            {"language": {"coding": [{"code": "en"}]}},
            {"language": {"coding": [{"code": "ru"}]}, "preferred": True},
        ],
        contact=[
            {
                "relationship": [{"coding": [{"code": "GUARD"}]}],
                "name": {"family": "K", "given": ["Rasa"]},
                "telecom": [{"system": "email", "value": "rasa@example.org"}],
            }
        ],
    )
    contact, status = patient_events(body, path_id=None, zone="Europe/Vilnius", now=NOW)
    assert contact.language == "ru"
    assert contact.proxy is not None and contact.proxy.email == "rasa@example.org"
    assert (contact.proxy.relationship, contact.proxy.reason) == ("guardian", "minor")
    # No preference, no own zone: for the scheduler only the child's birth date.
    assert status is not None and status.birth_date == date(2016, 2, 29)
    assert (status.timezone, status.preferred_channel, status.contact_window) == (None,) * 3


def test_fhir_preferences_and_zone_travel_without_contact_details() -> None:
    body = patient(
        extension=[
            {"url": PREFERRED_CHANNEL_EXTENSION, "valueCode": "call"},
            {"url": CONTACT_WINDOW_EXTENSION, "valueString": "17:00-20:00"},
            {"url": TIMEZONE_EXTENSION, "valueCode": "America/New_York"},
        ],
        telecom=[{"system": "phone", "value": "+37060000001"}],
    )
    contact, status = patient_events(body, path_id=None, zone="Europe/Vilnius", now=NOW)
    assert contact.timezone == "America/New_York"
    assert status is not None and status.status == "active"
    assert (status.timezone, status.preferred_channel) == ("America/New_York", "call_task")
    assert status.contact_window is not None and status.contact_window.start == "17:00"
    dumped = status.model_dump_json()
    assert "+37060000001" not in dumped and "Ona" not in dumped


@pytest.mark.parametrize(
    ("url", "value", "where"),
    [
        (PREFERRED_CHANNEL_EXTENSION, {"valueCode": "pigeon"}, "preferred-channel"),
        (CONTACT_WINDOW_EXTENSION, {"valueString": "evenings"}, "contact-window"),
    ],
)
def test_fhir_a_bad_preference_is_refused_naming_the_element(
    url: str, value: dict[str, str], where: str
) -> None:
    with pytest.raises(Invalid) as refused:
        patient_events(
            patient(extension=[{"url": url, **value}]),
            path_id=None,
            zone="Europe/Vilnius",
            now=NOW,
        )
    assert where in refused.value.expression
