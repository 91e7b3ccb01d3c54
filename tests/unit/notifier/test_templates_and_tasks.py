from __future__ import annotations

import html
import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import pytest

from schemas.events import AttemptSummary, CallTaskEvent, NotificationCommand
from services.notifier.calltasks import build_call_task, call_script, fhir_task, vtodo
from services.notifier.contacts import Contact
from services.notifier.email_channel import Email, build_message, message_id
from services.notifier.sinks import webhook_signature
from services.notifier.templates import (
    PARTS,
    REASONS,
    TemplateBook,
    TemplateError,
    sample_contexts,
)

LANGUAGES = ("en", "ru", "bg", "lt")
# Insurance and payment words in the four languages (stems, so inflections match).
MONEY_WORDS = re.compile(
    r"insur|payment|pay\b|invoice|bill|страх|оплат|плат|счёт|счет|застрах|плащ|фактур|"
    r"draud|mokė|mokej|mokėj|sąskait|saskait",
    re.IGNORECASE,
)
VILNIUS = ZoneInfo("Europe/Vilnius")


@pytest.fixture(scope="module")
def book() -> TemplateBook:
    return TemplateBook.load("en")


def first_line(text: str) -> str:
    plain = html.unescape(re.sub(r"<[^>]+>", "", text))
    return next(line for line in plain.splitlines() if line.strip())


def test_every_language_exists(book: TemplateBook) -> None:
    assert set(LANGUAGES) <= book.languages


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("reason", REASONS)
def test_every_part_renders_care_first_in_every_language(
    book: TemplateBook, language: str, reason: str
) -> None:
    for context in sample_contexts(reason):
        for part in PARTS:
            text = book.render(part, language, context)  # type: ignore[arg-type]
            assert text.strip(), f"{language}/{part} is empty"
            assert not MONEY_WORDS.search(first_line(text)), f"{language}/{part} opens with money"
            if part in ("sms", "email_text", "call_script"):
                assert "Sample Clinic" in text, f"{language}/{part} does not say who writes"
            if context.redacted:
                assert "Implant" not in text and "Sample Patient" not in text
    sms = book.render("sms", language, sample_contexts(reason)[0])
    assert "STOP" in sms or "СТОП" in sms, "the SMS says how to opt out"


def test_the_money_check_can_fail() -> None:
    sources = {
        "en": {"opening": {"no_show": "Your insurance payment is due."}, "sms": "{{ opening }}"}
    }
    bad = TemplateBook(sources, "en")
    text = bad.render("sms", "en", sample_contexts("no_show")[0])
    assert MONEY_WORDS.search(first_line(text))


def test_missing_language_or_part_falls_back_to_the_default(book: TemplateBook) -> None:
    context = sample_contexts("no_show")[0]
    assert book.render("sms", "fr", context) == book.render("sms", "en", context)
    assert book.render("sms", "lt-LT", context) == book.render("sms", "lt", context)
    partial = TemplateBook(
        {"en": {"opening": {"no_show": "Care"}, "sms": "EN {{ opening }}"}, "lt": {}}, "en"
    )
    assert partial.render("sms", "lt", context) == "EN Care"


def test_broken_templates_fail_at_start_up(tmp_path: Path) -> None:
    (tmp_path / "en.yaml").write_text("opening: {no_show: 'x'}\nsms: '{{ nope }}'\n")
    with pytest.raises(TemplateError, match="en/sms"):
        TemplateBook.load("en", tmp_path)
    (tmp_path / "en.yaml").write_text("sms: '{% if %}'\n")
    with pytest.raises(TemplateError, match="syntax"):
        TemplateBook.load("en", tmp_path)
    with pytest.raises(TemplateError, match="default language"):
        TemplateBook.load("xx", tmp_path)


def test_the_sandbox_refuses_unsafe_templates() -> None:
    sources = {"en": {"opening": {"no_show": "x"}, "sms": "{{ ''.__class__.__mro__ }}"}}
    with pytest.raises(TemplateError):
        TemplateBook(sources, "en").render("sms", "en", sample_contexts("no_show")[0])


def test_html_is_escaped(book: TemplateBook) -> None:
    context = sample_contexts("no_show")[0]
    hostile = type(context)(**{**context.__dict__, "name": "<script>x</script>"})
    assert "<script>" not in book.render("email_html", "en", hostile)


