"""The policy file: defaults, overrides, and refusals that name the file and the line."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

import pytest

from services.scheduler.policy import (
    DEFAULT_POLICY_PATH,
    CadencePolicy,
    PolicyError,
    TimeRange,
    parse_duration,
)

SHIPPED = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")


def line_of(text: str, fragment: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if fragment in line:
            return number
    raise AssertionError(fragment)


def refused(text: str, tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        CadencePolicy.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:"), message
    return message


def test_the_shipped_policy_loads_with_its_overrides() -> None:
    policy = CadencePolicy.load(DEFAULT_POLICY_PATH)
    general = policy.rules_for("cardiology", "no_show")
    dental = policy.rules_for("dental", "no_show")
    stage = policy.rules_for("dental", "stage_window_at_risk")
    assert general.business_hours["sat"] is None
    assert dental.business_hours["sat"] == TimeRange(time(9), time(14))
    assert dental.business_hours["mon"] == general.business_hours["mon"]  # merged, not replaced
    assert stage.max_attempts == 5 and stage.rebook_lead == timedelta(days=3)
    assert stage.business_hours["sat"] is not None  # department layer under the reason
    assert general.template_for("sms", "no_show", None) == "no_show_sms"


def test_department_reason_override_is_the_most_specific_layer() -> None:
    text = SHIPPED.replace(
        '      sat: "09:00-14:00"\n',
        '      sat: "09:00-14:00"\n    reasons:\n      no_show:\n        max_attempts: 2\n',
    )
    policy = CadencePolicy.from_text(text)
    assert policy.rules_for("dental", "no_show").max_attempts == 2
    assert policy.rules_for("dental", "late_cancellation").max_attempts == 4
    assert policy.rules_for("surgery", "no_show").max_attempts == 6


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("PT2H", timedelta(hours=2)),
        ("P1D", timedelta(days=1)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("PT30M", timedelta(minutes=30)),
        ("P1W", timedelta(weeks=1)),
        (3, timedelta(hours=3)),
        (1.5, timedelta(minutes=90)),
    ],
)
def test_durations(value: object, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", ["2h", "P", "PT", "P1DT", -1, True, "P1H"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "{delay: P2D, channel: email}",
            "{delay: P2D, channel: fax}",
            "steps.3.channel",
            id="wrong step",
        ),
        pytest.param(
            'sat: "09:00-14:00"',
            'sat: "14:00-09:00"',
            "business_hours.sat",
            id="wrong override",
        ),
        pytest.param(
            "  max_attempts: 6\n",
            "  max_attempts: 6\n  max_attempt: 7\n",
            "max_attempt: Extra inputs",
            id="unknown key",
        ),
        pytest.param(
            "  late_cancellation:\n",
            "  late_cancelation:\n",
            "unknown reason",
            id="unknown reason",
        ),
    ],
)
def test_a_wrong_entry_is_refused_with_its_own_line(
    old: str, new: str, expected: str, tmp_path: Path
) -> None:
    assert old in SHIPPED  # else the replacement below would test the shipped file
    text = SHIPPED.replace(old, new)
    # The line of the changed entry itself (for an override: the override's line).
    wrong = new.strip().splitlines()[-1].strip()
    assert f":{line_of(text, wrong)}: {expected}" in refused(text, tmp_path)


def test_a_missing_field_is_refused(tmp_path: Path) -> None:
    text = SHIPPED.replace("  rebook_lead: P2D", "")
    assert "rebook_lead: Field required" in refused(text, tmp_path)


def test_a_wrong_time_range_and_a_missing_template(tmp_path: Path) -> None:
    text = SHIPPED.replace('evening: "15:00-18:00"', 'evening: "15:00-25:00"')
    assert f":{line_of(text, '15:00-25:00')}: call_slots.evening" in refused(text, tmp_path)
    text = SHIPPED.replace('    email: "{reason}_email"\n', "")
    assert "templates: a template is needed for every channel" in refused(text, tmp_path)


def test_no_time_left_for_calls_is_refused(tmp_path: Path) -> None:
    text = SHIPPED.replace("min_call_window: PT30M", "min_call_window: PT3H")
    text = text.replace('afternoon: "12:00-15:00"', 'afternoon: "12:00-14:00"')
    text = text.replace('morning: "08:00-12:00"', 'morning: "08:00-10:00"')
    text = text.replace('evening: "15:00-18:00"', 'evening: "15:00-17:00"')
    assert "business_hours: with call_slots it leaves no weekday time" in refused(text, tmp_path)


def test_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    text = SHIPPED.replace("  max_attempts: 6\n", "  max_attempts: [6\n")
    assert "not valid YAML" in refused(text, tmp_path)
    with pytest.raises(PolicyError, match="cannot read"):
        CadencePolicy.load(tmp_path / "absent.yaml")


def test_times_of_day_are_not_read_as_base_60_numbers() -> None:
    text = SHIPPED.replace('mon: "08:00-18:00"', "mon: 12:00-18:00")
    policy = CadencePolicy.from_text(text)
    assert policy.rules_for("x", "no_show").business_hours["mon"] == TimeRange(time(12), time(18))
