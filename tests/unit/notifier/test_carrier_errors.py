"""Carrier-error triage (services.notifier.carrier_errors): each class and its effect."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.notifier.carrier_errors import (
    EFFECTS,
    PROVIDERS,
    triage,
    triage_detail,
)


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (30006, "landline"),
        (21614, "landline"),
        (21635, "landline"),
        (21407, "landline"),
        (21211, "invalid_number"),
        (30005, "invalid_number"),
        (21401, "invalid_number"),
        (30003, "unreachable"),
        (30004, "unreachable"),
        (21612, "unreachable"),
        (21610, "carrier_opt_out"),
        (30007, "sender"),
        (30032, "sender"),
        (30034, "sender"),
        (21608, "sender"),
        (30001, "transient"),
        (30022, "transient"),
        (20429, "transient"),
        (30008, "unknown"),
    ],
)
def test_twilio_codes(code: int, error_class: str) -> None:
    assert triage("twilio", code).error_class == error_class
    assert triage("twilio", str(code)).error_class == error_class  # as a form field


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (4, "landline"),
        (14, "landline"),
        (3, "invalid_number"),
        (12, "invalid_number"),
        (2, "unreachable"),
        (7, "unreachable"),
        (9, "carrier_opt_out"),
        (6, "sender"),
        (8, "transient"),
        (1, "unknown"),
        (99, "unknown"),
    ],
)
def test_vonage_delivery_receipt_codes(code: int, error_class: str) -> None:
    assert triage("vonage", code).error_class == error_class


def test_landline_means_no_sms_to_that_number_and_a_call_to_confirm() -> None:
    effect = triage("twilio", 30006).effect
    assert effect.number == "no_sms"  # for every case of the patient, until a new number
    assert effect.retry == "none"
    assert effect.fall_back
    assert effect.task == "confirm_number"
    assert not effect.opt_out


def test_invalid_number_is_marked_wrong_everywhere_with_a_task_to_correct_it() -> None:
    effect = triage("twilio", 21211).effect
    assert effect.number == "wrong"
    assert effect.retry == "none"
    assert effect.fall_back
    assert effect.task == "correct_number"


def test_unreachable_keeps_the_number_and_tries_again_on_the_cadence() -> None:
    effect = triage("twilio", 30003).effect
    assert (effect.number, effect.retry, effect.fall_back, effect.task) == (
        "keep",
        "cadence",
        False,
        None,
    )


def test_carrier_opt_out_is_an_opt_out() -> None:
    effect = triage("twilio", 21610).effect
    assert effect.opt_out
    assert effect.retry == "none"
    assert effect.number == "keep"  # the number is right; the person said stop


def test_sender_problems_never_blame_the_number() -> None:
    for code in (30007, 30032, 30034, 20003):
        effect = triage("twilio", code).effect
        assert effect.number == "keep"
        assert not effect.opt_out
        assert effect.fall_back


def test_transient_and_unknown() -> None:
    assert triage("twilio", 30001).effect.retry == "backoff"
    unknown = triage("twilio", 39999)
    assert (unknown.error_class, unknown.meaning) == ("unknown", "undocumented code")
    assert unknown.effect.number == "keep"
    assert triage("twilio", None).error_class == "unknown"
    assert triage("twilio", "not a code").error_class == "unknown"
    with pytest.raises(ValueError, match="acme"):
        triage("acme", 1)


def test_only_opt_outs_record_an_opt_out_and_only_number_facts_change_the_number() -> None:
    assert [c for c, e in EFFECTS.items() if e.opt_out] == ["carrier_opt_out"]
    assert {c for c, e in EFFECTS.items() if e.number != "keep"} == {"landline", "invalid_number"}
    for table in PROVIDERS.values():
        assert set(c for c, _ in table.values()) <= set(EFFECTS)


@pytest.mark.parametrize(
    ("detail", "error_class"),
    [
        ("provider_21211", "invalid_number"),  # the stand-in's fail_next(400, code=21211)
        ("provider_30006", "landline"),  # a status callback's ErrorCode
        ("provider_21610", "carrier_opt_out"),
        ("provider_400", "unknown"),  # an HTTP status without a code
        ("provider_401", "sender"),
        ("gave_up_http_503", "transient"),
        ("gave_up_TimeoutError", "transient"),
        ("delivery_unknown", "unknown"),
        (None, "unknown"),
    ],
)
def test_failed_details_as_the_notifier_writes_them(detail: str | None, error_class: str) -> None:
    assert triage_detail(detail).error_class == error_class


def test_the_readme_table_is_the_table_in_use() -> None:
    readme = Path(__file__).parents[3] / "services" / "notifier" / "README.md"
    text = readme.read_text(encoding="utf-8")
    section = text[text.index("### Carrier-error triage") : text.index("## Configuration")]
    documented = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.split("|")[1:-1]]
            twilio = {int(code) for code in re.findall(r"\b\d{5}\b", cells[1])}
            vonage = {int(code) for code in re.findall(r"\b\d{1,2}\b", cells[2])}
            documented[cells[0].strip("`")] = (twilio, vonage)
    assert set(documented) == set(EFFECTS)
    for error_class, (twilio, vonage) in documented.items():
        assert twilio == {c for c, (k, _) in PROVIDERS["twilio"].items() if k == error_class}
        assert vonage == {c for c, (k, _) in PROVIDERS["vonage"].items() if k == error_class}
