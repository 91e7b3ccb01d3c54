"""Children who were not brought (issue 18) in the notifier: a child's messages address
the parent or guardian in every shipped language; the safeguarding lead's task says what it
is. The texts are the shipped templates (services/notifier/templates/*.yaml)."""

from __future__ import annotations

import pytest

from services.notifier.calltasks import (
    DeskView,
    build_call_task,
    call_script,
    escalation_brief,
    summary_lines,
)
from services.notifier.templates import MessageContext, TemplateBook
from tests.unit.notifier.samples import command, contact

# "your child" in each language (the guardian openings' own words).
YOUR_CHILD = {"en": "your child", "lt": "Jūsų vaikui", "ru": "вашему ребёнку", "bg": "детето ви"}


@pytest.fixture(scope="module")
def book() -> TemplateBook:
    return TemplateBook.load("en")


def context_for(audience: str, language: str) -> MessageContext:
    return MessageContext.for_command(
        command("sms", audience=audience),
        contact(language=language, given_name="Ona"),
        reason="no_show",
        clinic_name="Sample Clinic",
        clinic_phone="+37052000000",
        rebook_url=None,
    )


@pytest.mark.parametrize("language", sorted(YOUR_CHILD))
@pytest.mark.parametrize("part", ["sms", "email_text", "email_subject", "call_script"])
def test_a_childs_message_addresses_the_guardian_not_the_child(
    book: TemplateBook, language: str, part: str
) -> None:
    text = book.render(part, language, context_for("guardian", language))  # type: ignore[arg-type]
    if part != "email_subject":
        assert YOUR_CHILD[language] in text
    assert "Ona" not in text  # the child is not greeted by name
    patient_text = book.render(part, language, context_for("patient", language))  # type: ignore[arg-type]
    assert YOUR_CHILD[language] not in patient_text


def test_the_guardian_opening_may_name_the_visit_but_never_when_redacted(
    book: TemplateBook,
) -> None:
    visit = command("email", audience="guardian", appointment_start=command().window_start)
    plain = MessageContext.for_command(
        visit,
        contact(language="en"),
        reason="no_show",
        clinic_name="Sample Clinic",
        clinic_phone="+37052000000",
        rebook_url=None,
    )
    assert "(the visit on " in book.render("email_text", "en", plain)
    hidden = MessageContext(**{**plain.__dict__, "redacted": True})
    text = book.render("email_text", "en", hidden)
    assert "your child" in text and "(the visit on " not in text


@pytest.mark.parametrize("language", sorted(YOUR_CHILD))
def test_the_call_script_for_a_child_asks_for_a_parent_or_guardian(
    book: TemplateBook, language: str
) -> None:
    script = call_script(
        book,
        command("call_task", audience="guardian"),
        contact(language=language),
        clinic_name="Sample Clinic",
        clinic_phone="+37052000000",
        rebook_url=None,
        default_language="en",
    )
    first = script.splitlines()[0]
    assert first == book.phrase(language, "guardian_call")
    assert book.own_phrases(language) >= {"guardian_call"}  # no English in another language


def test_the_safeguarding_leads_task_says_what_it_is(book: TemplateBook) -> None:
    escalation = command(
        "call_task",
        purpose="escalation",
        escalate_to="safeguarding_lead",
        owner="safeguarding_lead",
        template="safeguarding_escalation",
        audience="guardian",
        safeguarding=True,
    )
    for language, word in (("en", "SAFEGUARDING"), ("lt", "VAIKO APSAUGA")):
        brief = escalation_brief(escalation, DeskView(language=language))
        assert brief[1].startswith(word)
    ordinary = command("call_task", purpose="escalation", escalate_to="dr-7")
    assert not any("SAFEGUARDING" in line for line in escalation_brief(ordinary, DeskView()))
    task = build_call_task(
        escalation,
        contact(),
        task_id="case-1:1",
        action="create",
        script="...",
        now=escalation.window_start,
        report_url=None,
        default_language="en",
    )
    assert task.safeguarding and task.owner == "safeguarding_lead"
    lines = summary_lines(task, DeskView())
    assert any(line.startswith("SAFEGUARDING") for line in lines)
    assert "birth" not in task.model_dump_json()  # no birth date reaches a sink
