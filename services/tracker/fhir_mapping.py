"""FHIR R4 resources -> canonical events. Pure: a JSON object and a clock in.

The resources are validated with the fhir.resources models (its R4B package, which is R4
for Appointment, Patient and CarePlan as used here); the rules FHIR leaves to the
profile (the status code set, a patient participant, a start time) are checked here.

- Appointment: id, status (FHIR codes, kept as they are), start/end, participant actors
  Patient/<id> (required), Practitioner/<id>, Location/<id> (the department),
  cancelationReason code "pat*" = cancelled by the patient, supportingInformation
  CarePlan/<plan_id> with the extension STAGE_EXTENSION (valueId) naming the stage.
- Patient: name, telecom (phone/email), communication language -> ContactEvent;
  deceasedBoolean true / deceasedDateTime -> PatientStatusEvent deceased; active false
  together with a transfer marker (TRANSFER_EXTENSION, or a link "replaced-by" to a record
  of another organisation) -> PatientStatusEvent transferred_out.
- CarePlan: subject Patient/<id>, activities in order are the stages. A stage's name is
  detail.code.text, else the first coding's display, else its code, else detail.description
  (cut to 200 characters), else (an activity that only references its step)
  activity.reference.display; detail.description is also the doctor's
  notes, detail.status completed with detail.scheduledPeriod.end the completion (a date
  alone: that day's start in the clinic's zone), MAX_INTERVAL_EXTENSION (valueInteger days)
  on an activity. author is optional (0..1, any R4 type): the responsible practitioner is
  author Practitioner/<id>, else the first contributor Practitioner/<id>, else none. The
  department comes from the extension DEPARTMENT_EXTENSION (valueId) or the configuration.

References are relative (``Patient/p-1``), versioned (``Patient/p-1/_history/2``) or
absolute (``https://ehr.example/fhir/Patient/p-1``); the id is what we keep.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from common.codec import describe
from schemas.events import (
    AppointmentEvent,
    ContactEvent,
    PatientStatusEvent,
    ProxyContact,
    TreatmentPlanEvent,
    TreatmentStage,
)
from services.tracker.hl7_siu import deceased, transferred_out
from services.tracker.proxies import Candidate, choose_proxy, is_minor

SOURCE = "tracker.fhir"
BASE = "https://followup.example/fhir/StructureDefinition/"
STAGE_EXTENSION = BASE + "treatment-stage"
MAX_INTERVAL_EXTENSION = BASE + "max-interval-days"
DEPARTMENT_EXTENSION = BASE + "department"
# On Patient: valueDateTime (when the patient left our care) or valueBoolean true.
TRANSFER_EXTENSION = BASE + "transferred-out"
TIMEZONE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/timezone"
# On Patient: valueCode sms | email | call (how the patient wants to be reached first) and
# valueString "HH:MM-HH:MM" (when, in their own zone).
PREFERRED_CHANNEL_EXTENSION = BASE + "preferred-channel"
CONTACT_WINDOW_EXTENSION = BASE + "contact-window"
CHANNEL_CODES = {"sms": "sms", "email": "email", "call": "call_task", "phone": "call_task"}
_WINDOW = re.compile(r"^(\d{2}:\d{2})-(\d{2}:\d{2})$")

STATUSES = frozenset(
    {
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
        "checked-in",
        "waitlist",
    }
)
CHANGES = {
    "booked": "booked",
    "cancelled": "cancelled",
    "noshow": "noshow",
    "entered-in-error": "deleted",
}


class Invalid(Exception):
    """A resource we refuse; ``expression`` points at the element (FHIRPath-like)."""

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(reason)
        self.expression = expression
        self.reason = reason


def _validate(model: Any, body: dict[str, Any], kind: str) -> Any:
    if body.get("resourceType") != kind:
        raise Invalid("resourceType", f"expected resourceType {kind}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise Invalid(_element(kind, exc), _reason(exc)) from None
    except Exception:
        # fhir.resources fails on some malformed shapes with its own errors, not a
        # ValidationError: a primitive's "_x" sibling that is not an object (AttributeError),
        # a contained resource of an unknown type (KeyError), nesting deeper than the stack.
        raise Invalid(kind, f"not a readable FHIR R4 {kind}") from None


def _reason(exc: ValidationError) -> str:
    """fhir.resources' reason, except that a regex is no help to an integrator."""
    reason = describe(exc)[0]
    if "regex" in reason or "pattern" in reason:
        where = reason.split(":", 1)[0]
        timed = any(word in reason for word in ("Instant", "DateTime", "Time"))
        hint = " (a date with a time needs its UTC offset)" if timed else ""
        return f"{where}: not in the form FHIR R4 requires{hint}"
    return reason