def _command(**changes: object) -> NotificationCommand:
    start = datetime(2026, 3, 2, 10, 0, tzinfo=VILNIUS)
    values: dict[str, object] = {
        "event_id": "case-9:3",
        "occurred_at": start,
        "source": "scheduler",
        "idempotency_key": "case-9:3",
        "case_id": "case-9",
        "attempt_number": 3,
        "patient_id": "pat-9",
        "channel": "call_task",
        "template": "no_show",
        "reason": "no_show",
        "department": "dental",
        "timezone": "Europe/Vilnius",
        "stage_name": "Implant",
        "stage_deadline": start + timedelta(days=20),
        "doctor_notes": "Check healing first.",
        "window_start": start,
        "window_end": start + timedelta(hours=6),
        "previous_attempts": [
            AttemptSummary(attempt_number=1, channel="sms", at=start, outcome="delivered")
        ],
    }
    values.update(changes)
    return NotificationCommand.model_validate(values)


def _contact(shared: int = 1) -> Contact:
    return Contact(
        patient_id="pat-9",
        given_name="Ivan",
        family_name="Petrov",
        phone_raw="+359881234567",
        phone="+359881234567",
        email=None,
        language="bg",
        timezone="Europe/Sofia",
        consent={"sms": True, "email": True, "call": True},
        phone_shared_by=shared,
    )


def _task(book: TemplateBook, action: str = "create", shared: int = 1) -> CallTaskEvent:
    cmd = _command()
    contact = _contact(shared)
    script = call_script(
        book,
        cmd,
        contact,
        clinic_name="Clinic",
        clinic_phone="+35920000000",
        rebook_url=None,
        default_language="en",
    )
    return build_call_task(
        cmd,
        contact,
        task_id=cmd.idempotency_key,
        action=action,
        script=script,
        now=cmd.window_start,
        report_url="http://x/calltasks/case-9:3/result",
        default_language="en",
    )


def test_call_task_says_who_why_stage_notes_attempts_and_script(book: TemplateBook) -> None:
    task = _task(book)
    assert task.patient_name == "Ivan Petrov" and task.phone == "+359881234567"
    assert task.language == "bg" and "Липсвахте" in task.script  # the patient's language
    assert task.stage_name == "Implant" and task.doctor_notes == "Check healing first."
    assert task.previous_attempts[0].outcome == "delivered"
    assert not task.phone_shared
    shared = _task(book, shared=3)
    # The warning in the script's language, before the greeting.
    assert shared.phone_shared and shared.script.startswith("Номерът се ползва от 3 пациенти")  # noqa: RUF001


def test_vtodo_parses_back(book: TemplateBook) -> None:
    task = _task(book)
    cal = icalendar.Calendar.from_ical(vtodo(task, "clinic.example"))
    todo = next(iter(cal.walk("VTODO")))
    assert str(todo["uid"]) == "case-9:3@clinic.example"
    assert todo.decoded("due") == task.window_end
    assert str(todo["status"]) == "NEEDS-ACTION"
    # A calendar copy leaves the doctor's notes out unless asked; nobody to ask: PUBLISH.
    assert "Check healing first." not in str(todo["description"])
    assert str(cal["method"]) == "PUBLISH" and "attendee" not in todo
    withdrawn = icalendar.Calendar.from_ical(
        vtodo(_task(book, "withdraw"), "clinic.example", organizer="fu@x", attendee="desk@x")
    )
    assert str(withdrawn["method"]) == "CANCEL"
    assert str(next(iter(withdrawn.walk("VTODO")))["status"]) == "CANCELLED"


def test_fhir_task_is_a_valid_r4_task(book: TemplateBook) -> None:
    resource = fhir_task(_task(book))
    assert resource["resourceType"] == "Task" and resource["status"] == "requested"
    assert resource["for"] == {"reference": "Patient/pat-9"}
    assert resource["identifier"][0]["value"] == "case-9:3"
    assert fhir_task(_task(book, "withdraw"))["status"] == "cancelled"


def test_email_message_id_is_deterministic_and_headers_are_set() -> None:
    assert message_id("case-1:1", "a@clinic.example") == message_id("case-1:1", "b@clinic.example")
    assert message_id("case-1:1", "a@x") != message_id("case-1:2", "a@x")
    msg = build_message(
        Email(
            to="p@example.org",
            subject="S",
            text="T",
            html="<p>T</p>",
            idempotency_key="case-1:1",
            list_unsubscribe="<https://x/u>",
        ),
        "followup@clinic.example",
    )
    assert msg["Message-ID"].endswith("@clinic.example>")
    assert msg["List-Unsubscribe"] == "<https://x/u>"
    assert msg.get_content_type() == "multipart/alternative"


def test_webhook_signature_recipe() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"s3cret", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert webhook_signature("s3cret", "1700000000", b"{}") == f"sha256={expected}"
