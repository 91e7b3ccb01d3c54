"""An escalation reaches the doctor, not the front desk, and reads as one: its own subject,
priority, address and queue, the deadline at risk, what was tried and the decision asked;
an ordinary task to the front desk reads in the clinic's zone with its notes kept out of
the calendar copy. Real Kafka, PostgreSQL, SMTP server and webhook receiver."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage

import icalendar
import pytest

from schemas.events import AttemptSummary
from tests.integration.notifier.world import World
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


def _text(mail: EmailMessage) -> str:
    body = mail.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


async def test_an_escalation_goes_to_the_doctor_and_asks_for_a_decision(world: World) -> None:
    await world.contact("p-esc", phone="+37060000061")
    now = world.clock.now()
    command = world.command(
        "c-esc",
        "p-esc",
        "call_task",
        purpose="escalation",
        escalate_to="dr-7",
        reason="stage_window_at_risk",
        template="stage_window_at_risk",
        stage_deadline=now + timedelta(days=3),
        previous_attempts=[
            AttemptSummary(attempt_number=1, channel="sms", at=now, outcome="delivered"),
            AttemptSummary(attempt_number=2, channel="call_task", at=now, outcome="no_answer"),
        ],
    )
    await world.send(command)
    await eventually(lambda: world.outcome("c-esc:1:task_created"))

    [mail] = world.inbox.for_key("calltask:c-esc:1:create")
    assert mail["To"] == "doctor@clinic.example"  # FOLLOWUP_ESCALATION_EMAIL
    assert mail["Subject"].startswith("Escalation, decision needed: next treatment stage")
    assert (mail["Importance"], mail["X-Priority"]) == ("high", "1")
    text = _text(mail)
    assert "Deadline at risk: Implant, by March 5, 2026." in text
    assert "1. SMS, March 2, 2026 10:00\u202fAM (Europe/Vilnius): delivered" in text
    assert "2. call, March 2, 2026 10:00\u202fAM (Europe/Vilnius): no answer" in text
    assert "Decision asked: call the patient yourself" in text

    [attachment] = list(mail.iter_attachments())
    calendar = icalendar.Calendar.from_ical(attachment.get_content())
    todo = next(iter(calendar.walk("VTODO")))
    assert str(calendar["method"]) == "REQUEST"
    assert str(todo["attendee"]) == "mailto:doctor@clinic.example"
    assert str(todo["organizer"]) == "mailto:followup@clinic.example"
    assert int(str(todo["priority"])) == 1

    # The webhook's escalation queue (FOLLOWUP_ESCALATION_WEBHOOK_URL), FHIR priority urgent.
    [hook] = [t for t in world.webhook.captured if t.task.get("task_id") == "c-esc:1"]
    assert hook.path == "/escalations"
    assert hook.payload["fhir"]["priority"] == "urgent" and hook.purpose == "escalation"


async def test_a_front_desk_task_reads_in_the_clinics_zone_without_notes_in_the_calendar(
    world: World,
) -> None:
    await world.contact("p-desk", phone="+37060000062")
    await world.send(world.command("c-desk", "p-desk", "call_task"))
    await eventually(lambda: world.outcome("c-desk:1:task_created"))

    [mail] = world.inbox.for_key("calltask:c-desk:1:create")
    assert mail["To"] == "desk@clinic.example" and mail["Importance"] is None
    assert mail["Subject"] == "Call task: missed visit (p-desk)"
    text = _text(mail)
    assert "Best window: March 2, 2026 10:00\u202fAM (Europe/Vilnius)" in text
    assert "Doctor's notes: Check healing first." in text  # the mail to the desk keeps them
    assert "Report the result (one click):" in text and "/call-tasks/report/" in text
    [attachment] = list(mail.iter_attachments())
    todo = next(iter(icalendar.Calendar.from_ical(attachment.get_content()).walk("VTODO")))
    assert "Check healing first." not in str(todo["description"])  # the calendar does not
    assert str(todo["attendee"]) == "mailto:desk@clinic.example"
    [desk] = [t for t in world.webhook.captured if t.task.get("task_id") == "c-desk:1"]
    assert desk.path == "/tasks"
