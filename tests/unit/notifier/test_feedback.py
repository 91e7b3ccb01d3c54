"""Reading the patient's answer to the feedback question (pure)."""

from __future__ import annotations

import pytest

from services.notifier.feedback import Answer, read_answer


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("5", Answer(5, None)),
        (" 4/5 ", Answer(4, None)),
        ("4 - the doctor was kind", Answer(4, "the doctor was kind")),
        ("5! Ačiū", Answer(5, "Ačiū")),
        ("3. Ilgai laukiau\neilėje", Answer(3, "Ilgai laukiau eilėje")),
        ("1 очень долго ждала", Answer(1, "очень долго ждала")),
    ],
)
def test_a_number_from_1_to_5_first_is_the_rating_and_the_rest_the_comment(
    text: str, answer: Answer
) -> None:
    assert read_answer(text) == answer


@pytest.mark.parametrize(
    "text", ["", "thanks", "0", "6", "12", "3:30 tomorrow?", "4.5", "10/10", "five"]
)
def test_anything_else_is_a_plain_reply(text: str) -> None:
    assert read_answer(text) is None


def test_a_long_comment_is_cut() -> None:
    found = read_answer("2 " + "x" * 5000)
    assert found is not None and found.comment is not None and len(found.comment) == 1000
