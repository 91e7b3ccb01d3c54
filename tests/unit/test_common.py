from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import make_mocked_request

from common.ages import age_on
from common.clock import ManualClock, ScaledClock
from common.codec import DecodeError, dead_letter, decode, encode
from common.config import ConfigError, Settings, load
from common.http import bearer_token_ok
from common.logs import MASK, configure, get_logger, redact_personal_data
from schemas import AppointmentEvent
from schemas.topics import APPOINTMENTS
from tests.support.infra import REPO
from tests.support.samples import sample_events


def test_decode_refuses_garbage_with_a_reason() -> None:
    with pytest.raises(DecodeError) as info:
        decode(AppointmentEvent, b"\x00not json")
    assert info.value.error_type == "invalid_json"


def test_decode_reason_never_echoes_the_input() -> None:
    data = json.loads(encode(sample_events()[APPOINTMENTS]))
    data["start"] = "Ona Kazlauskiene +37060000001"
    with pytest.raises(DecodeError) as info:
        decode(AppointmentEvent, json.dumps(data).encode())
    assert info.value.error_type == "invalid_event"
    assert "start" in info.value.reason
    assert "Kazlauskiene" not in info.value.reason
    assert "37060000001" not in info.value.reason


def test_dead_letter_keeps_the_original_bytes_and_position() -> None:
    raw = b'{"half": '
    try:
        decode(AppointmentEvent, raw)
    except DecodeError as error:
        letter = dead_letter(
            raw,
            b"pat-9",
            error=error,
            service="tracker",
            now=datetime.now(UTC),
            topic="followup.appointments",
            partition=2,
            offset=41,
        )
    assert base64.b64decode(letter.original_b64) == raw
    assert letter.key() == b"pat-9"
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "followup.appointments",
        2,
        41,
    )
    assert letter.event_id == "dl:followup.appointments:2:41"


def test_config_error_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^FOLLOWUP_HTTP_PORT: .*integer.*'abc'"):
        load(Settings, {"FOLLOWUP_HTTP_PORT": "abc"})


def test_config_error_hides_secret_values() -> None:
    with pytest.raises(ConfigError) as info:
        load(Settings, {"FOLLOWUP_DATABASE_URL": "not a url with password hunter2"})
    assert "hunter2" not in str(info.value)
    assert str(info.value).startswith("FOLLOWUP_DATABASE_URL:")


def test_config_reads_defaults_and_values() -> None:
    settings = load(Settings, {"FOLLOWUP_HTTP_PORT": "9000", "FOLLOWUP_TOPIC_PREFIX": "x."})
    assert settings.http_port == 9000
    assert settings.topic_prefix == "x."


@pytest.mark.parametrize("service", ["tracker", "scheduler", "notifier"])
def test_wrong_port_stops_a_service_with_one_line(service: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        env={"FOLLOWUP_HTTP_PORT": "eighty", "PATH": "/usr/bin:/bin"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("configuration error: FOLLOWUP_HTTP_PORT:")


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    assert clock.now() == clock.now()
    clock.advance(timedelta(hours=1))
    assert clock.now() == datetime(2026, 1, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        ManualClock(datetime(2026, 1, 1))


def test_scaled_clock_runs_faster_from_its_anchor() -> None:
    real = datetime.now(UTC) - timedelta(seconds=10)
    virtual = datetime(2026, 1, 1, tzinfo=UTC)
    clock = ScaledClock(real, virtual, speed=3600)
    elapsed = clock.now() - virtual
    assert timedelta(hours=9, minutes=59) < elapsed < timedelta(hours=11)


def test_logs_mask_personal_keys_and_shapes() -> None:
    event = {
        "event": "sent",
        "phone": "+37060000001",
        "case_id": "case-1",
        "note": "wrote to ona@example.org at +370 600 00001",
    }
    out = redact_personal_data(None, "info", event)
    assert out["phone"] == MASK
    assert out["case_id"] == "case-1"
    assert "ona@example.org" not in out["note"] and "600 00001" not in out["note"]


def test_log_lines_keep_their_timestamp_while_masking_phones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("unit", fmt="json")
    try:
        get_logger("unit").info("called", note="rang +370 600 00001")
    finally:
        structlog.reset_defaults()  # later tests must not write to this test's capture
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert MASK not in line["timestamp"]
    datetime.fromisoformat(line["timestamp"])
    assert "600 00001" not in line["note"]


def test_bearer_token_must_match_and_an_empty_token_admits_nobody() -> None:
    def request(header: str | None) -> Any:
        return make_mocked_request("GET", "/", headers={"Authorization": header} if header else {})

    assert bearer_token_ok(request("Bearer s3cret"), "s3cret")
    assert not bearer_token_ok(request("Bearer wrong"), "s3cret")
    assert not bearer_token_ok(request(None), "s3cret")
    assert not bearer_token_ok(request("Bearer "), "")


def test_a_mapping_setting_is_read_as_json_and_bad_json_is_named() -> None:
    from pydantic import BaseModel, Field

    from common.config import ConfigError, load

    class Names(BaseModel):
        clinic_names: dict[str, str] = Field(default_factory=dict)

    names = load(Names, {"FOLLOWUP_CLINIC_NAMES": '{"lt": "Vilniaus klinika"}'})
    assert names.clinic_names == {"lt": "Vilniaus klinika"}
    with pytest.raises(ConfigError, match="FOLLOWUP_CLINIC_NAMES: not valid JSON"):
        load(Names, {"FOLLOWUP_CLINIC_NAMES": "{lt"})


def test_age_on_counts_whole_years_and_a_leap_day_birthday() -> None:
    assert age_on(date(2008, 3, 2), date(2026, 3, 1)) == 17
    assert age_on(date(2008, 3, 2), date(2026, 3, 2)) == 18
    assert age_on(date(2016, 2, 29), date(2026, 2, 28)) == 9  # the birthday is on 1 March
    assert age_on(date(2016, 2, 29), date(2026, 3, 1)) == 10