def _element(kind: str, exc: ValidationError) -> str:
    """The first failing element as a FHIRPath-like expression: Patient.name[0].given."""
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    path = kind
    for part in errors[0]["loc"] if errors else ():
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "root" and "[" not in part:  # pydantic's own steps are not elements
            path += f".{part}"
    return path


def _ref_id(reference: str | None, kind: str) -> str | None:
    """The id in a reference to ``kind``: relative, versioned or absolute; else None."""
    if not reference:
        return None
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    absolute = reference.startswith(("http://", "https://"))
    if len(parts) >= 2 and parts[-2] == kind and (len(parts) == 2 or absolute) and parts[-1]:
        return parts[-1]
    return None


def _extension(element: Any, url: str) -> Any:
    for extension in getattr(element, "extension", None) or []:
        if extension.url == url:
            for name in ("valueId", "valueString", "valueInteger", "valueCode"):
                value = getattr(extension, name, None)
                if value is not None:
                    return value
    return None


def _event_id(kind: str, resource_id: str, meta: Any, body: dict[str, Any]) -> str:
    version = getattr(meta, "versionId", None) if meta is not None else None
    if not version:
        # No version: the content itself identifies this revision (a resend is a duplicate).
        version = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return f"fhir:{kind}/{resource_id}/{version}"


def _when(meta: Any, now: datetime) -> datetime:
    updated = getattr(meta, "lastUpdated", None) if meta is not None else None
    return updated if isinstance(updated, datetime) else now


def _build(kind: str, builder: Any, *args: Any, **fields: Any) -> Any:
    """A canonical event from what the resource said; what the contract refuses (a year 1,
    an id it cannot take) is the resource's fault, named by the canonical field."""
    try:
        return builder(*args, **fields)
    except ValidationError as exc:
        raise Invalid(kind, _reason(exc)) from None


def appointment_event(
    body: dict[str, Any], *, path_id: str | None, zone: str, department: str, now: datetime
) -> AppointmentEvent:
    resource: Appointment = _validate(Appointment, body, "Appointment")
    resource_id = resource.id or path_id
    if path_id is not None and resource.id is not None and resource.id != path_id:
        raise Invalid("Appointment.id", "id in the body differs from the id in the URL")
    if not resource_id:
        raise Invalid("Appointment.id", "the appointment needs an id")
    if resource.status not in STATUSES:
        raise Invalid("Appointment.status", "not an Appointment status code")
    if resource.start is None:
        raise Invalid("Appointment.start", "start is required")
    patient_id = practitioner_id = location_id = None
    for participant in resource.participant or []:
        reference = participant.actor.reference if participant.actor else None
        patient_id = patient_id or _ref_id(reference, "Patient")
        practitioner_id = practitioner_id or _ref_id(reference, "Practitioner")
        location_id = location_id or _ref_id(reference, "Location")
    if patient_id is None:
        raise Invalid("Appointment.participant", "no participant with actor Patient/<id>")
    cancelled_by = None
    if resource.status == "cancelled":
        codes = [
            c.code or ""
            for c in (resource.cancelationReason.coding or [] if resource.cancelationReason else [])
        ]
        if any(code.startswith("pat") for code in codes):
            cancelled_by = "patient"
        elif any(codes):  # a reason that is not the patient's; none given: not known
            cancelled_by = "clinic"
    plan_id = None
    for info in resource.supportingInformation or []:
        plan_id = plan_id or _ref_id(info.reference, "CarePlan")
    occurred_at = _when(resource.meta, now)
    event: AppointmentEvent = _build(
        "Appointment",
        AppointmentEvent,
        event_id=_event_id("Appointment", resource_id, resource.meta, body),
        occurred_at=occurred_at,
        source=SOURCE,
        change=CHANGES.get(resource.status, "status_changed"),
        appointment_id=resource_id,
        patient_id=patient_id,
        start=resource.start,
        end=resource.end,
        timezone=zone,
        department=location_id or department,
        practitioner_id=practitioner_id,
        status=resource.status,
        status_at=occurred_at,
        cancelled_by=cancelled_by,
        plan_id=plan_id,
        stage_id=_extension(resource, STAGE_EXTENSION) if plan_id else None,
    )
    return event


