"""What the administrator (or, for an escalation, the doctor) reads: the clinic's language
and zone, words instead of codes, the script in calling order, escalations as their own
thing, clinical notes out of calendar copies, and iTIP-correct VTODOs (pure)."""

from __future__ import annotations

from datetime import timedelta

import icalendar
import pytest

from common.config import ConfigError
from schemas.events import AttemptSummary, CallTaskEvent
from services.notifier import localise, registry
from services.notifier.calltasks import (
    DeskView,
    build_call_task,
    call_script,
    subject,
    summary_lines,
    vtodo,
)
from services.notifier.settings import NotifierSettings
from services.notifier.templates import TemplateBook
from tests.unit.notifier import samples

LT_DESK = DeskView(language="lt", timezone="Europe/Vilnius")


@pytest.fixture(scope="module")
def book() -> TemplateBook:
    return TemplateBook.load("en")


def _escalation(**changes: object) -> object:
    start = samples.command("call_task").window_start
    values: dict[str, object] = dict(
        purpose="escalation",
        escalate_to="dr-7",
        reason="stage_window_at_risk",
        stage_name="Implantas",
        stage_deadline=start + timedelta(days=3),
        doctor_notes="Check healing first.",
        previous_attempts=[
            AttemptSummary(attempt_number=1, channel="sms", at=start, outcome="delivered"),
            AttemptSummary(
                attempt_number=2,
                channel="call_task",
                at=start + timedelta(days=1),
                outcome="no_answer",
            ),
        ],
    )
    return samples.command("call_task", **{**values, **changes})


def _task(
    book: TemplateBook, command: object, view: DeskView = LT_DESK, **contact: object
) -> CallTaskEvent:
    person = samples.contact(**contact)
    script = call_script(
        book,
        command,  # type: ignore[arg-type]
        person,
        clinic_name={"lt": "Šypsenos klinika"}.get,  # type: ignore[arg-type]
        clinic_phone="+37052000000",
        rebook_url=None,
        default_language="en",
        view=view,
    )
    return build_call_task(
        command,  # type: ignore[arg-type]
        person,
        task_id="case-1:1",
        action="create",
        script=script,
        now=command.window_start,  # type: ignore[attr-defined]
        report_url=None,
        default_language="en",
        report_links={"rebooked": "https://fu.clinic/call-tasks/report/t1"},
    )


def test_the_script_is_in_calling_order_with_the_clinics_name_in_the_patients_language(
    book: TemplateBook,
) -> None:
    task = _task(book, samples.command("call_task"))
    steps = task.script.splitlines()
    assert steps[0].startswith("1. Pasisveikinkite") and "Šypsenos klinika" in steps[0]
    assert steps[1].startswith("2. Prieš sakydami bet kokią informaciją")  # identity first
    assert steps[2].startswith("3. Kodėl skambinate") and "Pasigedome" in steps[2]
    assert steps[3].startswith("4. Pasiūlykite") and steps[4].startswith("5. Rezultatą įrašykite")
    assert "the clinic" not in task.script and "Number shared" not in task.script


@pytest.mark.parametrize("language", localise.LANGUAGES)
def test_the_shared_number_warning_is_in_the_scripts_language(
    book: TemplateBook, language: str
) -> None:
    task = _task(book, samples.command("call_task"), language=language, phone_shared_by=2)
    first = task.script.splitlines()[0]
    assert first == localise.word(language, "shared_number", count=2)
    assert ("Number shared" in first) == (language == "en")


def test_the_summary_reads_in_the_clinics_language_and_zone_with_words_not_codes(
    book: TemplateBook,
) -> None:
    task = _task(book, _escalation())
    text = "\n".join(summary_lines(task, LT_DESK))
    assert "Priežastis: kitas gydymo etapas neužregistruotas" in text
    assert "2026 m. kovo 2 d. 10:00 (Europe/Vilnius)" in text  # not 08:00Z
    assert "Z" not in text.split("Pokalbio planas")[0].replace("Zone", "")
    assert "SMS, 2026 m. kovo 2 d. 10:00 (Europe/Vilnius): pristatyta" in text
    assert "skambutis, 2026 m. kovo 3 d. 10:00 (Europe/Vilnius): neatsiliepė" in text
    assert "- užregistruotas iš naujo: https://fu.clinic/call-tasks/report/t1" in text
    assert "stage_window_at_risk" not in text and "no_answer" not in text
    assert "Gydytojo pastabos: Check healing first." in text
    assert "Check healing first." not in "\n".join(summary_lines(task, LT_DESK.without_notes()))


