"""FHIR R4 resources the clinic's system posts to the tracker: Patient, CarePlan, Appointment.

Plain JSON dictionaries (what goes on the wire); the unit tests validate them with
``fhir.resources`` (R4B, the same structures as R4 for these three resources).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from demo.scenario import Appointment, Patient
from demo.sites import clinic_zone, feed_names

TIMEZONE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/timezone"
MAX_INTERVAL_EXTENSION = "https://followup.example/fhir/StructureDefinition/max-interval-days"
STAGE_EXTENSION = "https://followup.example/fhir/StructureDefinition/treatment-stage"
DEPARTMENT_EXTENSION = "https://followup.example/fhir/StructureDefinition/department"
EDUCATION_EXTENSION = "https://followup.example/fhir/StructureDefinition/patient-education"
DEPARTMENT_SYSTEM = "https://followup.example/fhir/CodeSystem/department"
STAGE_SYSTEM = "https://followup.example/fhir/CodeSystem/treatment-stage"
CANCEL_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"

FhirStatus = Literal["booked", "arrived", "fulfilled", "cancelled", "noshow"]
Json = dict[str, Any]


def iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("FHIR instants need an aware datetime")
    return moment.isoformat()


def patient_resource(patient: Patient, died_at: datetime | None = None) -> Json:
    resource: Json = {
        "resourceType": "Patient",
        "id": patient.patient_id,
        "active": True,
        "identifier": [{"system": "urn:clinic:mrn", "value": patient.patient_id}],
        "name": [{"family": patient.family_name, "given": [patient.given_name]}],
        "telecom": [
            {"system": "phone", "value": patient.phone, "use": "mobile"},
            {"system": "email", "value": patient.email},
        ],
        "communication": [
            {
                "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": patient.language}]},
                "preferred": True,
            }
        ],
        "extension": [{"url": TIMEZONE_EXTENSION, "valueCode": patient.timezone}],
    }
    if patient.birth_date is not None:
        resource["birthDate"] = patient.birth_date.isoformat()  # a child's (adults: none sent)
    if died_at is not None:
        resource["deceasedDateTime"] = iso(died_at)
    return resource


def care_plan_resource(patient: Patient) -> Json:
    """Activities in order are the stages; the element id of each detail is the stage id."""
    activities: list[Json] = []
    for stage in patient.stages:
        detail: Json = {
            "id": stage.stage_id,
            "code": {
                "coding": [{"system": STAGE_SYSTEM, "code": stage.stage_id}],
                "text": stage.name,
            },
            "status": "completed" if stage.completed_at else "not-started",
        }
        if stage.completed_at is not None:
            detail["scheduledPeriod"] = {"end": iso(stage.completed_at)}
        if stage.notes:
            detail["description"] = stage.notes
        if stage.education:  # the stage explained, per language (issue 21)
            detail["extension"] = [
                {
                    "url": EDUCATION_EXTENSION,
                    "extension": [
                        {"url": "language", "valueCode": e.language},
                        {"url": "text", "valueString": e.text},
                        *([{"url": "url", "valueUri": e.url}] if e.url else []),
                    ],
                }
                for e in stage.education
            ]
        activity: Json = {"detail": detail}
        if stage.max_interval_days is not None:
            activity["extension"] = [
                {"url": MAX_INTERVAL_EXTENSION, "valueInteger": stage.max_interval_days}
            ]
        activities.append(activity)
    return {
        "resourceType": "CarePlan",
        "id": patient.plan_id,
        "status": "active",
        "intent": "plan",
        "subject": {"reference": f"Patient/{patient.patient_id}"},
        **_authors(patient),
        "category": [{"coding": [{"system": DEPARTMENT_SYSTEM, "code": patient.department}]}],
        "extension": [
            {"url": TIMEZONE_EXTENSION, "valueCode": clinic_zone(patient.site)},
            {"url": DEPARTMENT_EXTENSION, "valueId": patient.department},
        ],
        "activity": activities,
    }


def appointment_resource(
    patient: Patient, appointment: Appointment, status: FhirStatus, *, by_patient: bool = False
) -> Json:
    resource: Json = {
        "resourceType": "Appointment",
        "id": appointment.appointment_id,
        "status": status,
        "serviceType": [
            {"coding": [{"system": DEPARTMENT_SYSTEM, "code": appointment.department}]}
        ],
        "start": iso(appointment.start),
        "end": iso(appointment.end),
        "minutesDuration": appointment.minutes,
        "basedOn": [{"reference": f"CarePlan/{patient.plan_id}"}],
        "supportingInformation": [{"reference": f"CarePlan/{patient.plan_id}"}],
        "extension": [
            {"url": TIMEZONE_EXTENSION, "valueCode": clinic_zone(patient.site)},
            {"url": STAGE_EXTENSION, "valueId": appointment.stage_id},
        ],
        "participant": [
            {
                "actor": {"reference": f"Patient/{patient.patient_id}"},
                "status": "accepted",
            },
            {
                "actor": {"reference": f"Practitioner/{appointment.practitioner_id}"},
                "status": "accepted",
            },
            {
                # A chain's clinic is the Location the visit is at (its site, issue 22).
                "actor": {"reference": f"Location/{_location(patient, appointment)}"},
                "status": "accepted",
            },
        ],
    }
    if status == "cancelled":
        code = "pat" if by_patient else "prov"
        resource["cancelationReason"] = {"coding": [{"system": CANCEL_REASON_SYSTEM, "code": code}]}
    return resource


def _authors(patient: Patient) -> Json:
    """The plan's author: the doctor, or at a chain's clinic the clinic (Organization, its
    site) with the doctor as the first contributor (the tracker's responsible doctor)."""
    doctor = {"reference": f"Practitioner/{patient.practitioner_id}"}
    supervisor = {"reference": f"Practitioner/{patient.supervisor_id}"}
    if patient.site is None:
        return {"author": doctor, "contributor": [supervisor]}
    organization = feed_names(patient.site).fhir_organization
    return {
        "author": {"reference": f"Organization/{organization}"},
        "contributor": [doctor, supervisor],
    }


def _location(patient: Patient, appointment: Appointment) -> str:
    if patient.site is None:
        return appointment.department
    return feed_names(patient.site).fhir_location
