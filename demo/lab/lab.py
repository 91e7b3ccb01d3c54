"""Run the lab: for each seed one population, played through the real services once per
cadence policy (the scheduler's FOLLOWUP_POLICY_PATH), one run after another."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from common.clock import ScaledClock, SharedClock
from demo.bounds import load_policy
from demo.deployment import REPO, Deployment
from demo.lab.model import PATIENTS_FILE, ModelReactions, PatientModel
from demo.lab.outcomes import PolicyOutcome, measure
from demo.lab.pacer import Pacer
from demo.lab.transfers import TransferFeed
from demo.run import DemoConfig, run_demo
from demo.simulator.clinic import Simulation
from services.scheduler.policy import DEFAULT_POLICY_PATH

STATUS_QUO = Path(__file__).parent / "policies" / "status_quo.yaml"
OUTPUT = REPO / ".cache" / "lab"


@dataclass
class LabConfig:
    policies: list[tuple[str, Path]] = field(
        default_factory=lambda: [
            ("status quo", STATUS_QUO),
            ("followup default", DEFAULT_POLICY_PATH),
        ]
    )
    # The clinic of the brief: 1,000 patients over eight weeks, three seeds. Six paced runs;
    # on this shared 2-core machine under load that is hours (README), --patients and
    # --seeds make it smaller.
    patients: int = 1000
    weeks: int = 8
    seeds: tuple[int, ...] = (1, 2, 3)
    # The most virtual time runs: 6 virtual hours per real second. The pacer (pacer.py)
    # holds it back while the services lag, so a busy machine makes the run longer, not
    # the services late: the verdicts do not depend on the load.
    speed: float = 21600.0
    # How far virtual time may run past the last moment the pacer found nothing overdue.
    leash: timedelta = timedelta(minutes=30)
    model_file: Path = PATIENTS_FILE
    minutes_per_call: float | None = None  # None: the model file's
    output: Path = OUTPUT
    show_progress: bool = True
    kafka: str = "127.0.0.1:19092"
    database_url: str = "postgresql://followup:followup@127.0.0.1:15432/followup"


@dataclass
class LabHooks:
    """``demo.run.RunHooks`` of a lab run: the pacer, and the transfers played in."""

    pacer: Pacer
    transfers: TransferFeed
    reactions: ModelReactions

    async def prepared(self, standins: Any, env: dict[str, str]) -> dict[str, str]:
        return {}

    async def during(
        self, deployment: Deployment, simulation: Simulation, clock: ScaledClock | SharedClock
    ) -> None:
        self.transfers.attach(simulation, self.reactions)
        await self.pacer.during(deployment, simulation, clock)

    async def finished(self) -> None:
        return None


@dataclass
class LabResult:
    config: LabConfig
    model: PatientModel
    outcomes: list[PolicyOutcome]
    failed_actions: int = 0
    real_seconds: float = 0.0


def run_lab(
    config: LabConfig,
    say: Callable[[str], None] = print,
    after_each: Callable[[LabResult], object] | None = None,
) -> LabResult:
    """Every seed under every policy; ``after_each`` gets the result so far after each run
    (``make lab`` writes the report then, so a long lab's finished runs are never lost)."""
    import asyncio

    began = time.monotonic()
    model = PatientModel.load(config.model_file)
    minutes = (
        config.minutes_per_call if config.minutes_per_call is not None else model.minutes_per_call
    )
    outcomes: list[PolicyOutcome] = []
    failed = 0
    for seed in config.seeds:
        scenario = model.population(config.patients, config.weeks * 7, seed)
        transfers = model.transfers_in(scenario)
        for name, path in config.policies:
            say(f"seed {seed}, policy {name} ({path.name}) ...")
            pacer = Pacer(config.kafka, config.database_url, leash=config.leash)
            reactions = ModelReactions(model, seed, transfers)
            feed = TransferFeed(transfers)
            demo = DemoConfig(
                patients=config.patients,
                days=config.weeks * 7,
                seed=seed,
                speed=config.speed,
                kafka=config.kafka,
                database_url=config.database_url,
                output=config.output / "runs",
                demo_ports=False,
                show_progress=config.show_progress,
                keep_runs=1,
                policy=path,
                scenario=scenario,
                reactions=reactions,
                shared_clock=True,
                hooks=LabHooks(pacer, feed, reactions),
                # Held back by the pacer, the services act within a leash of their moment:
                # the checks allow that much, not the scaled clock's load allowance.
                tolerance_real_seconds=config.leash.total_seconds() / config.speed,
            )
            result = asyncio.run(run_demo(demo))
            tolerance = timedelta(seconds=demo.tolerance_real_seconds * demo.speed)
            outcome = measure(
                name,
                result.observed,
                scenario,
                load_policy(path),
                minutes_per_call=minutes,
                tolerance=tolerance,
                transfers=feed.reported,
            )
            outcome.real_seconds = round(result.real_seconds, 1)
            outcome.pacer = pacer.stats.as_dict()
            failed += len(result.simulation_errors)
            outcomes.append(outcome)
            if after_each is not None:
                after_each(
                    LabResult(config, model, list(outcomes), failed, time.monotonic() - began)
                )
            say(
                f"  {outcome.recovered_before_deadline} of {outcome.reachable_maximum} reachable "
                f"recovered before their deadline; {outcome.call_tasks} call tasks; "
                f"safety {outcome.safety}; {outcome.real_seconds:.0f} s "
                f"(clock held {outcome.pacer['held_real_seconds']:.0f} s: "
                f"{outcome.pacer['held_by']})"
            )
    return LabResult(config, model, outcomes, failed, round(time.monotonic() - began, 1))
