"""Call tasks for administrators: built from a command and the contact, in three shapes.

``build_call_task`` is the clinic's view (CallTaskEvent); ``fhir_task`` and ``vtodo`` are
the same task for FHIR-speaking CRMs and for mail clients (an iCalendar VTODO).
``summary_lines``, ``subject`` and ``escalation_brief`` are what people read, through a
``DeskView`` (the clinic's language and zone; clinical notes in or out).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import icalendar

from schemas.events import AttemptSummary, CallTaskEvent, NotificationCommand
from services.notifier import localise
from services.notifier.contacts import Contact
from services.notifier.report_links import LINK_RESULTS
from services.notifier.templates import MessageContext, TemplateBook

if TYPE_CHECKING:
    from services.notifier.settings import NotifierSettings


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
    report_links: dict[str, str] | None = None,
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
        report_links=report_links or {},
        note=command.note,
        owner=command.owner,
        risk=command.risk,
        site=command.site,
        safeguarding=command.safeguarding,
    )


@dataclass(frozen=True)
class DeskView:
    """How the administrators' copy of a task reads: the clinic's language and zone, and
    whether the doctor's clinical notes go in (calendars and chat rooms leave them out)."""

    language: str = "en"
    timezone: str = "Europe/Vilnius"
    notes: bool = True

    def when(self, moment: datetime) -> str:
        return localise.local_datetime(moment, self.timezone, self.language)

    def day(self, moment: datetime) -> str:
        return localise.local_date(moment, self.timezone, self.language)

    def word(self, key: str, **values: object) -> str:
        return localise.word(self.language, key, **values)

    def without_notes(self) -> DeskView:
        return replace(self, notes=False)


def desk_view(settings: NotifierSettings, *, notes: bool = True) -> DeskView:
    """How administrators read tasks here: the clinic's language and zone."""
    return DeskView(settings.admin_language, settings.clinic_timezone, notes)


def call_script(
    book: TemplateBook,
    command: NotificationCommand,
    contact: Contact | None,
    *,
    clinic_name: str | Callable[[str], str],
    clinic_phone: str,
    rebook_url: str | None,
    default_language: str,
    view: DeskView | None = None,
) -> str:
    """What the caller says, in the patient's language and in calling order (greeting and
    who calls, identity check, reason, offer, what to record); a shared number's warning
    first; for an escalation, the decision asked of the doctor before it (clinic's words)."""
    language = contact.language if contact else default_language
    shared_by = contact.phone_shared_by if contact else 1
    name_of = clinic_name if callable(clinic_name) else (lambda _: clinic_name)
    context = MessageContext.for_command(
        command,
        contact,
        reason=command.reason,
        clinic_name=name_of(language),
        clinic_phone=clinic_phone,
        rebook_url=rebook_url,
    )
    script = book.render("call_script", language, context)
    if shared_by > 1:
        script = localise.word(language, "shared_number", count=shared_by) + "\n" + script
    if command.audience == "guardian":
        script = f"{book.phrase(language, 'guardian_call')}\n{script}"
    if contact is not None and contact.proxy is not None:
        # The number is the proxy's (a guardian, a carer): say whom the call is for.
        whom = contact.proxy_name or "-"
        script = f"{book.phrase(language, 'proxy_call', name=whom)}\n{script}"
    if command.purpose == "escalation":
        brief = escalation_brief(command, view or DeskView(language=default_language))
        script = "\n".join(brief) + "\n\n" + script
    return script


def escalation_brief(command: NotificationCommand, view: DeskView) -> list[str]:
    """For the doctor or supervisor: which deadline is at risk, what was tried, what to decide."""
    lines = [view.word("escalation")]
    if command.safeguarding:
        lines.append(view.word("safeguarding"))
    if command.stage_deadline is not None:
        stage = command.stage_name or localise.reason_label(view.language, command.reason)
        at_risk = view.word("at_risk", stage=stage, date=view.day(command.stage_deadline))
        # "iki 2026 m. kovo 5 d.": a date that ends with its own dot ends the sentence too.
        lines.append(at_risk[:-1] if at_risk.endswith("..") else at_risk)
    else:
        lines.append(view.word("at_risk_none"))
    lines.append(view.word("tried"))
    lines += [_tried(view, attempt, "tried_line") for attempt in command.previous_attempts] or [
        view.word("tried_none")
    ]
    lines.append(view.word("decision"))
    return lines


def _tried(view: DeskView, attempt: AttemptSummary, key: str) -> str:
    return view.word(
        key,
        n=attempt.attempt_number,
        channel=localise.channel_label(view.language, attempt.channel),
        at=view.when(attempt.at),
        result=localise.result_label(view.language, attempt.outcome),
    )


def subject(task: CallTaskEvent, view: DeskView) -> str:
    """The mail or ticket title: an escalation says it is one and asks for a decision."""
    key = "escalation_subject" if task.purpose == "escalation" else "task_subject"
    title = view.word(
        key, reason=localise.reason_label(view.language, task.reason), patient=task.patient_id
    )
    return view.word("withdrawn", subject=title) if task.action == "withdraw" else title


