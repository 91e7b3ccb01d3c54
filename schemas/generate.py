"""Writes the JSON Schema of every topic's model under schemas/json (``make schemas``).

The schemas are what integrators validate against, often with a plain Draft 2020-12
validator that treats ``format`` as an annotation only. So what the models enforce is
spelled out where a schema can say it:

- timestamps: ``format: date-time`` (asserted, through our metaschema, which declares the
  format-assertion vocabulary) and a ``pattern`` that requires a UTC offset, so a naive
  timestamp fails in every validator, format assertion or not;
- time zones: a ``pattern`` of canonical IANA names (``Area/Location``, ``UTC``); the
  consumer still checks the name against the tz database it ships (a name the pattern
  admits, like ``Europe/Atlantis``, is dead-lettered if tzdata does not know it);
- rules across fields (``end`` not before ``start``) are in the fields' descriptions;
- fields shared by many topics take their description and examples from ``SHARED`` below
  unless the model gives its own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from schemas.base import _known_zone
from schemas.topics import CATALOGUE, TopicSpec

JSON_DIR = Path(__file__).parent / "json"
BASE_URL = "https://followup.example/schemas/"
META_ID = BASE_URL + "followup.meta.schema.json"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
VOCAB = "https://json-schema.org/draft/2020-12/vocab/"

# RFC 3339 date-time with its offset required ("Z" or ±hh:mm).
AWARE_DATETIME = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
# Canonical IANA zone names (the tz database's areas) and UTC.
IANA_ZONE = (
    r"^(UTC|(Africa|America|Antarctica|Arctic|Asia|Atlantic|Australia|Europe|Indian|Pacific|Etc)"
    r"(/[A-Za-z0-9_+-]+){1,2})$"
)
ZONE_NOTE = (
    " Must match the pattern and name a zone of the IANA tz database the consumer ships"
    " (tzdata); an unknown name is dead-lettered."
)

# Descriptions and examples of fields that many topics share, by field name.
SHARED: dict[str, tuple[str, list[Any]]] = {
    "type": ("The message type; fixed per topic.", []),
    "schema_version": ("Version of this contract; additive changes keep it.", [1]),
    "patient_id": (
        "The hospital's patient id (opaque). Also the Kafka record key: a record whose key"
        " is not its patient_id is dead-lettered.",
        ["pat-1", "MRN-004711"],
    ),
    "department": ("The clinic's department or location id.", ["dental", "OR-4"]),
    "practitioner_id": ("The practitioner's id in the hospital's system.", ["dr-7"]),
    "plan_id": ("The treatment plan this belongs to.", ["plan-1"]),
    "stage_id": ("A stage of the treatment plan.", ["stage-2"]),
    "appointment_id": ("The scheduling system's appointment id (opaque).", ["appt-1"]),
    "appointment_start": ("Start of the appointment concerned (with offset).", []),
    "case_id": ("The scheduler's follow-up case.", ["case-1"]),
    "attempt_number": ("Which contact attempt of the case, from 1.", [1]),
    "language": ("Language for messages: ISO 639-1/639-2 code, BCP 47 subtags.", ["lt", "en"]),
    "channel": ("How the patient is contacted.", ["sms"]),
    "reason": ("Why the case exists: the trigger's kind.", ["no_show"]),
    "purpose": ("follow_up, escalation (to the doctor or supervisor), or withdrawal.", []),
    "stage_name": ("The stage's name as the plan gives it.", ["Implant"]),
    "stage_deadline": ("The latest moment the next stage can still happen.", []),
    "doctor_notes": ("The doctor's notes for the stage.", ["Check healing first."]),
    "previous_attempts": ("Earlier attempts of the same case, oldest first.", []),
    "timezone": ("IANA time zone name.", ["Europe/Vilnius"]),
    "event_id": (
        "Unique id of this message; deterministic where the fact allows, so a resend is"
        " recognised as a duplicate.",
        ["fhir:Appointment/apt-1/3"],
    ),
    "occurred_at": ("When the fact happened, with its UTC offset.", ["2026-03-02T09:30:00+02:00"]),
    "source": ("Who produced it: a service, an ingest path, an integrator's system.", ["his"]),
}


# Descriptions and examples of one model's fields (by model and field), where the model
# itself gives none. Kept here, next to SHARED, so the integrator's text has one home.
FIELDS: dict[tuple[str, str], tuple[str, list[Any]]] = {
    ("AppointmentEvent", "change"): (
        "What changed: booked, rescheduled (new start), modified, cancelled, deleted (entered"
        " in error), noshow, status_changed (arrived, checked-in, fulfilled...).",
        ["booked"],
    ),
    ("AppointmentEvent", "start"): (
        "When the visit starts, with its UTC offset (a naive time is refused).",
        ["2026-03-02T09:30:00+02:00"],
    ),
    ("AppointmentEvent", "end"): (
        "When the visit ends, with its UTC offset. Must not be before start: the consumer"
        " refuses (dead-letters) an event whose end is earlier than its start, a rule across"
        " two fields that JSON Schema cannot express.",
        ["2026-03-02T10:00:00+02:00"],
    ),
    ("AppointmentEvent", "status"): (
        "The appointment's status, as FHIR Appointment.status defines it.",
        ["booked", "arrived", "fulfilled", "cancelled", "noshow"],
    ),
    ("AppointmentEvent", "cancelled_by"): (
        "For cancellations: who cancelled. A patient's late cancellation is followed up.",
        ["patient"],
    ),
    ("TreatmentPlanEvent", "supervisor_id"): (
        "Who is told when a stage deadline can no longer be met.",
        ["dr-1"],
    ),
    ("TreatmentPlanEvent", "stages"): (
        "The stages in order; sequence numbers must be unique and increasing (checked by the"
        " consumer: JSON Schema cannot compare items).",
        [],
    ),
    ("TreatmentStage", "stage_id"): ("The stage's id within the plan.", ["stage-2"]),
    ("TreatmentStage", "name"): ("The stage's name, shown to staff and patients.", ["Implant"]),
    ("TreatmentStage", "completed_at"): (
        "When the stage was completed (with offset); null while it is not.",
        ["2026-02-20T10:00:00+02:00"],
    ),
    ("ContactEvent", "given_name"): ("The patient's given name(s).", ["Ona"]),
    ("ContactEvent", "family_name"): ("The patient's family name.", ["Kazlauskienė"]),
    ("ContactEvent", "email"): ("E-mail address.", ["ona@example.org"]),
    ("ContactEvent", "consent"): ("Channels the patient agreed to; all true by default.", []),
    ("ContactEvent", "status"): (
        "active; deceased or transferred_out: never contacted again.",
        ["active"],
    ),
    ("ChannelConsent", "sms"): ("May be texted.", [True]),
    ("ChannelConsent", "email"): ("May be e-mailed.", [True]),
    ("ChannelConsent", "call"): ("May be called by the front desk.", [True]),
    ("PatientStatusEvent", "status"): (
        "deceased or transferred_out: stop every follow-up; erased: stop and remove the "
        "patient's personal data everywhere (ids stay); active: may be contacted again.",
        ["deceased"],
    ),
    ("PatientStatusEvent", "effective_at"): (
        "When the status took effect (with offset).",
        ["2026-03-01T16:00:00+02:00"],
    ),
    ("TriggerEvent", "kind"): ("What was detected.", ["no_show"]),
    ("TriggerEvent", "detected_at"): ("When the tracker detected it (with offset).", []),
    ("NotificationCommand", "template"): ("The notifier's template to render.", ["no_show"]),
    ("OutcomeEvent", "outcome"): ("What came back from the patient, the provider or staff.", []),
    ("OutcomeEvent", "idempotency_key"): ("The attempt's idempotency key, when known.", []),
    ("OutcomeEvent", "reported_by"): ("The staff member who reported a call result.", []),
    ("CallTaskEvent", "action"): ("create a task, or withdraw one created earlier.", ["create"]),
    ("CallTaskEvent", "task_id"): ("The call task's id; a withdrawal names the same id.", []),
    ("CallTaskEvent", "patient_name"): ("Whom to ask for on the phone.", ["Ona Kazlauskienė"]),
    ("CallTaskEvent", "phone"): ("The number to call (E.164 when it could be normalised).", []),
    ("CallTaskEvent", "phone_shared"): (
        "The number is shared (a family phone): do not name the visit's reason to whoever answers.",
        [False],
    ),
    ("CallTaskEvent", "window_start"): ("Call not before this moment.", []),
    ("CallTaskEvent", "window_end"): ("The call is useless after this moment.", []),
    ("CallTaskEvent", "script"): ("What to say, rendered in the patient's language.", []),
    ("CallTaskEvent", "report_url"): ("Where to report the call's result.", []),
    ("AttemptSummary", "at"): ("When the attempt was made (with offset).", []),
    ("AttemptSummary", "outcome"): ("What came back, null while nothing has.", []),
    ("DeadLetter", "source_topic"): ("The topic the record came from (null: HTTP/MLLP).", []),
    ("DeadLetter", "source_partition"): ("Its partition.", []),
    ("DeadLetter", "source_offset"): ("Its offset.", []),
    ("DeadLetter", "original_key_b64"): ("The record's original key, base64.", []),
    ("DeadLetter", "error_type"): ("The kind of failure: invalid_json, invalid_event...", []),
}


class ContractSchema(GenerateJsonSchema):
    """Pydantic's generator, with what the models check written into the schema."""

    def datetime_schema(self, schema: core_schema.DatetimeSchema) -> JsonSchemaValue:
        found = super().datetime_schema(schema)
        if schema.get("tz_constraint") == "aware":
            found["pattern"] = AWARE_DATETIME
        return found

    def function_after_schema(
        self, schema: core_schema.AfterValidatorFunctionSchema
    ) -> JsonSchemaValue:
        found = super().function_after_schema(schema)
        if schema["function"].get("function") is _known_zone:
            found["pattern"] = IANA_ZONE
            found.setdefault("examples", ["Europe/Vilnius", "America/New_York", "UTC"])
        return found