def test_an_escalation_says_which_deadline_what_was_tried_and_what_to_decide(
    book: TemplateBook,
) -> None:
    task = _task(book, _escalation())
    brief = task.script.split("\n\n")[0].splitlines()
    assert brief == [
        "ESKALAVIMAS: reikia jūsų sprendimo.",
        "Gresia praleisti terminą: Implantas, iki 2026 m. kovo 5 d.",
        "Kas jau bandyta:",
        "1. SMS, 2026 m. kovo 2 d. 10:00 (Europe/Vilnius): pristatyta",
        "2. skambutis, 2026 m. kovo 3 d. 10:00 (Europe/Vilnius): neatsiliepė",
        "Prašomas sprendimas: paskambinti pacientui patiems, pakeisti gydymo plano terminą "
        "arba užbaigti stebėseną (įrašyti „atsisakė“).",
    ]
    assert subject(task, LT_DESK).startswith("Eskalavimas, reikia sprendimo:")
    ordinary = _task(book, samples.command("call_task"))
    assert subject(ordinary, LT_DESK) == "Skambučio užduotis: neatvyko į vizitą (pat-1)"
    assert "ESKALAVIMAS" not in ordinary.script
    english = _task(book, _escalation(previous_attempts=[], stage_deadline=None), DeskView())
    assert "Nothing was tried yet." in english.script
    assert "No stage deadline is known" in english.script


def test_a_vtodo_to_a_person_is_an_itip_request_with_organizer_and_attendee(
    book: TemplateBook,
) -> None:
    task = _task(book, _escalation())
    cal = icalendar.Calendar.from_ical(
        vtodo(
            task,
            "clinic.example",
            view=LT_DESK.without_notes(),
            organizer="fu@clinic.example",
            attendee="dr@clinic.example",
        )
    )
    todo = next(iter(cal.walk("VTODO")))
    assert str(cal["method"]) == "REQUEST"
    assert str(todo["organizer"]) == "mailto:fu@clinic.example"
    assert str(todo["attendee"]) == "mailto:dr@clinic.example"
    assert todo["attendee"].params["PARTSTAT"] == "NEEDS-ACTION"
    assert int(str(todo["priority"])) == 1 and str(todo["summary"]).startswith("Eskalavimas")
    assert "Check healing first." not in str(todo["description"])  # calendars: no notes


def test_escalations_have_their_own_sinks_and_the_clinic_its_names() -> None:
    s = NotifierSettings.model_validate(
        {
            "call_task_sinks": "email,kafka",
            "escalation_sinks": "email",
            "clinic_name": "Clinic",
            "clinic_names": {"lt": "Klinika"},
        }
    )
    assert s.sinks_for("follow_up") == ["email", "kafka"]
    assert s.sinks_for("escalation") == ["email"]
    assert NotifierSettings().sinks_for("escalation") == ["kafka"]  # unset: the same sinks
    assert (s.clinic_name_in("lt-LT"), s.clinic_name_in("ru")) == ("Klinika", "Clinic")
    # The site names none: empty, and the templates write each language's generic word.
    assert NotifierSettings().clinic_name_in("lt") == ""


def test_escalation_sinks_are_built_and_checked_with_the_others() -> None:
    both = NotifierSettings.model_validate(
        {
            "call_task_sinks": "kafka",
            "escalation_sinks": "kafka,webhook",
            "webhook_url": "http://t",
            "webhook_secret": "s",
        }
    )
    assert registry.wanted_sinks(both) == ["kafka", "webhook"]
    with pytest.raises(
        ConfigError, match=r"FOLLOWUP_ESCALATION_SINKS: unknown sink\(s\) \['pager'\]"
    ):
        registry.wanted_sinks(NotifierSettings.model_validate({"escalation_sinks": "pager"}))
    with pytest.raises(ConfigError, match="webhook sink needs"):
        registry.wanted_sinks(NotifierSettings.model_validate({"escalation_sinks": "webhook"}))
