"""Coverage-guided fuzz target (atheris/libFuzzer) for the codec with every contract.

    python -m tests.fuzz.codec_target [libFuzzer flags]     # stops at the first crash
    FOLLOWUP_FUZZ_SURVEY=DIR python -m tests.fuzz.codec_target -max_total_time=300
        # goes on after a crash and records each distinct crash kind (exception type and
        # where it was raised) once in DIR/kinds.jsonl, with its input in DIR/<kind>.bin

``make fuzz`` runs the survey through tests/fuzz/run.py, which prints inputs tried and
crash kinds. The property is the one in codec_cases.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["common", "schemas"]):
    from tests.fuzz.codec_cases import CONTRACTS, INTERESTING, check, mutate

SURVEY = os.environ.get("FOLLOWUP_FUZZ_SURVEY")
_seen: set[str] = set()


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    choice = fdp.ConsumeIntInRange(0, 8 if depth < 3 else 5)
    if choice == 0:
        return fdp.PickValueInList(INTERESTING)
    if choice == 1:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64))
    if choice == 2:
        return fdp.ConsumeInt(8)
    if choice == 3:
        return fdp.ConsumeRegularFloat()
    if choice == 4:
        return fdp.ConsumeBool()
    if choice == 5:
        return None
    if choice == 6:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if choice == 7:
        return {
            fdp.ConsumeUnicodeNoSurrogates(8): _value(fdp, depth + 1)
            for _ in range(fdp.ConsumeIntInRange(0, 3))
        }
    return ... if depth == 0 else None  # at the top: drop the field


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    model = CONTRACTS[fdp.ConsumeIntInRange(0, len(CONTRACTS) - 1)]
    if fdp.ConsumeBool():
        raw = fdp.ConsumeBytes(fdp.remaining_bytes())
    else:
        count = fdp.ConsumeIntInRange(1, 4)
        raw = mutate(model, [(fdp.ConsumeIntInRange(0, 255), _value(fdp)) for _ in range(count)])
    if SURVEY is None:
        check(model, raw)
        return
    try:
        check(model, raw)
    except Exception as exc:
        _record(exc, model.__name__, raw)


def _record(exc: Exception, contract: str, raw: bytes) -> None:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    kind = f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}"
    if kind in _seen:
        return
    _seen.add(kind)
    out = Path(str(SURVEY))
    out.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(kind.encode()).hexdigest()[:12]
    (out / f"{name}.bin").write_bytes(raw)
    with (out / "kinds.jsonl").open("a") as kinds:
        kinds.write(json.dumps({"kind": kind, "contract": contract, "input": f"{name}.bin"}) + "\n")


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
