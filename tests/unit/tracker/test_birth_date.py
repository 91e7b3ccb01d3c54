"""Issue 18 in the tracker: the patient's birth date from HL7 PID-7 and FHIR
Patient.birthDate onto the contact (followup.contacts), and a child's alone onto the
ids-only followup.patients for the scheduler's rule on children who were not brought."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from services.tracker.fhir_mapping import patient_events
from tests.unit.tracker.test_hl7 import mapped

NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
EXAMPLES = Path(__file__).parent / "fhir_r4_examples"
CORPUS = Path(__file__).parents[2] / "corpus" / "hl7"


def lyniate_s12(pid7: str) -> str:
    """The Lyniate/Corepoint published SIU^S12 (GPMS -> MED2000, tests/corpus/hl7/
    18-lyniate-s12.hl7, v2.3, PID-7 as YYYYMMDD) with another PID-7."""
    raw = (CORPUS / "18-lyniate-s12.hl7").read_bytes().decode("ascii")
    assert "||20080205|" in raw
    return raw.replace("||20080205|", f"||{pid7}|")


@pytest.mark.parametrize(
    ("pid7", "born"),
    [
        ("20180412", date(2018, 4, 12)),  # DT, v2.3 and the corpus's vendors
        ("201804120730", date(2018, 4, 12)),  # DTM with the time of birth (v2.5+)
        ("20180412073015+0300", date(2018, 4, 12)),  # DTM with seconds and an offset
    ],
)
def test_hl7_pid7_is_the_contacts_birth_date(pid7: str, born: date) -> None:
    result = mapped(lyniate_s12(pid7))
    assert result.contact is not None and result.contact.birth_date == born
    assert result.contact.fields_sent is not None and "birth_date" in result.contact.fields_sent
    # A child: the scheduler learns the birth date, and nothing else of the contact.
    status = result.patient_status
    assert status is not None and (status.status, status.birth_date) == ("active", born)
    assert status.fields_sent == ["birth_date"]  # HL7 says nothing of the status here
    dumped = status.model_dump_json()
    assert "SMITH" not in dumped and "555-0101" not in dumped


def test_hl7_an_adults_birth_date_stays_on_the_contact() -> None:
    result = mapped((CORPUS / "18-lyniate-s12.hl7").read_text(encoding="ascii"))
    assert result.contact is not None and result.contact.birth_date == date(2008, 2, 5)
    assert result.patient_status is None  # 18 on 2026-02-05: not the scheduler's business


@pytest.mark.parametrize("pid7", ["2018", "20181340", "19000000", ""])
def test_hl7_a_pid7_that_is_no_whole_date_is_left_out_not_refused(pid7: str) -> None:
    result = mapped(lyniate_s12(pid7))
    assert result.appointment is not None  # the visit is what matters
    assert result.contact is not None and result.contact.birth_date is None
    assert result.patient_status is None


def test_fhir_birth_date_of_the_specifications_infant_twin() -> None:
    # FHIR R4's own example (birthDate with a birthTime extension, the mother as contact).
    body = json.loads((EXAMPLES / "patient-example-infant-twin-1.json").read_text())
    contact, status = patient_events(body, path_id=None, zone="Europe/Vilnius", now=NOW)
    assert contact.birth_date == date(2017, 5, 15)
    assert status is not None and status.birth_date == date(2017, 5, 15)
    assert status.fields_sent is None  # a FHIR Patient is a whole snapshot (alive)
    assert "Jaina" not in status.model_dump_json()


def test_fhir_an_adults_birth_date_goes_to_no_one_but_the_contact() -> None:
    body = json.loads((EXAMPLES / "patient-example.json").read_text())
    contact, status = patient_events(body, path_id=None, zone="Europe/Vilnius", now=NOW)
    assert contact.birth_date == date(1974, 12, 25)
    assert status is None or status.birth_date is None


def test_fhir_a_birth_year_alone_says_no_age() -> None:
    body = {"resourceType": "Patient", "id": "p-2", "birthDate": "2019"}
    contact, status = patient_events(body, path_id=None, zone="Europe/Vilnius", now=NOW)
    assert contact.birth_date is None and status is None
