"""The supervised consumer's pure parts: what is transient, what always becomes a dead
letter that fits, and a process that exits non-zero when a supervised task ends."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

from common.codec import LIMIT_MAX_ORIGINAL_BYTES, DecodeError, dead_letter, decode, encode
from common.kafka import is_transient
from common.supervision import EXIT_TASK_STOPPED
from schemas.events import ContactEvent
from tests.support.infra import REPO

# The repro of issue 19: zoneinfo raised IsADirectoryError out of the codec.
TZ_DIRECTORY = (
    b'{"event_id":"x","occurred_at":"2026-03-02T10:00:00+02:00","source":"s",'
    b'"patient_id":"p","timezone":"Europe"}'
)
PRODUCER_LIMIT = 1024 * 1024


@pytest.mark.parametrize("zone", ["Europe", "America", "", "../../etc/passwd", "/tmp", "Europe/"])
def test_a_zone_that_is_not_a_zone_is_a_decode_error(zone: str) -> None:
    raw = TZ_DIRECTORY.replace(b'"Europe"', json.dumps(zone).encode())
    with pytest.raises(DecodeError) as info:
        decode(ContactEvent, raw)
    assert info.value.error_type == "invalid_event"
    assert "timezone" in info.value.reason


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(),
        TimeoutError(),
        KafkaConnectionError(),
        KafkaTimeoutError(),
        OSError(113, "No route to host"),
        asyncpg.exceptions.AdminShutdownError(),
        asyncpg.exceptions.TooManyConnectionsError(),
        asyncpg.exceptions.ConnectionDoesNotExistError(),
    ],
)
def test_infrastructure_errors_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        IsADirectoryError(21, "Is a directory"),
        MessageSizeTooLargeError(),
        KeyError(),
        ValueError(),
        asyncpg.exceptions.UniqueViolationError(),
        asyncpg.exceptions.DataError(),
    ],
)
def test_record_errors_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


@pytest.mark.parametrize("size", [800_000, 1_000_000, 5_000_000])
def test_a_dead_letter_always_fits_the_producer_limit(size: int) -> None:
    raw = b"\xff" * size
    letter = dead_letter(
        raw,
        b"k" * 100_000,
        error=DecodeError("x" * 10_000, "invalid_json"),
        service="tracker",
        now=datetime.now(UTC),
        topic="followup.appointments",
        partition=0,
        offset=1,
        max_original_bytes=LIMIT_MAX_ORIGINAL_BYTES,
    )
    assert len(encode(letter)) + len(letter.key()) < PRODUCER_LIMIT
    assert letter.original_length == size
    assert letter.original_key_length == 100_000


SCRIPT = """
import asyncio
from common import logs
from common.http import OpsServer
from common.service import run, wait_for_stop_signal

async def main() -> None:
    ops = OpsServer("exit-test")
    ops.supervisor.linger_seconds = 0.1
    async def consume() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("a bug the loop did not foresee")
    ops.supervisor.watch({"consume:followup.appointments": asyncio.create_task(consume())})
    await wait_for_stop_signal(ops.supervisor)

logs.configure("exit-test")
run(main)
"""


def test_a_process_whose_supervised_task_ends_exits_non_zero() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == EXIT_TASK_STOPPED
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    stopped = [line for line in lines if line["event"] == "task_stopped"]
    assert stopped and stopped[0]["task"] == "consume:followup.appointments"
    assert stopped[0]["error"] == "RuntimeError"
    assert "a bug" not in done.stderr  # the type, not the text
