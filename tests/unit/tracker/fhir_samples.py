"""FHIR R4 resources as a scheduling system sends them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.tracker.fhir_mapping import MAX_INTERVAL_EXTENSION, STAGE_EXTENSION

# The R4 specification's own examples (source and licence in the folder's README).
EXAMPLES = Path(__file__).parent / "fhir_r4_examples"
EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.glob("*.json"))
# The examples we cannot store, and the element each refusal names.
REFUSED = {
    "appointment-example-request.json": "Appointment.start",  # proposed, no time yet
    "careplan-example-obesity-narrative.json": "CarePlan.activity",  # narrative, no stages
}


def r4_example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    return body


def fhir_appointment(status: str = "booked", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": "apt-1",
        "meta": {"versionId": "3", "lastUpdated": "2026-03-01T10:00:00+02:00"},
        "status": status,
        "start": "2026-03-02T09:30:00+02:00",
        "end": "2026-03-02T10:00:00+02:00",
        "participant": [
            {"actor": {"reference": "Patient/pat-1"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/dr-7"}, "status": "accepted"},
            {"actor": {"reference": "Location/dental"}, "status": "accepted"},
        ],
        "supportingInformation": [{"reference": "CarePlan/plan-1"}],
        "extension": [{"url": STAGE_EXTENSION, "valueId": "s2"}],
    }
    body.update(extra)
    return body


def fhir_patient(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "pat-1",
        "name": [{"family": "Kazlauskiene", "given": ["Ona"]}],
        "telecom": [
            {"system": "phone", "value": "+37060000001"},
            {"system": "email", "value": "ona@example.org"},
        ],
        "communication": [{"language": {"coding": [{"code": "lt"}]}}],
    }
    body.update(extra)
    return body


def fhir_care_plan() -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "id": "plan-1",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/pat-1"},
        "author": {"reference": "Practitioner/dr-7"},
        "activity": [
            {
                "detail": {
                    "id": "s1",
                    "status": "completed",
                    "code": {"text": "Extraction"},
                    "scheduledPeriod": {"end": "2026-03-02T10:00:00+02:00"},
                }
            },
            {
                "extension": [{"url": MAX_INTERVAL_EXTENSION, "valueInteger": 90}],
                "detail": {
                    "id": "s2",
                    "status": "scheduled",
                    "code": {"text": "Implant"},
                    "description": "Check healing first.",
                },
            },
        ],
    }


def fhir_transferred_patient(marker: str = "extension") -> dict[str, Any]:
    """An inactive Patient with one of the documented transfer markers."""
    if marker == "extension":
        return fhir_patient(
            active=False,
            extension=[
                {
                    "url": "https://followup.example/fhir/StructureDefinition/transferred-out",
                    "valueDateTime": "2026-02-28T16:00:00+02:00",
                }
            ],
        )
    return fhir_patient(
        active=False,
        link=[
            {
                "type": "replaced-by",
                "other": {
                    "reference": "https://fhir.klaipeda-hospital.example/Patient/K-77",
                    "display": "Klaipeda University Hospital",
                },
            }
        ],
    )
