"""SMS templates within their segment budget, in their own language, with a working STOP word."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.notifier.sms_text import Encoding, classify_reply, segment_count
from services.notifier.templates import (
    REASONS,
    TEMPLATE_DIR,
    SmsSample,
    TemplateBook,
    TemplateError,
    sample_contexts,
    sms_budget_contexts,
)

LANGUAGES = ("en", "ru", "bg", "lt")
EXPECTED: dict[str, tuple[Encoding, int]] = {
    "en": ("gsm7", 2),
    "ru": ("ucs2", 3),
    "bg": ("ucs2", 3),
    "lt": ("ucs2", 3),
}
SAMPLE_VALUES = re.compile(
    r"Sample Clinic of Dental Health|Sample Clinic|\+370 5 200 0000|\+37052000000|"
    r"https://clinic\.example/rebook(/online)?|\d{4}-\d{2}-\d{2}( \d{2}:\d{2})?"
)


@pytest.fixture(scope="module")
def book() -> TemplateBook:
    return TemplateBook.load("en")


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("reason", REASONS)
def test_every_sms_stays_within_its_budget_with_the_longest_values(
    book: TemplateBook, language: str, reason: str
) -> None:
    encoding, budget = EXPECTED[language]
    for context in [*sms_budget_contexts(reason, SmsSample()), *sample_contexts(reason)]:
        text = book.render("sms", language, context)
        assert segment_count(text) <= (encoding, budget), text
        assert book.sms_budget(language, encoding) == budget


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_sms_names_a_stop_word_that_the_reply_reader_knows(
    book: TemplateBook, language: str
) -> None:
    text = book.render("sms", language, sample_contexts("no_show")[0])
    words = re.findall(r"\b(STOP|СТОП)\b", text)
    assert words, text
    assert all(classify_reply(word) == "opt_out" for word in words)


@pytest.mark.parametrize("language", ("ru", "bg"))
def test_cyrillic_sms_carry_no_latin_words(book: TemplateBook, language: str) -> None:
    for reason in REASONS:
        for context in sample_contexts(reason):
            text = SAMPLE_VALUES.sub("", book.render("sms", language, context))
            assert not re.search(r"[A-Za-z]", text), text


def test_the_lithuanian_sms_carries_no_english(book: TemplateBook) -> None:
    for reason in REASONS:
        for context in sample_contexts(reason):
            text = SAMPLE_VALUES.sub("", book.render("sms", "lt", context))
            assert not re.search(r"\b(HELP|help|please|call|book|reply|the|and|at)\b", text), text


def test_the_sms_leaves_the_stage_name_to_email_and_calls(book: TemplateBook) -> None:
    context = sample_contexts("stage_window_at_risk")[0]
    for language in LANGUAGES:
        assert "Implant" not in book.render("sms", language, context)
        assert "Implant" in book.render("email_text", language, context)


def write(directory: Path, language: str, source: dict[str, object]) -> None:
    (directory / f"{language}.yaml").write_text(yaml.safe_dump(source, allow_unicode=True))


def test_an_sms_over_budget_stops_the_start(tmp_path: Path) -> None:
    source = yaml.safe_load((TEMPLATE_DIR / "ru.yaml").read_text(encoding="utf-8"))
    source["sms"] = source["sms"] + " Мы всегда рады вам помочь и ответить на вопросы."
    write(tmp_path, "ru", source)
    with pytest.raises(TemplateError, match=r"ru/sms: \w+ takes 4 ucs2 segments.*budget is 3"):
        TemplateBook.load("ru", tmp_path)


def test_a_language_sets_its_own_budget(tmp_path: Path) -> None:
    source = yaml.safe_load((TEMPLATE_DIR / "lt.yaml").read_text(encoding="utf-8"))
    write(tmp_path, "lt", {**source, "sms_segment_budget": 2})
    with pytest.raises(TemplateError, match=r"lt/sms.*budget is 2"):
        TemplateBook.load("lt", tmp_path)
    long = source["sms"] + " Ačiū, kad rūpinatės savo sveikata." * 3
    write(tmp_path, "lt", {**source, "sms": long, "sms_segment_budget": 5})
    assert TemplateBook.load("lt", tmp_path).sms_budget("lt", "ucs2") == 5


@pytest.mark.parametrize("budget", [0, -1, "two", True, 2.5])
def test_a_budget_must_be_a_whole_number(tmp_path: Path, budget: object) -> None:
    write(tmp_path, "en", {"opening": {"generic": "x"}, "sms": "x", "sms_segment_budget": budget})
    with pytest.raises(TemplateError, match="en: sms_segment_budget"):
        TemplateBook.load("en", tmp_path)


def test_the_sites_own_values_are_checked_when_given() -> None:
    long_name = SmsSample(clinic_name="Vilniaus miesto odontologijos ir burnos chirurgijos centras")
    with pytest.raises(TemplateError, match="segments"):
        TemplateBook.load("en", sms_sample=long_name)
    # One letter outside GSM-7 turns the English SMS into UCS-2: 4 segments instead of 2.
    with pytest.raises(TemplateError, match="en/sms: no_show takes 4 ucs2 segments"):
        TemplateBook.load("en", sms_sample=SmsSample(clinic_name="Šypsena"))
    TemplateBook.load("en", sms_sample=SmsSample(clinic_name="Sypsena", rebook_url=None))


def test_the_short_sms_opening_never_mixes_languages() -> None:
    sources: dict[str, dict[str, Any]] = {
        "en": {
            "opening": {"no_show": "EN long"},
            "sms_opening": {"no_show": "EN short"},
            "sms": "{{ opening }}",
            "email_text": "{{ opening }}",
        },
        "lt": {"opening": {"no_show": "LT ilgas"}, "sms": "{{ opening }}"},
        "ru": {"opening": {"no_show": "RU"}, "sms_opening": {"no_show": "RU коротко"}},
    }
    book = TemplateBook(sources, "en")
    context = sample_contexts("no_show")[0]
    assert book.render("sms", "en", context) == "EN short"
    assert book.render("email_text", "en", context) == "EN long"
    assert book.render("sms", "lt", context) == "LT ilgas"  # lt's own opening, not en's SMS one
    assert book.render("sms", "ru", context) == "RU коротко"
    assert book.render("sms", "fr", context) == "EN short"


def test_the_documented_segment_table_is_what_the_templates_take(book: TemplateBook) -> None:
    doc = (Path(__file__).parents[3] / "docs" / "patient-words.md").read_text(encoding="utf-8")
    table = doc[doc.index("Billed segments per reason") : doc.index("The UCS-2 texts do not fit")]
    rows = {
        cells[0]: cells[2:5]
        for line in table.splitlines()
        if line.startswith("| ")
        and (cells := [c.strip() for c in line.split("|")[1:-1]])
        and cells[0] in LANGUAGES
    }
    assert set(rows) == set(LANGUAGES)
    for language, (longest, typical, no_url) in rows.items():
        contexts = {
            "longest": [sms_budget_contexts(r, SmsSample())[0] for r in REASONS],
            "typical": [sample_contexts(r)[0] for r in REASONS],
            "no_url": [replace(sample_contexts(r)[0], rebook_url=None) for r in REASONS],
        }
        for documented, kind in ((longest, "longest"), (typical, "typical"), (no_url, "no_url")):
            counted = [segment_count(book.render("sms", language, c))[1] for c in contexts[kind]]
            assert documented.split() == [str(n) for n in counted], (language, kind)
