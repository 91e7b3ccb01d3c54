"""`make lab`: the same seeded clinic under several cadence policies, through the real
services, compared with each other and with the reachable maximum.

Policies run side by side (--parallel, each run with its own services and paced clock): the
status quo (one call, never again), followup's default
policy, then any --policy files. Prints the comparison and writes .cache/lab/ (lab.html,
lab.json, lab.md, PNG charts).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from demo.lab import render
from demo.lab.lab import LabConfig, run_lab
from services.scheduler.policy import CadencePolicy, PolicyError


def parse_args(argv: list[str]) -> LabConfig:
    d = LabConfig()
    p = argparse.ArgumentParser(prog="python -m demo.lab", description=__doc__)
    p.add_argument("--policy", type=Path, action="append", default=[], help="another policy file")
    p.add_argument("--patients", type=int, default=d.patients)
    p.add_argument("--weeks", type=int, default=d.weeks)
    p.add_argument("--seeds", default=",".join(map(str, d.seeds)), help="e.g. 1,2,3")
    p.add_argument("--speed", type=float, default=d.speed, help="virtual seconds per real second")
    p.add_argument(
        "--parallel", type=int, default=d.parallel, help="runs side by side (1: one after another)"
    )
    p.add_argument("--patient-model", type=Path, default=d.model_file, help="patients.yaml")
    p.add_argument("--minutes-per-call", type=float, default=None)
    p.add_argument("--output", type=Path, default=d.output)
    p.add_argument("--quiet", action="store_true", help="no progress lines from each run")
    a = p.parse_args(argv)
    for path in a.policy:
        if not path.is_file():
            p.error(f"--policy {path}: no such file")
        try:  # the scheduler's own parser: a wrong file stops here, not in a service
            CadencePolicy.load(path)
        except PolicyError as exc:
            p.error(f"--policy {exc}")
    try:
        seeds = tuple(int(s) for s in a.seeds.split(",") if s.strip())
    except ValueError:
        p.error("--seeds: comma-separated integers, e.g. 1,2,3")
    return LabConfig(
        policies=[*d.policies, *((path.stem, path) for path in a.policy)],
        patients=a.patients,
        weeks=a.weeks,
        seeds=seeds,
        speed=a.speed,
        parallel=max(1, a.parallel),
        model_file=a.patient_model,
        minutes_per_call=a.minutes_per_call,
        output=a.output,
        show_progress=not a.quiet,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    result = run_lab(config, after_each=lambda so_far: render.write(so_far, config.output))
    print(render.table(result))
    written = render.write(result, config.output)
    print("\n" + "\n".join(f"{k:>10}: {v}" for k, v in written.items()))
    print(f"real time: {result.real_seconds:.0f} s")
    unsafe = [o for o in result.outcomes if any(o.safety.values())]
    return 1 if unsafe else 0


if __name__ == "__main__":
    sys.exit(main())
