"""The shell examples of the READMEs that run here, run as written (the MLLP port replaced by
the test tracker's): every `$ ` line of a fenced block that reaches the tracker's MLLP port
or runs `python -m services.tracker.check`, compared with the lines the document shows
after it (`...` in a shown line stands for what differs per run, e.g. a timestamp)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.launcher import ServiceProcess
from tests.support import infra
from tests.support.polling import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DOCUMENTS = [REPO / "README.md", *sorted(REPO.glob("services/*/README.md"))]
DOCUMENTS += [REPO / "docs/integration/hl7.md"]


def examples() -> list[tuple[str, str, list[str]]]:
    """(where, command, shown output lines) of each runnable example."""
    found: list[tuple[str, str, list[str]]] = []
    for document in DOCUMENTS:
        lines = document.read_text().splitlines()
        fenced = False
        for number, line in enumerate(lines):
            if line.startswith("```"):
                fenced = not fenced
                continue
            if not (fenced and line.startswith("$ ")):
                continue
            command = line[2:]
            runnable = "services.tracker.check" in command or (
                "127.0.0.1 2575" in command or '"127.0.0.1",2575' in command
            )
            if not runnable or ("nc -N" in command and shutil.which("nc") is None):
                continue  # netcat is not installed here; the python one-liner is the same bytes
            shown = []
            for after in lines[number + 1 :]:
                if after.startswith(("$ ", "```", "#")) or not after.strip():
                    break
                shown.append(after.strip())
            found.append((f"{document.relative_to(REPO)}:{number + 1}", command, shown))
    return found


@pytest.fixture(scope="module")
def tracker_mllp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    infra.ensure_up()
    unique = uuid.uuid4().hex[:8]
    mllp = free_port()
    env = {
        "FOLLOWUP_KAFKA_BOOTSTRAP": infra.KAFKA_BOOTSTRAP,
        "FOLLOWUP_TOPIC_PREFIX": f"t{unique}.",
        "FOLLOWUP_CONSUMER_GROUP": f"t{unique}.tracker",
        "FOLLOWUP_MLLP_PORT": str(mllp),
        "FOLLOWUP_LOG_FORMAT": "console",
    }
    log = tmp_path_factory.mktemp("tracker") / "tracker.log"
    process = ServiceProcess("tracker", free_port(), env, log=log).start()
    try:
        process.wait_ready_blocking(timeout=120)
        yield mllp
    finally:
        process.terminate(timeout=30)


def matches(shown: str, got: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in shown.split("..."))
    return re.fullmatch(pattern, got) is not None


def test_there_are_examples_to_run() -> None:
    where = {w.split(":")[0] for w, _c, _s in examples()}
    assert {"services/tracker/README.md", "docs/integration/hl7.md"} <= where


@pytest.mark.parametrize(("where", "command", "shown"), examples(), ids=lambda v: str(v)[:40])
def test_the_example_runs_as_written(
    where: str, command: str, shown: list[str], tracker_mllp: int
) -> None:
    command = command.replace("127.0.0.1 2575", f"127.0.0.1 {tracker_mllp}")
    command = command.replace('"127.0.0.1",2575', f'"127.0.0.1",{tracker_mllp}')
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=REPO,
        # `python` and `python3` are the project's interpreter, as in an activated venv.
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The offline check exits 1 when it would refuse the message, as its example shows.
    refused = any(line.startswith("REFUSED") for line in shown)
    assert done.returncode == (1 if refused else 0), (where, done.stderr[-1000:])
    got = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    for line in shown:
        assert any(matches(line, g) for g in got), (where, line, got)
