"""Reply words per language and segments as carriers bill them (services.notifier.sms_text)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.notifier.sms_text import (
    REPLY_WORDS,
    classify_reply,
    encoding_of,
    read_reply,
    segment_count,
    segments_within_budget,
)

BE = "\N{CYRILLIC SMALL LETTER BE}"
DOTLESS_I = "\N{LATIN SMALL LETTER DOTLESS I}"

EVERY_WORD = [
    (language, meaning, word)
    for language, words in REPLY_WORDS.items()
    for meaning in ("opt_out", "opt_in", "help")
    for word in sorted(getattr(words, meaning))
]


@pytest.mark.parametrize(("language", "meaning", "word"), EVERY_WORD)
def test_every_listed_word_means_what_the_list_says(language: str, meaning: str, word: str) -> None:
    assert classify_reply(word) == meaning
    assert classify_reply(f"  {word.upper()}!! ") == meaning
    assert classify_reply(word.capitalize() + ".") == meaning


@pytest.mark.parametrize(("language", "meaning", "word"), EVERY_WORD)
def test_every_word_with_a_politeness_word_of_its_language(
    language: str, meaning: str, word: str
) -> None:
    for polite in REPLY_WORDS[language].politeness:
        assert classify_reply(f"{word}, {polite}") == meaning
        assert classify_reply(f"{polite.capitalize()} {word}!") == meaning


def test_the_regulators_and_carriers_words_are_all_opt_outs() -> None:
    # FCC 24-18 (47 CFR 64.1200(a)(10)) and Twilio's default list, as patients type them.
    for word in ("STOP", "Quit", "end", "REVOKE", "opt out", "Opt-Out", "optout", "Cancel",
                 "unsubscribe", "STOPALL", "stop all", "Stop_All"):  # fmt: skip
        assert classify_reply(word) == "opt_out", word
    assert classify_reply("revoke") == "opt_out"  # the repro


@pytest.mark.parametrize(
    ("body", "language"),
    [
        ("atsisakyti", "lt"),
        ("ATSISAKYTI", "lt"),
        ("nebesiųsti", "lt"),
        ("nebesiusti", "lt"),  # without diacritics, as phones without a Lithuanian keyboard send
        ("atsaukti", "lt"),
        ("Nesiųskite, prašau", "lt"),
        ("стоп", "ru"),
        ("СТОП", "ru"),
        ("отписаться", "ru"),
        ("Хватит.", "ru"),
        ("стоп, пожалуйста", "ru"),
        ("otpisatsya", "ru"),  # transliterated
        ("cтоп", "ru"),  # noqa: RUF001 (a Latin c in a Cyrillic word)
        ("cтoп", "ru"),  # Latin c and o
        ("cnjg", "ru"),  # "стоп" typed with the Latin layout on
        ("спри", "bg"),
        ("Спри, моля!", "bg"),
        ("отписване", "bg"),
        ("otpishi", "bg"),
        ("stopp", "en"),
        ("sotp", "en"),
        ("Stop texting me", "en"),
        ("please stop", "en"),
        ("STOP STOP STOP", "en"),
        ("stop 🙏", "en"),
        ("ыещз", "en"),  # "stop" typed with the Russian layout on
    ],
)
def test_opt_outs_as_patients_type_them(body: str, language: str) -> None:
    assert read_reply(body).meaning == "opt_out"
    assert read_reply(body).language == language


@pytest.mark.parametrize(
    "body",
    [
        "stop by tomorrow?",
        "Please stop by",
        "Can I cancel my appointment?",
        "Cancel my visit, I will call",
        "I will end up late",
        "The pain stopped",
        "stopped",
        "unstoppable",
        "stop stop by",
        "yes please call me tomorrow",
        "Thank you",
        "please",
        "helpful, thanks",
        "Хорошо, перезвоните",
        "Стоп, а когда следующий приём?",  # noqa: RUF001
        "Ačiū, paskambinsiu",
        "Благодаря, ще се обадя",  # noqa: RUF001
        "",
        "   ",
        "!!!",
        "🙏",
        "утв",  # "end" on the Russian layout, but also an abbreviation: short words are not folded
    ],
)
def test_near_misses_stay_a_conversation(body: str) -> None:
    assert read_reply(body).meaning == "reply"
    assert read_reply(body).language is None


def test_opt_in_and_help_in_every_language() -> None:
    assert classify_reply("START") == "opt_in"
    assert classify_reply("Unstop") == "opt_in"
    assert classify_reply("pradeti") == "opt_in"
    assert classify_reply("Старт") == "opt_in"
    assert classify_reply("започни") == "opt_in"
    assert classify_reply("HELP") == "help"
    assert classify_reply("info?") == "help"
    assert classify_reply("Pagalba") == "help"
    assert classify_reply("помощь") == "help"
    assert classify_reply("Помощ") == "help"


def test_no_spelling_means_two_things() -> None:
    # Folding (case, accents, lookalikes, keyboard layouts) must not make an opt-in word
    # read as an opt-out word or the other way round.
    from services.notifier.sms_text import _keys

    meanings = {
        meaning: set().union(*(_keys(getattr(w, meaning)) for w in REPLY_WORDS.values()))
        for meaning in ("opt_out", "opt_in", "help")
    }
    assert not meanings["opt_out"] & meanings["opt_in"]
    assert not meanings["opt_out"] & meanings["help"]
    assert not meanings["opt_in"] & meanings["help"]


# --- segments ------------------------------------------------------------------------------


def test_single_segment_limits() -> None:
    assert segment_count("") == ("gsm7", 1)
    assert segment_count("a" * 160) == ("gsm7", 1)
    assert segment_count("€" * 80) == ("gsm7", 1)
    assert segment_count("€" * 79 + "a" * 3) == ("gsm7", 2)
    assert segment_count("ж" * 70) == ("ucs2", 1)
    assert segment_count("😀" * 35) == ("ucs2", 1)
    assert segment_count("😀" * 35 + "ж") == ("ucs2", 2)


def test_concatenated_parts_hold_153_septets_or_67_units() -> None:
    assert segment_count("a" * 161) == ("gsm7", 2)
    assert segment_count("a" * 306) == ("gsm7", 2)
    assert segment_count("a" * 307) == ("gsm7", 3)
    assert segment_count("ж" * 71) == ("ucs2", 2)
    assert segment_count("ж" * 134) == ("ucs2", 2)
    assert segment_count("ж" * 135) == ("ucs2", 3)


def test_an_escape_pair_is_never_split_across_segments() -> None:
    assert segment_count("a" * 152 + "€" + "a" * 152) == ("gsm7", 3)  # the repro
    assert segment_count("a" * 151 + "€" + "a" * 153) == ("gsm7", 2)  # fits exactly
    assert segment_count("a" * 152 + "[" + "a" * 151) == ("gsm7", 2)  # 152 | 2+151
    assert segment_count("a" * 152 + "[" + "a" * 152) == ("gsm7", 3)


def test_a_surrogate_pair_is_never_split_across_segments() -> None:
    assert segment_count(BE * 66 + "😀" + BE * 66) == ("ucs2", 3)  # the repro
    assert segment_count(BE * 65 + "😀" + BE * 67) == ("ucs2", 2)  # fits exactly


def test_encodings_of_the_four_languages() -> None:
    assert encoding_of("Reply STOP to opt out.") == "gsm7"
    assert encoding_of("Ответьте СТОП") == "ucs2"
    assert encoding_of("Jūsų vizitas") == "ucs2"  # Lithuanian ū is not GSM-7
    assert encoding_of("Pasigedome Jusu") == "gsm7"


def test_national_single_shift_tables_are_off_unless_asked_for() -> None:
    turkish = "Randevunuzu kaçırdınız; lütfen bizi arayın. Şişli Kliniği"  # noqa: RUF001
    assert segment_count(turkish) == ("ucs2", 1)
    assert segment_count(turkish * 3) == ("ucs2", 3)
    # With the Turkish table the text stays GSM-7: its letters cost two septets each.
    assert segment_count(turkish * 3, shift_tables=("tr",)) == ("gsm7", 2)
    # The shift table's UDH element leaves 155 septets alone, 149 per part.
    assert segment_count(DOTLESS_I + "a" * 153, shift_tables=("tr",)) == ("gsm7", 1)
    assert segment_count(DOTLESS_I + "a" * 154, shift_tables=("tr",)) == ("gsm7", 2)
    assert segment_count(DOTLESS_I + "a" * 296, shift_tables=("tr",)) == ("gsm7", 2)
    assert segment_count(DOTLESS_I + "a" * 297, shift_tables=("tr",)) == ("gsm7", 3)
    # A table that does not cover the text changes nothing; Cyrillic has no table.
    assert segment_count("ж" * 71, shift_tables=("tr", "es")) == ("ucs2", 2)
    assert segment_count("¿Cuándo?", shift_tables=("es",)) == ("gsm7", 1)
    with pytest.raises(ValueError, match="xx"):
        segment_count(DOTLESS_I, shift_tables=("xx",))


def test_segment_budget() -> None:
    assert segments_within_budget("a" * 306, 2)
    assert not segments_within_budget("a" * 307, 2)
    assert segments_within_budget(BE * 201, 3)
    assert not segments_within_budget(BE * 66 + "😀" + BE * 66, 2)
    with pytest.raises(ValueError, match="at least 1"):
        segments_within_budget("a", 0)


def test_the_documented_lists_are_the_lists_in_use() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "patient-words.md").read_text(encoding="utf-8")
    lists = doc[doc.index("## The lists") : doc.index("## Segments")]
    rows = {
        line.split("|")[1].strip(): line
        for line in lists.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip() in REPLY_WORDS
    }
    assert set(rows) == set(REPLY_WORDS)
    for language, words in REPLY_WORDS.items():
        cells = [cell.strip() for cell in rows[language].split("|")[2:6]]
        for kind, documented in zip(
            ("opt_out", "opt_in", "help", "politeness"), cells, strict=True
        ):
            for word in getattr(words, kind):
                assert re.search(rf"(^|[\s,;]){re.escape(word)}([\s,;(]|$)", documented), (
                    f"{language} {kind} {word!r} is not in docs/patient-words.md"
                )
