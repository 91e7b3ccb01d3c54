"""The stage explained for the patient: the plan's text in the patient's language, else the
department's own, never another language's; in email and chat, hidden when redacted."""

from __future__ import annotations

import pytest

from schemas.events import StageEducation
from services.notifier.channels import ClinicVoice
from services.notifier.templates import TemplateBook
from tests.unit.notifier.samples import command, contact

BOOK = TemplateBook.load("en")
PLAN = [
    StageEducation(language="lt", text="Implantas turi sugyti.", url="https://x.example/lt"),
    StageEducation(language="ru", text="Имплант должен прижиться."),
]
DEPARTMENT = {"dental": [StageEducation(language="bg", text="Имплантът трябва да зарасне.")]}
VOICE = ClinicVoice("Clinic", "+37052000000", None, "en", education=DEPARTMENT)


@pytest.mark.parametrize(
    # bg: the department's own (the plan has none in Bulgarian)
    ("language", "lead", "text"),
    [
        ("lt", "Kodėl tai svarbu:", "Implantas turi sugyti. Daugiau: https://x.example/lt"),
        ("lt-LT", "Kodėl tai svarbu:", "Implantas turi sugyti."),
        ("ru", "Почему это важно:", "Имплант должен прижиться."),
        ("bg", "Защо това е важно:", "Имплантът трябва да зарасне."),  # noqa: RUF001
    ],
)
def test_the_email_explains_the_stage_in_the_patients_language(
    language: str, lead: str, text: str
) -> None:
    context = VOICE.context(command("email", education=PLAN), contact(language=language))
    body = BOOK.render("email_text", language, context)
    assert f"{lead} {text}" in body
    html = BOOK.render("email_html", language, context)
    assert lead in html and text.split(" Daugiau:")[0] in html


def test_no_explanation_in_a_language_the_plan_and_department_lack() -> None:
    context = VOICE.context(command("email", education=PLAN), contact(language="en"))
    assert context.education is None
    assert "Why it matters" not in BOOK.render("email_text", "en", context)


def test_a_redacted_message_keeps_the_stage_to_itself() -> None:
    context = VOICE.context(command("email", education=PLAN), contact(language="lt"), redacted=True)
    assert "Implantas" not in BOOK.render("email_text", "lt", context)
    assert context.variables("lt")["education"] is None
