"""Log redaction that recognises phones and emails without eating ids, applied to the
client libraries' records too, which come out as our JSON lines and are rate-limited."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from common.logs import MASK, RepeatLimiter, configure, redact_text

PHONES = [
    "+37060000001",
    "+370 600 00001",
    "+1 (555) 123-4567",
    "+44 20 7946 0958",
    "+7 912 345-67-89",
    "0048 612 345 678",
    "(555) 123-4567",
    "555-123-4567",
    "555.123.4567",
    "8 (912) 345-67-89",
    "0612 345 678",
    "0612345678",
    "89123456789",
]
IDS_AND_NUMBERS = [
    "pat-123456789",
    "appt_1234567890",
    "APT-2026-000123456",
    "dl:followup.appointments:2:123456789",
    "no_show:appt-123456789",
    "case/123456789012",
    "offset 1234567890",
    "took 1234567 ms",
    "2026-03-02T10:00:00+02:00",
    "2026-03-02 10:00:00.123456",
    "02.03.2026",
    "10.200.30.40",
    "127.0.0.1:19092",
    "commit 0e56ca5d",
    "1733040000.123",
]


@pytest.mark.parametrize("phone", PHONES)
def test_phones_in_common_formats_are_masked(phone: str) -> None:
    out = redact_text(f"called {phone}, no answer")
    assert out == f"called {MASK}, no answer"


@pytest.mark.parametrize("text", IDS_AND_NUMBERS)
def test_ids_dates_and_counts_are_kept(text: str) -> None:
    assert redact_text(f"trigger {text} done") == f"trigger {text} done"


@pytest.mark.parametrize("email", ["ona@example.org", "o.k+tag@mail.example.co.uk"])
def test_emails_are_masked(email: str) -> None:
    assert redact_text(f"bounce from <{email}>") == f"bounce from <{MASK}>"


def test_prefixed_numbers_are_masked() -> None:
    assert redact_text("tel:+37060000001") == f"tel:{MASK}"
    assert redact_text("to=+37060000001&body=x") == f"to={MASK}&body=x"


@pytest.fixture
def configured(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    configure("unit", fmt="json")
    yield capsys
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if type(handler).__name__ == "_LibraryHandler":
            root.removeHandler(handler)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    err = capsys.readouterr().err
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_library_records_are_json_and_redacted(configured: pytest.CaptureFixture[str]) -> None:
    library = logging.getLogger("aiohttp.server")
    try:
        raise ValueError("bad body from +37060000001 <ona@example.org>")
    except ValueError:
        library.exception("Error handling request from %s", "ona@example.org")
    [line] = _lines(configured)
    assert line["logger"] == "aiohttp.server"
    assert line["level"] == "error"
    assert line["service"] == "unit"
    assert "timestamp" in line
    text = json.dumps(line)
    assert "37060000001" not in text and "ona@example.org" not in text
    assert "ValueError" in str(line["exception"])  # the traceback is kept, redacted


def test_a_flood_of_library_lines_is_limited_with_a_count(
    configured: pytest.CaptureFixture[str],
) -> None:
    library = logging.getLogger("aiokafka.conn")
    for n in range(1000):
        library.error("Unable connect to node with id %s: %s", n % 3, "Connect call failed")
    lines = _lines(configured)
    assert 1 <= len(lines) <= 5
    assert all(line["logger"] == "aiokafka.conn" for line in lines)


def test_the_limiter_passes_a_burst_per_window_and_reports_what_it_dropped() -> None:
    now = [0.0]
    limiter = RepeatLimiter(burst=3, window=60.0, clock=lambda: now[0])

    def record(msg: str = "Unable connect to node %s") -> logging.LogRecord:
        return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, (1,), None)

    passed = [limiter.filter(record()) for _ in range(10)]
    assert passed == [True, True, True] + [False] * 7
    assert limiter.filter(record("another kind of line %s"))  # kinds are counted apart
    now[0] = 61.0
    first = record()
    assert limiter.filter(first)
    assert getattr(first, "repeats_suppressed", None) == 7


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["pat-", "appt_", "APT-", "case:", "no_show:appt-", "dl:t:0:", "plan/"]),
    st.integers(min_value=0, max_value=10**15),
)
def test_an_id_with_a_number_is_never_masked(prefix: str, number: int) -> None:
    text = f"trigger {prefix}{number} emitted"
    assert redact_text(text) == text


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=999),
    st.integers(min_value=10**6, max_value=10**11 - 1),
    st.sampled_from(["", " ", "-"]),
)
def test_an_international_number_is_always_masked(country: int, rest: int, sep: str) -> None:
    digits = str(rest)
    number = f"+{country}{sep}{digits[:3]}{sep}{digits[3:]}"
    assert redact_text(f"rang {number} twice") == f"rang {MASK} twice"
