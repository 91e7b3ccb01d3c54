"""Run the lab: for each seed one population, played through the real services once per
cadence policy (the scheduler's FOLLOWUP_POLICY_PATH), one run after another."""

from __future__ import annotations

import multiprocessing
import random
import resource
import socket
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from common.clock import ScaledClock, SharedClock
from demo.bounds import load_policy
from demo.deployment import REPO, Deployment, Ports, free_port
from demo.lab.model import PATIENTS_FILE, ModelReactions, PatientModel
from demo.lab.outcomes import PolicyOutcome, measure
from demo.lab.pacer import Pacer
from demo.lab.transfers import TransferFeed
from demo.run import DemoConfig, run_demo
from demo.simulator.clinic import Simulation
from services.scheduler.policy import DEFAULT_POLICY_PATH

STATUS_QUO = Path(__file__).parent / "policies" / "status_quo.yaml"
OUTPUT = REPO / ".cache" / "lab"
# The services' polling cadences in the lab (real seconds; demo.run's are 0.1): how soon a
# service sees that the paced clock has reached its next moment.
PORT_BLOCKS = (20000, 32000)  # below Linux's ephemeral ports (32768-60999)
PORT_BLOCK = 8  # ports per run: four, and four to spare
SERVICE_ENV = {
    "FOLLOWUP_POLL_SECONDS": "0.05",
    "FOLLOWUP_DETECTION_TICK_SECONDS": "0.05",
    # The front desk works from the ticketing tool's webhook (the simulated desk answers
    # there) and the calltasks topic; the demo's third sink, an iCalendar mail per task, was
    # a quarter of the lab process's time (the stand-in mailbox parsing it) and most of the
    # notifier's at 1,000 patients, and no lab figure reads it.
    "FOLLOWUP_CALL_TASK_SINKS": "webhook,kafka",
}