def summary_lines(task: CallTaskEvent, view: DeskView | None = None) -> list[str]:
    """Plain text for people, in the clinic's language and zone: who, why, stage and
    deadline, notes (when the view has them), earlier attempts, window, report links."""
    v = view or DeskView()
    reason = localise.reason_label(v.language, task.reason)
    phone = task.phone or v.word("phone_unknown")
    lines = [
        f"{v.word('call')}: {task.patient_name or task.patient_id} ({task.patient_id})",
        f"{v.word('phone')}: {phone}" + (f" ({v.word('shared')})" if task.phone_shared else ""),
        f"{v.word('why')}: {reason}",
        f"{v.word('window')}: {v.when(task.window_start)} - {v.when(task.window_end)}",
    ]
    if task.stage_name or task.stage_deadline:
        deadline = v.day(task.stage_deadline) if task.stage_deadline else v.word("no_deadline")
        lines.append(
            f"{v.word('stage')}: {task.stage_name or '-'}, {v.word('deadline')} {deadline}"
        )
    if task.doctor_notes and v.notes:
        lines.append(f"{v.word('notes')}: {task.doctor_notes}")
    if task.note and v.notes:  # a clinical concern: what the administrator wrote
        lines.append(f"{v.word('concern')}: {task.note}")
    if task.safeguarding:
        lines.append(v.word("safeguarding"))
    if task.owner:
        lines.append(f"{v.word('owner')}: {task.owner}")
    if task.risk is not None:
        r = task.risk
        days = v.word("no_deadline") if r.days_to_deadline is None else str(r.days_to_deadline)
        lines.append(
            v.word(
                "risk",
                score=r.score,
                no_shows=r.earlier_no_shows,
                unanswered=r.unanswered_attempts,
                days=days,
                plan="+" if r.plan_stage else "-",
            )
        )
    lines += [_tried(v, attempt, "attempt") for attempt in task.previous_attempts]
    if task.report_links:
        lines += ["", v.word("report_links") + ":"]
        lines += [
            f"- {localise.result_label(v.language, LINK_RESULTS[result])}: {url}"
            for result, url in task.report_links.items()
            if result in LINK_RESULTS
        ]
    elif task.report_url:
        lines.append(f"{v.word('report_links')}: {task.report_url}")
    lines += ["", f"{v.word('script')} ({task.language}):", task.script]
    return lines


def vtodo(
    task: CallTaskEvent,
    domain: str,
    *,
    view: DeskView | None = None,
    organizer: str | None = None,
    attendee: str | None = None,
) -> bytes:
    """The task as an iCalendar VTODO, without the doctor's notes unless ``view`` has them.

    Sent to a person (``attendee`` known) it is an RFC 5546 ``REQUEST`` (``CANCEL`` on
    withdrawal) with ORGANIZER and ATTENDEE, as iTIP requires. Without an attendee there is
    nobody to ask, so it is ``PUBLISH`` (a copy to keep; withdrawn: STATUS:CANCELLED)."""
    v = view or DeskView(notes=False)
    cal = icalendar.Calendar()
    cal.add("prodid", "-//followup//call tasks//EN")
    cal.add("version", "2.0")
    withdrawn = task.action == "withdraw"
    itip = organizer is not None and attendee is not None
    cal.add("method", ("CANCEL" if withdrawn else "REQUEST") if itip else "PUBLISH")
    todo = icalendar.Todo()
    todo.add("uid", f"{task.task_id}@{domain}")
    todo.add("dtstamp", task.occurred_at)
    todo.add("sequence", 1 if withdrawn else 0)
    todo.add("summary", subject(task, replace(v, notes=False)))
    todo.add("dtstart", task.window_start)
    todo.add("due", task.window_end)
    todo.add("status", "CANCELLED" if withdrawn else "NEEDS-ACTION")
    todo.add("description", "\n".join(summary_lines(task, v)))
    todo.add("priority", 1 if task.purpose == "escalation" else 5)
    if itip:
        todo.add("organizer", f"mailto:{organizer}", parameters={"CN": "followup"})
        todo.add(
            "attendee",
            f"mailto:{attendee}",
            parameters={"ROLE": "REQ-PARTICIPANT", "PARTSTAT": "NEEDS-ACTION", "RSVP": "FALSE"},
        )
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


def _fhir_datetime(moment: datetime) -> str:
    """A dateTime as fhir.resources writes it: ISO 8601, a zero offset as ``Z``."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def fhir_task(task: CallTaskEvent) -> dict[str, Any]:
    """The call task as a FHIR **R4** Task (R4B's Task is R4's; a real HAPI R4 server accepts
    it in the integration tests).

    Built as plain JSON, not through fhir.resources: validating the model was ~8% of the
    notifier's samples per call task. The unit tests validate what this builds against
    fhir.resources' R4B Task and check that the validated dump is this very dict.

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
        "authoredOn": _fhir_datetime(task.occurred_at),
        "lastModified": _fhir_datetime(task.occurred_at),
        "restriction": {
            "period": {
                "start": _fhir_datetime(task.window_start),
                "end": _fhir_datetime(task.window_end),
            }
        },
        "reasonCode": _typed(FHIR_REASON_SYSTEM, task.reason),
        "input": inputs,
    }
    if task.practitioner_id:
        resource["owner"] = {"reference": f"Practitioner/{task.practitioner_id}"}
    if task.doctor_notes:
        resource["note"] = [{"text": task.doctor_notes}]
    return resource