def _document(node: Any, owner: str | None = None) -> None:
    """Descriptions and examples into every object's properties; the zone rule."""
    if isinstance(node, list):
        for child in node:
            _document(child, owner)
        return
    if not isinstance(node, dict):
        return
    owner = node.get("title", owner) if "properties" in node else owner
    for name, prop in (node.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        text = FIELDS.get((str(owner), name)) or SHARED.get(name)
        if text is not None:
            prop.setdefault("description", text[0])
            if text[1] and "examples" not in prop and "$ref" not in prop:
                prop["examples"] = text[1]
        if _has_pattern(prop, AWARE_DATETIME) and "examples" not in prop:
            prop["examples"] = ["2026-03-02T09:30:00+02:00", "2026-03-02T07:30:00Z"]
        if _has_pattern(prop, IANA_ZONE) and ZONE_NOTE not in prop.get("description", ""):
            prop["description"] = prop.get("description", "IANA time zone name.") + ZONE_NOTE
    for key, child in node.items():
        if key == "$defs" and isinstance(child, dict):
            for title, definition in child.items():
                _document(definition, title)
        elif key != "properties":
            _document(child, owner)
    for prop in (node.get("properties") or {}).values():
        _document(prop, owner)


def _has_pattern(prop: dict[str, Any], pattern: str) -> bool:
    return prop.get("pattern") == pattern or any(
        isinstance(option, dict) and option.get("pattern") == pattern
        for option in prop.get("anyOf", [])
    )


def schema_of(spec: TopicSpec) -> dict[str, object]:
    schema = spec.model.model_json_schema(mode="validation", schema_generator=ContractSchema)
    _document(schema)
    return {
        "$schema": META_ID,
        "$id": f"{BASE_URL}{spec.name}.schema.json",
        "x-topic": spec.name,
        "x-compacted": spec.compacted,
        "x-key": "patient_id",
        **schema,
        "description": spec.description,
    }


def metaschema() -> dict[str, object]:
    """Draft 2020-12 with format *assertion*: a validator that honours ``$vocabulary``
    must check ``date-time`` (the pattern makes every other validator check the offset)."""
    return {
        "$schema": DRAFT_2020_12,
        "$id": META_ID,
        "$vocabulary": {
            VOCAB + "core": True,
            VOCAB + "applicator": True,
            VOCAB + "unevaluated": True,
            VOCAB + "validation": True,
            VOCAB + "meta-data": True,
            VOCAB + "format-assertion": True,
            VOCAB + "content": True,
        },
        "$dynamicAnchor": "meta",
        "title": "followup contract metaschema: Draft 2020-12 with format assertion",
        "allOf": [{"$ref": DRAFT_2020_12}],
    }


def _dump(value: dict[str, object]) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered(spec: TopicSpec) -> str:
    return _dump(schema_of(spec))


def rendered_metaschema() -> str:
    return _dump(metaschema())


def path_of(spec: TopicSpec) -> Path:
    return JSON_DIR / f"{spec.name}.schema.json"


META_PATH = JSON_DIR / "followup.meta.schema.json"


def main() -> int:
    JSON_DIR.mkdir(exist_ok=True)
    META_PATH.write_text(rendered_metaschema(), encoding="utf-8")
    for spec in CATALOGUE:
        path_of(spec).write_text(rendered(spec), encoding="utf-8")
        print(f"wrote {path_of(spec).relative_to(Path.cwd())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