@dataclass
class LabConfig:
    policies: list[tuple[str, Path]] = field(
        default_factory=lambda: [
            ("status quo", STATUS_QUO),
            ("followup default", DEFAULT_POLICY_PATH),
        ]
    )
    # The clinic of the brief: 1,000 patients over eight weeks, three seeds. Six paced runs;
    # on this shared 2-core machine at a load average near 30 about an hour, all side by
    # side (README); --patients, --weeks and --seeds make it smaller.
    patients: int = 1000
    weeks: int = 8
    seeds: tuple[int, ...] = (1, 2, 3)
    # The most virtual time runs: 12 virtual hours per real second. The pacer (pacer.py)
    # holds it back while the services lag, so a busy machine makes the run longer, not
    # the services late: the verdicts do not depend on the load.
    speed: float = 43200.0
    # How far virtual time may run past the last moment the pacer found nothing overdue.
    leash: timedelta = timedelta(minutes=30)
    # Runs side by side (separate processes, services and clocks); 1: one after another.
    # A run waits on round trips far more than it computes, so the default lab's six go at once.
    parallel: int = 6
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
    opening: datetime  # the clock stands here while the services start
    env: dict[str, str] = field(default_factory=dict)

    async def prepared(self, standins: Any, env: dict[str, str]) -> dict[str, str]:
        # The clock stands still before the clinic opens until the pacer leases it on: the
        # services' start-up costs no virtual time, so the run needs no start-up lead.
        clock = standins.sms.clock
        if isinstance(clock, SharedClock):
            clock.lease_until(self.opening)
        return dict(self.env)

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
    (``make lab`` writes the report then, so a long lab's finished runs are never lost).

    ``config.parallel`` runs side by side, each in its own process with its own services,
    topics, schemas and paced clock: nothing is shared but Kafka and PostgreSQL, and each
    run's pacer holds its own clock while its own services lag."""
    began = time.monotonic()
    model = PatientModel.load(config.model_file)
    runs = [(seed, name, path) for seed in config.seeds for name, path in config.policies]
    # Each run's services listen on ports from a block of their own, below the ephemeral
    # range: ports the runs picked at once (bind to 0, let go) were taken by each other or
    # by an outgoing connection before a service bound them, and that service could not start.
    base = random.randrange(PORT_BLOCKS[0], PORT_BLOCKS[1] - PORT_BLOCK * len(runs))
    done: dict[int, tuple[PolicyOutcome, int]] = {}

    def finished(index: int, outcome: PolicyOutcome, errors: int) -> None:
        done[index] = (outcome, errors)
        if after_each is not None:
            after_each(_result(config, model, done, time.monotonic() - began))
        say(
            f"  seed {outcome.seed}, {outcome.policy}: {outcome.recovered_before_deadline} of "
            f"{outcome.reachable_maximum} reachable recovered before their deadline; "
            f"{outcome.call_tasks} call tasks; safety {outcome.safety}; "
            f"{outcome.real_seconds:.0f} s (clock held {outcome.pacer['held_real_seconds']:.0f} s: "
            f"{outcome.pacer['held_by']})"
        )

    if config.parallel <= 1:
        for index, (seed, name, path) in enumerate(runs):
            say(f"seed {seed}, policy {name} ({path.name}) ...")
            finished(index, *run_one(config, seed, name, path, base + PORT_BLOCK * index))
    else:
        # Fresh interpreters: a forked child would inherit the parent's threads and loops.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=config.parallel, mp_context=context) as pool:
            futures = {}
            for index, (seed, name, path) in enumerate(runs):
                say(f"seed {seed}, policy {name} ({path.name}) ...")
                futures[
                    pool.submit(run_one, config, seed, name, path, base + PORT_BLOCK * index)
                ] = index
            for future in as_completed(futures):
                finished(futures[future], *future.result())
    return _result(config, model, done, round(time.monotonic() - began, 1))


def _result(
    config: LabConfig, model: PatientModel, done: dict[int, tuple[PolicyOutcome, int]], took: float
) -> LabResult:
    ordered = [done[i] for i in sorted(done)]  # seed by seed, policies in their order
    return LabResult(
        config, model, [o for o, _ in ordered], sum(e for _, e in ordered), round(took, 1)
    )


def run_one(
    config: LabConfig, seed: int, name: str, path: Path, first_port: int
) -> tuple[PolicyOutcome, int]:
    """One seed's population under one policy through its own services: the outcome and
    how many clinic actions failed."""
    import asyncio

    model = PatientModel.load(config.model_file)
    minutes = (
        config.minutes_per_call if config.minutes_per_call is not None else model.minutes_per_call
    )
    # The same seed builds the same population and transfers in every process.
    scenario = model.population(config.patients, config.weeks * 7, seed)
    transfers = model.transfers_in(scenario)
    pacer = Pacer(config.kafka, config.database_url, leash=config.leash)
    reactions = ModelReactions(model, seed, transfers)
    feed = TransferFeed(transfers)
    opening = scenario.start - timedelta(hours=1)  # the runner's clock anchor
    demo = DemoConfig(
        patients=config.patients,
        days=config.weeks * 7,
        seed=seed,
        speed=config.speed,
        kafka=config.kafka,
        database_url=config.database_url,
        output=config.output / "runs",
        demo_ports=False,
        ports=_ports_from(first_port),
        show_progress=config.show_progress,
        keep_runs=max(1, len(config.seeds) * len(config.policies)),
        policy=path,
        scenario=scenario,
        reactions=reactions,
        shared_clock=True,
        hooks=LabHooks(pacer, feed, reactions, opening, dict(SERVICE_ENV)),
        # The clock stands at the opening until the services are ready (LabHooks.prepared).
        startup_lead=1.0,
        # Held back by the pacer, the services act within a leash of their moment:
        # the checks allow that much, not the scaled clock's load allowance.
        tolerance_real_seconds=config.leash.total_seconds() / config.speed,
    )
    cpu = _cpu_seconds()
    result = asyncio.run(run_demo(demo))
    cpu = _cpu_seconds() - cpu
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
    outcome.cpu_seconds = round(cpu, 1)
    return outcome, len(result.simulation_errors)


def _ports_from(first: int) -> Ports:
    """Four free ports in the block from ``first`` (any free port if the block is full)."""
    free = []
    for port in range(first, first + PORT_BLOCK):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        free.append(port)
    free += [free_port() for _ in range(4 - len(free))]
    return Ports(*free[:4])


def _cpu_seconds() -> float:
    """CPU time of this process and of the services it ran and reaped (Kafka's and
    PostgreSQL's are not counted): what a run costs whatever else the machine does."""
    own, reaped = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