def patient_events(
    body: dict[str, Any], *, path_id: str | None, zone: str, now: datetime
) -> tuple[ContactEvent, PatientStatusEvent | None]:
    resource: Patient = _validate(Patient, body, "Patient")
    patient_id = resource.id or path_id
    if not patient_id:
        raise Invalid("Patient.id", "the patient needs an id")
    name = resource.name[0] if resource.name else None
    phone = email = None
    for telecom in resource.telecom or []:
        if telecom.system == "phone" and phone is None:
            phone = telecom.value
        elif telecom.system == "email" and email is None:
            email = telecom.value
    language = None
    for number, communication in enumerate(resource.communication or []):
        if communication.language is None:  # 1..1 in R4; fhir.resources lets null through
            raise Invalid(f"Patient.communication[{number}].language", "language is required")
        for coding in communication.language.coding or []:
            if coding.code and (language is None or communication.preferred):
                language = coding.code.lower()  # the first one, or the one marked preferred
                break
    language = language or "en"
    died = bool(resource.deceasedBoolean) or resource.deceasedDateTime is not None
    occurred_at = _when(resource.meta, now)
    transferred_at = None if died else _transferred_at(resource, occurred_at)
    event_id = _event_id("Patient", patient_id, resource.meta, body)
    contact = _build(
        "Patient",
        ContactEvent,
        event_id=event_id,
        occurred_at=occurred_at,
        source=SOURCE,
        patient_id=patient_id,
        given_name=" ".join(g for g in name.given if g) if name and name.given else None,
        family_name=name.family if name is not None else None,
        phone=phone,
        email=email,
        language=language,
        timezone=_patient_zone(resource, zone),
        status="deceased"
        if died
        else ("transferred_out" if transferred_at is not None else "active"),
        proxy=_proxy(resource, now),
        birth_date=_birth_date(resource),
    )
    status = None
    if not died and transferred_at is None:
        status = _preferences(resource, patient_id, event_id, occurred_at)
    if died:
        when = resource.deceasedDateTime
        status = _build(
            "Patient",
            deceased,
            patient_id,
            source=SOURCE,
            occurred_at=occurred_at,
            effective_at=when if isinstance(when, datetime) and when.tzinfo else occurred_at,
        )
    if transferred_at is not None:
        status = _build(
            "Patient",
            transferred_out,
            patient_id,
            source=SOURCE,
            occurred_at=occurred_at,
            effective_at=transferred_at,
        )
    return contact, status


def _preferences(
    resource: Patient, patient_id: str, event_id: str, occurred_at: datetime
) -> PatientStatusEvent | None:
    """The patient's own zone and contact preferences for the scheduler (ids-only topic);
    None when the record says none of them."""
    zone = _patient_zone(resource, "")
    code = _extension(resource, PREFERRED_CHANNEL_EXTENSION)
    channel = None
    if code is not None:
        channel = CHANNEL_CODES.get(str(code).lower())
        if channel is None:
            raise Invalid("Patient.extension(preferred-channel)", "not one of sms, email, call")
    window = None
    text = _extension(resource, CONTACT_WINDOW_EXTENSION)
    if text is not None:
        match = _WINDOW.match(str(text).strip())
        if match is None:
            raise Invalid("Patient.extension(contact-window)", "expected HH:MM-HH:MM")
        window = {"start": match.group(1), "end": match.group(2)}
    born = _birth_date(resource)
    if born is not None and not is_minor(born, occurred_at.date()):
        born = None  # only a child's goes to the scheduler (the safeguarding rule)
    if not (zone or channel or window or born):
        return None
    event: PatientStatusEvent = _build(
        "Patient",
        PatientStatusEvent.model_validate,
        {
            "event_id": f"patient-status:{event_id}",
            "occurred_at": occurred_at,
            "source": SOURCE,
            "patient_id": patient_id,
            "status": "active",
            "effective_at": occurred_at,
            "timezone": zone or None,
            "preferred_channel": channel,
            "contact_window": window,
            "birth_date": born,
        },
    )
    return event


def _proxy(resource: Patient, now: datetime) -> ProxyContact | None:
    """Patient.contact: a guardian or parent of a minor, or the proxy an adult named."""
    candidates = []
    for person in resource.contact or []:
        codes = [
            c.code for concept in person.relationship or [] for c in concept.coding or [] if c.code
        ]
        phone = email = None
        for telecom in person.telecom or []:
            if telecom.system == "phone" and phone is None:
                phone = telecom.value
            elif telecom.system == "email" and email is None:
                email = telecom.value
        name = person.name
        candidates.append(
            Candidate(
                codes,
                " ".join(g for g in name.given if g) if name and name.given else None,
                name.family if name else None,
                phone,
                email,
            )
        )
    return choose_proxy(candidates, minor=is_minor(_birth_date(resource), now.date()))


def _birth_date(resource: Patient) -> date | None:
    """Patient.birthDate when it is a whole date; a year or year-month alone (FHIR allows
    them) says too little for an age and is left out."""
    birth = resource.birthDate
    return birth if isinstance(birth, date) else None


def _patient_zone(resource: Patient, clinic_zone: str) -> str:
    """The patient's own time zone (FHIR's core timezone extension), else the clinic's.

    Quiet hours are the patient's: a patient living abroad must not be texted at night.
    """
    for extension in resource.extension or []:
        if extension.url == TIMEZONE_EXTENSION and extension.valueCode:
            zone = str(extension.valueCode)
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise Invalid("Patient.extension(timezone)", "not an IANA time zone name") from exc
            return zone
    return clinic_zone


