"""Call tasks for administrators: built from a command and the contact, in three shapes.

``build_call_task`` is the clinic's view (CallTaskEvent); ``fhir_task`` and ``vtodo`` are
the same task for FHIR-speaking CRMs and for mail clients (an iCalendar VTODO).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import icalendar
from fhir.resources.R4B.task import Task

from schemas.events import CallTaskEvent, NotificationCommand
from services.notifier.contacts import Contact
from services.notifier.templates import MessageContext, TemplateBook


def build_call_task(
    command: NotificationCommand,
    contact: Contact | None,
    *,
    task_id: str,
    action: str,
    script: str,
    now: datetime,
    report_url: str | None,
    default_language: str,
) -> CallTaskEvent:
    shared = contact is not None and contact.phone_shared_by > 1
    return CallTaskEvent(
        event_id=f"calltask:{task_id}:{action}",
        occurred_at=now,
        source="notifier",
        action=action,  # type: ignore[arg-type]
        task_id=task_id,
        case_id=command.case_id,
        attempt_number=command.attempt_number,
        patient_id=command.patient_id,
        patient_name=contact.display_name if contact else None,
        phone=(contact.phone or contact.phone_raw) if contact else None,
        phone_shared=shared,
        language=contact.language if contact else default_language,
        reason=command.reason,
        purpose=command.purpose,
        department=command.department,
        practitioner_id=command.escalate_to or command.practitioner_id,
        stage_name=command.stage_name,
        stage_deadline=command.stage_deadline,
        doctor_notes=command.doctor_notes,
        previous_attempts=command.previous_attempts,
        window_start=command.window_start,
        window_end=command.window_end,
        script=script,
        report_url=report_url,
    )


def call_script(
    book: TemplateBook,
    command: NotificationCommand,
    contact: Contact | None,
    *,
    clinic_name: str,
    clinic_phone: str,
    rebook_url: str | None,
    default_language: str,
) -> str:
    shared_by = contact.phone_shared_by if contact else 1
    context = MessageContext.for_command(
        command,
        contact,
        reason=command.reason,
        clinic_name=clinic_name,
        clinic_phone=clinic_phone,
        rebook_url=rebook_url,
    )
    script = book.render("call_script", contact.language if contact else default_language, context)
    if shared_by > 1:
        # Said in the clinic's words for the administrator, not the patient's language.
        script = f"Number shared by {shared_by} patients.\n{script}"
    return script


def summary_lines(task: CallTaskEvent) -> list[str]:
    """Plain text for people: who, why, stage and deadline, notes, earlier attempts, window."""
    lines = [
        f"Call: {task.patient_name or task.patient_id} ({task.patient_id})",
        f"Phone: {task.phone or 'unknown'}" + (" - shared number" if task.phone_shared else ""),
        f"Why: {task.reason.replace('_', ' ')} ({task.purpose})",
        f"Best window: {task.window_start.isoformat()} - {task.window_end.isoformat()}",
    ]
    if task.stage_name or task.stage_deadline:
        deadline = task.stage_deadline.isoformat() if task.stage_deadline else "none"
        lines.append(f"Stage: {task.stage_name or '-'}, deadline {deadline}")
    if task.doctor_notes:
        lines.append(f"Doctor's notes: {task.doctor_notes}")
    for attempt in task.previous_attempts:
        lines.append(
            f"Earlier attempt {attempt.attempt_number}: {attempt.channel} at "
            f"{attempt.at.isoformat()} -> {attempt.outcome or 'no result'}"
        )
    if task.report_url:
        lines.append(f"Report the result: {task.report_url}")
    lines += ["", f"Script ({task.language}):", task.script]
    return lines


def vtodo(task: CallTaskEvent, domain: str) -> bytes:
    cal = icalendar.Calendar()
    cal.add("prodid", "-//followup//call tasks//EN")
    cal.add("version", "2.0")
    withdrawn = task.action == "withdraw"
    cal.add("method", "CANCEL" if withdrawn else "REQUEST")
    todo = icalendar.Todo()
    todo.add("uid", f"{task.task_id}@{domain}")
    todo.add("dtstamp", task.occurred_at)
    todo.add("sequence", 1 if withdrawn else 0)
    todo.add("summary", f"Call patient {task.patient_id}: {task.reason.replace('_', ' ')}")
    todo.add("dtstart", task.window_start)
    todo.add("due", task.window_end)
    todo.add("status", "CANCELLED" if withdrawn else "NEEDS-ACTION")
    todo.add("description", "\n".join(summary_lines(task)))
    todo.add("priority", 1 if task.purpose == "escalation" else 5)
    cal.add_component(todo)
    ical: bytes = cal.to_ical()
    return ical


# Code systems of our own (no standard code says "call the patient back about a follow-up").
FHIR_TASK_SYSTEM = "urn:followup:calltask"  # Task.identifier: our task id
FHIR_CODE_SYSTEM = "urn:followup:task-code"
FHIR_REASON_SYSTEM = "urn:followup:reason"
FHIR_INPUT_SYSTEM = "urn:followup:task-input"  # call-script, report-url, phone-shared
FHIR_OUTPUT_SYSTEM = "urn:followup:task-output"  # call-outcome, callback-at
FHIR_OUTCOME_SYSTEM = "urn:followup:call-outcome"  # the CallReport outcomes as codes


def fhir_task_id(task_id: str) -> str:
    """The Task's logical id on the FHIR server, derived from our task id (FHIR ids allow
    [A-Za-z0-9.-]{1,64}; ours have ':'): a PUT of the same task is an update, never a copy."""
    return "followup-" + hashlib.sha256(task_id.encode()).hexdigest()[:40]


def _typed(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}], "text": code.replace("-", " ")}


def fhir_task(task: CallTaskEvent) -> dict[str, Any]:
    """The call task as a FHIR **R4** Task (validated with fhir.resources' R4B models, which
    are R4's for Task; a real HAPI R4 server accepts it in the integration tests).

    Minimum personal data: the patient is a reference (``Task.for``), never a name or phone
    (the hospital's server has the Patient); the doctor's notes go into ``note``, since this
    is the clinical record's own server. The window is ``restriction.period`` ("when
    fulfilment is sought"); ``executionPeriod`` is left to the performer.
    """
    withdrawn = task.action == "withdraw"
    inputs: list[dict[str, Any]] = [
        {"type": _typed(FHIR_INPUT_SYSTEM, "call-script"), "valueString": task.script}
    ]
    if task.report_url:
        inputs.append(
            {"type": _typed(FHIR_INPUT_SYSTEM, "report-url"), "valueUrl": task.report_url}
        )
    if task.phone_shared:
        inputs.append({"type": _typed(FHIR_INPUT_SYSTEM, "phone-shared"), "valueBoolean": True})
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "id": fhir_task_id(task.task_id),
        "identifier": [{"system": FHIR_TASK_SYSTEM, "value": task.task_id}],
        "status": "cancelled" if withdrawn else "requested",
        "businessStatus": {"text": "withdrawn" if withdrawn else "awaiting call"},
        "intent": "order",
        "priority": "urgent" if task.purpose == "escalation" else "routine",
        "code": {**_typed(FHIR_CODE_SYSTEM, "call-patient"), "text": "Call the patient"},
        "description": f"Call the patient: {task.reason.replace('_', ' ')} ({task.purpose})",
        "for": {"reference": f"Patient/{task.patient_id}"},
        "authoredOn": task.occurred_at.isoformat(),
        "lastModified": task.occurred_at.isoformat(),
        "restriction": {
            "period": {"start": task.window_start.isoformat(), "end": task.window_end.isoformat()}
        },
        "reasonCode": _typed(FHIR_REASON_SYSTEM, task.reason),
        "input": inputs,
    }
    if task.practitioner_id:
        resource["owner"] = {"reference": f"Practitioner/{task.practitioner_id}"}
    if task.doctor_notes:
        resource["note"] = [{"text": task.doctor_notes}]
    validated: dict[str, Any] = Task.model_validate(resource).model_dump(
        mode="json", exclude_none=True, by_alias=True
    )
    return validated
