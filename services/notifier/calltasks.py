"""Call tasks for administrators: built from a command and the contact, in three shapes.

``build_call_task`` is the clinic's view (CallTaskEvent); ``fhir_task`` and ``vtodo`` are
the same task for FHIR-speaking CRMs and for mail clients (an iCalendar VTODO).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import icalendar
from fhir.resources.task import Task

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
    language = contact.language if contact else default_language
    script = book.render("call_script", language, context)
    if shared_by > 1:
        # In the script's language, like the rest of it (templates' phrases.shared_number).
        script = f"{book.phrase(language, 'shared_number', count=shared_by)}\n{script}"
    if contact is not None and contact.proxy is not None:
        # The number is the proxy's (a guardian, a carer): say whom the call is for.
        whom = contact.proxy_name or "-"
        script = f"{book.phrase(language, 'proxy_call', name=whom)}\n{script}"
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


def fhir_task(task: CallTaskEvent) -> dict[str, Any]:
    """The call task as a FHIR R5 Task resource (validated by fhir.resources)."""
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": "urn:followup:calltask", "value": task.task_id}],
        "status": "cancelled" if task.action == "withdraw" else "requested",
        "intent": "order",
        "priority": "urgent" if task.purpose == "escalation" else "routine",
        "code": {"text": "Call the patient"},
        "description": task.script,
        "for": {"reference": f"Patient/{task.patient_id}"},
        "authoredOn": task.occurred_at.isoformat(),
        "requestedPeriod": {
            "start": task.window_start.isoformat(),
            "end": task.window_end.isoformat(),
        },
        "reason": [{"concept": {"text": task.reason}}],
    }
    if task.practitioner_id:
        resource["owner"] = {"reference": f"Practitioner/{task.practitioner_id}"}
    if task.doctor_notes:
        resource["note"] = [{"text": task.doctor_notes}]
    validated: dict[str, Any] = Task.model_validate(resource).model_dump(
        mode="json", exclude_none=True, by_alias=True
    )
    return validated
