"""The fault suite: the demo's clinic scenario (``demo.run``), small, under one kind of fault
per run (``tests/faults/inject.py``), then the invariant checker (``invariants.py``).

``python -m tests.faults`` (``make faults``) runs every kind and prints the figures;
``tests/faults/test_fault_suite.py`` is the CI-sized run collected by ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from demo.bounds import load_policy
from demo.run import DemoConfig, run_demo
from tests.faults import invariants
from tests.faults.chain import ChainHooks
from tests.faults.infra import OwnInfra
from tests.faults.inject import KINDS, NEEDS_OWN_INFRA, Injector
from tests.faults.invariants import Verdict
from tests.support import infra as shared

OUTPUT = shared.REPO / ".cache" / "faults"
SLOW_SPEED = 1200.0


@dataclass(frozen=True)
class FaultConfig:
    kind: str
    patients: int = 16
    days: int = 3
    speed: float = 3600.0  # one virtual hour per real second
    seed: int = 11
    kills: int = 6
    # The clinic as a chain of three sites (``tests/faults/chain.py``); False: one clinic.
    chain: bool = True


@dataclass
class FaultResult:
    config: FaultConfig
    verdict: Verdict
    injected: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the harness's own trouble
    demo_failed: list[str] = field(default_factory=list)  # the demo's checks that failed
    clinic_actions_failed: int = 0
    real_seconds: float = 0.0

    @property
    def held(self) -> bool:
        return self.verdict.held and not self.errors


async def run_fault(config: FaultConfig, output: Path = OUTPUT) -> FaultResult:
    began = time.monotonic()
    own = OwnInfra() if config.kind in NEEDS_OWN_INFRA else None
    if own is not None:
        await own.up()
    else:
        shared.ensure_up()
    injector = Injector(
        config.kind, seed=config.seed, kills=config.kills, infra=own, speed=config.speed
    )
    hooks = ChainHooks(injector, output / config.kind) if config.chain else None
    try:
        demo = DemoConfig(
            patients=config.patients,
            days=config.days,
            seed=config.seed,
            speed=config.speed,
            kafka=own.kafka if own else shared.KAFKA_BOOTSTRAP,
            database_url=own.database_url if own else shared.DATABASE_URL,
            output=output / config.kind,
            demo_ports=False,
            show_progress=False,
            keep_runs=1,
            hooks=hooks or injector,
        )
        result = await run_demo(demo)
    finally:
        if own is not None:
            await own.down()
    tolerance = timedelta(seconds=demo.tolerance_real_seconds * config.speed)
    verdict = invariants.check(result.observed, result.scenario, load_policy(), tolerance)
    if hooks is not None:
        invariants.check_sites(verdict, result.observed, result.scenario, hooks.scopes)
    return FaultResult(
        config=config,
        verdict=verdict,
        injected=[f"{i.at:%a %H:%M} {i.what}" for i in injector.log],
        errors=injector.errors,
        demo_failed=[f.check for f in result.findings if not f.ok],
        clinic_actions_failed=len(result.simulation_errors),
        real_seconds=time.monotonic() - began,
    )


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({model})"


HEADER = (
    f"{'fault':<17} {'no-shows':>9} {'false':>5} {'cases':>5} {'cleared':>7} {'per key':>7} "
    f"{'opt-out':>7} {'quiet':>5} {'deadline':>8} {'lost':>4} {'site':>4} {'retries':>7} "
    f"{'secs':>5}  held"
)


def row(result: FaultResult) -> str:
    f = result.verdict.figures
    no_shows = f"{f['no_shows_detected']}/{f['no_shows_expected']}"
    return (
        f"{result.config.kind:<17} {no_shows:>9} {f['false_no_show_cases']:>5} "
        f"{f['cases']:>5} {f['cases_cleared']:>7} {f['max_deliveries_per_key']:>7} "
        f"{f['contacts_after_opt_out']:>7} "
        f"{f['contacts_in_quiet_hours']:>5} {f['contacts_after_stage_deadline']:>8} "
        f"{f['lost_triggers']:>4} {f.get('site_breaches', '-'):>4} {f['notifier_retries']:>7} "
        f"{result.real_seconds:>5.0f}  " + ("yes" if result.held else "NO")
    )


def describe(result: FaultResult) -> list[str]:
    lines = [f"  injected: {'; '.join(result.injected) or 'nothing'}"]
    lines += [f"  BROKEN {b}" for b in result.verdict.broken]
    lines += [f"  harness: {e}" for e in result.errors]
    if result.clinic_actions_failed:
        lines.append(f"  clinic actions that failed for good: {result.clinic_actions_failed}")
    if result.demo_failed:
        lines.append(f"  demo checks not met: {', '.join(result.demo_failed)}")
    return lines


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("kinds", nargs="*", default=list(KINDS), help=", ".join(KINDS))
    parser.add_argument("--patients", type=int, default=16)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--speed", type=float, default=3600.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--one-site", action="store_true", help="one clinic, no sites file (not the chain)"
    )
    args = parser.parse_args(argv)
    # The harness's own Kafka clients (the clinic's JSON feed) would print every failed
    # reconnect while the suite's broker restarts; the services' logs are in the run dir.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    print(f"fault suite on {machine()}: {args.patients} patients, {args.days} days, "
          f"{args.speed:g}x, seed {args.seed}, "
          f"{'one clinic' if args.one_site else 'a chain of three sites'}", flush=True)  # fmt: skip
    print(HEADER, flush=True)
    results = []
    for kind in args.kinds:
        # A broker or database restart takes 20-30 real seconds: at 3600x that is a whole
        # clinic day without either, so those runs go slower (an outage of hours, not days).
        speed = min(args.speed, SLOW_SPEED) if kind in NEEDS_OWN_INFRA else args.speed
        config = FaultConfig(
            kind, args.patients, args.days, speed, args.seed, chain=not args.one_site
        )
        result = await run_fault(config)
        results.append(result)
        print(row(result), flush=True)
        for line in describe(result):
            print(line, flush=True)
    held = all(r.held for r in results)
    print(f"{sum(r.held for r in results)}/{len(results)} runs held every invariant")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