def _transferred_at(resource: Patient, occurred_at: datetime) -> datetime | None:
    """When an inactive patient left for another organisation, None when not transferred.

    ``active: false`` alone says only that the record is not in use (a duplicate, an error);
    a "replaced-by" link to a Patient of our own server is a merge. A transfer needs the
    extension, or the replacing record on another server (an absolute reference) or under
    another organisation's identifier (``identifier.assigner``).
    """
    if resource.active is not False:
        return None
    for extension in resource.extension or []:
        if extension.url != TRANSFER_EXTENSION:
            continue
        when = extension.valueDateTime
        if isinstance(when, datetime) and when.tzinfo is not None:
            return when
        if extension.valueBoolean or when is not None:
            return occurred_at
    for link in resource.link or []:
        other = link.other
        elsewhere = (other.reference or "").startswith(("http://", "https://")) or (
            other.identifier is not None and other.identifier.assigner is not None
        )
        if link.type == "replaced-by" and elsewhere:
            return occurred_at
    return None


def care_plan_event(
    body: dict[str, Any], *, path_id: str | None, zone: str, department: str, now: datetime
) -> TreatmentPlanEvent:
    resource: CarePlan = _validate(CarePlan, body, "CarePlan")
    plan_id = resource.id or path_id
    if path_id is not None and resource.id is not None and resource.id != path_id:
        raise Invalid("CarePlan.id", "id in the body differs from the id in the URL")
    if not plan_id:
        raise Invalid("CarePlan.id", "the plan needs an id")
    patient_id = _ref_id(resource.subject.reference if resource.subject else None, "Patient")
    if patient_id is None:
        raise Invalid("CarePlan.subject", "subject must be a reference to Patient/<id>")
    stages = [
        _stage(activity, number, zone)
        for number, activity in enumerate(resource.activity or [], start=1)
    ]
    if not stages:
        raise Invalid("CarePlan.activity", "a plan needs at least one activity (stage)")
    plan: TreatmentPlanEvent = _build(
        "CarePlan",
        TreatmentPlanEvent,
        event_id=_event_id("CarePlan", plan_id, resource.meta, body),
        occurred_at=_when(resource.meta, now),
        source=SOURCE,
        plan_id=plan_id,
        patient_id=patient_id,
        department=_extension(resource, DEPARTMENT_EXTENSION) or department,
        timezone=zone,
        responsible_practitioner_id=_responsible(resource),
        stages=stages,
    )
    return plan


def _responsible(resource: CarePlan) -> str | None:
    """author Practitioner/<id>, else the first contributor who is a Practitioner.

    R4 allows any author type (Organization, CareTeam, PractitionerRole, the Patient...);
    those name no practitioner, and then escalations go to the plan's supervisor."""
    references = [resource.author] if resource.author else []
    references += resource.contributor or []
    for reference in references:
        found = _ref_id(reference.reference, "Practitioner")
        if found is not None:
            return found
    return None


def _stage(activity: Any, number: int, zone: str) -> TreatmentStage:
    detail = activity.detail
    name = _stage_name(activity)
    if name is None:
        where = f"CarePlan.activity[{number - 1}]" + (".detail.code" if detail else "")
        raise Invalid(where, "a stage needs a name: detail.code text, display or code")
    completed_at = None
    if detail is not None and detail.status == "completed" and detail.scheduledPeriod:
        completed_at = _moment(detail.scheduledPeriod.end, zone)
    stage_id = getattr(detail, "id", None) or activity.id or f"stage-{number}"
    stage: TreatmentStage = _build(
        "CarePlan",
        TreatmentStage,
        stage_id=stage_id,
        sequence=number,
        name=name[:200],
        max_interval_days=_extension(activity, MAX_INTERVAL_EXTENSION),
        notes=detail.description if detail is not None else None,
        completed_at=completed_at,
    )
    return stage


def _stage_name(activity: Any) -> str | None:
    detail = activity.detail
    code = detail.code if detail is not None else None
    if code is not None:
        if code.text and code.text.strip():
            return str(code.text).strip()
        for attribute in ("display", "code"):
            for coding in code.coding or []:
                value = getattr(coding, attribute, None)
                if value and str(value).strip():
                    return str(value).strip()
    if detail is not None and detail.description and str(detail.description).strip():
        return str(detail.description).strip()  # a step described only in words
    reference = activity.reference
    if detail is None and reference is not None and reference.display:
        return str(reference.display).strip() or None
    return None


def _moment(value: Any, zone: str) -> datetime | None:
    """A FHIR dateTime as an aware moment; a date alone is that day's start in the zone."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else None
    if isinstance(value, date):
        return datetime.combine(value, time(), ZoneInfo(zone))
    return None
