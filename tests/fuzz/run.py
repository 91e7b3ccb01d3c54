"""``make fuzz``: the codec's atheris target for a while; prints inputs tried and crash kinds.

    python -m tests.fuzz.run [--seconds 300] [--corpus .cache/fuzz/codec]

The corpus directory is kept between runs, so each run starts where the last one got to.
Exit status 1 when a crash kind was found; its inputs are left in the survey directory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def fuzz(seconds: int, corpus: Path, survey: Path) -> tuple[int, list[dict[str, str]], int]:
    """Runs the target; returns (inputs tried, crash kinds, the fuzzer's exit status)."""
    corpus.mkdir(parents=True, exist_ok=True)
    survey.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.codec_target",
            f"-max_total_time={seconds}",
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-max_len=4096",
            f"-artifact_prefix={survey}/",
            str(corpus),
        ],
        cwd=REPO,
        env={**os.environ, "FOLLOWUP_FUZZ_SURVEY": str(survey)},
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    runs = re.findall(r"Done (\d+) runs", done.stderr)
    kinds_file = survey / "kinds.jsonl"
    kinds = (
        [json.loads(line) for line in kinds_file.read_text().splitlines()]
        if kinds_file.exists()
        else []
    )
    if done.returncode != 0 and not runs:
        sys.stderr.write(done.stderr[-4000:])
    return (int(runs[-1]) if runs else 0), kinds, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--corpus", type=Path, default=REPO / ".cache" / "fuzz" / "codec")
    args = parser.parse_args()
    survey = Path(tempfile.mkdtemp(prefix="followup-fuzz-"))
    started = time.monotonic()
    tried, kinds, status = fuzz(args.seconds, args.corpus, survey)
    elapsed = time.monotonic() - started
    print(f"codec fuzz (atheris, every contract): {tried} inputs tried in {elapsed:.0f} s")
    print(f"crash kinds: {len(kinds)}")
    for kind in kinds:
        print(f"  {kind['kind']}  (contract {kind['contract']}, input {survey / kind['input']})")
    if status != 0:
        print(f"fuzzer exit status {status}")
    raise SystemExit(1 if kinds or status != 0 else 0)


if __name__ == "__main__":
    main()
