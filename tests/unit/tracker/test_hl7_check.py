"""The offline connection check: python -m services.tracker.check FILE|-."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.tracker.check import main, split_messages

CORPUS = Path(__file__).parents[2] / "corpus" / "hl7"


def test_help_works() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.tracker.check", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "without sending anything" in done.stdout


def test_an_accepted_message_prints_its_events_and_the_aa(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        ["--timezone", "Europe/Vilnius", str(CORPUS / "28-vendor-sch11-stale-tq1-right.hl7")]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert '"start":"2026-03-02T09:30:00+02:00"' in out  # TQ1-7, not the stale SCH-11
    assert "MSA|AA|H-2" in out


def test_a_refused_message_prints_the_ack_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--timezone", "Europe/Vilnius", str(CORPUS / "41-baltic-dst-gap.hl7")])
    out = capsys.readouterr().out
    assert code == 1
    assert "REFUSED AE 102: TQ1-7 local time does not exist in Europe/Vilnius" in out
    assert "fix the message" in out and "ERR||TQ1^1^7|" in out


def test_mllp_captures_and_blank_line_separated_files_are_split(tmp_path: Path) -> None:
    one = (CORPUS / "01-hl7v25-s12.hl7").read_bytes()
    two = (CORPUS / "02-hl7v25-s13.hl7").read_bytes()
    assert split_messages(b"\x0b" + one + b"\x1c\r\n\x0b" + two + b"\x1c\r") == [one, two]
    assert len(split_messages(one.replace(b"\r", b"\n") + b"\n\n" + two)) == 2
    capture = tmp_path / "capture.bin"
    capture.write_bytes(b"\x0b" + one + b"\x1c\r\x0b" + two + b"\x1c\r")
    assert main([str(capture)]) == 0
