"""One kind of fault per run, injected while the demo's clinic runs (``demo.run.RunHooks``).

Kinds:
- ``kill9``: SIGKILL of a service at random moments (several per run), each restarted at
  once, as the platform would;
- ``replica_kill``: a second replica of each service joins, and is SIGKILLed mid-flow
  (not restarted: its work must be taken over by the first);
- ``broker_restart`` / ``postgres_restart``: the suite's own Kafka / PostgreSQL stopped and
  started again mid-run (see ``tests/faults/infra.py``);
- ``<smtp|sms|webhook>_refuse``: the provider refuses connections for a stretch of the run;
- ``<smtp|sms|webhook>_slow``: the provider answers slowly (within the clients' timeouts)
  for a stretch of the run.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import datetime

from common.clock import ScaledClock, SharedClock
from common.launcher import ServiceProcess
from demo.deployment import SERVICES, Deployment
from demo.simulator.clinic import Simulation
from demo.simulator.rig import StandIns
from standins.faults import FaultyPort
from tests.faults.infra import OwnInfra
from tests.support.polling import free_port

PROVIDERS = ("smtp", "sms", "webhook")
KINDS = (
    "kill9",
    "replica_kill",
    "broker_restart",
    "postgres_restart",
    *(f"{p}_refuse" for p in PROVIDERS),
    *(f"{p}_slow" for p in PROVIDERS),
)
NEEDS_OWN_INFRA = frozenset({"broker_restart", "postgres_restart"})
# Per chunk the stand-in sends back: an HTTP answer is one or two chunks (under the
# notifier's 10 s client timeout), an SMTP session about eight (under aiosmtplib's 60 s).
SLOW_SECONDS = {"smtp": 1.5, "sms": 3.0, "webhook": 3.0}


@dataclass
class Injected:
    at: datetime  # virtual time
    what: str


@dataclass
class Injector:
    kind: str
    seed: int = 1
    kills: int = 6  # kill9: how many per run
    infra: OwnInfra | None = None
    retry_real_seconds: float = 90.0  # how long the clinic's feeds retry a failed action
    speed: float = 3600.0  # the run's clock speed (virtual seconds per real second)
    # The notifier's sending lease is measured on its (scaled) clock: unscaled, 120 virtual
    # seconds are 33 real ms at 3600x, and a second replica would take over a send still
    # under way. Longer than the slowest send (the providers' 10 s client timeout).
    lease_real_seconds: float = 15.0
    log: list[Injected] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _proxy: FaultyPort | None = None
    _replicas: list[ServiceProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(KINDS)}")
        if self.kind in NEEDS_OWN_INFRA and self.infra is None:
            raise ValueError(f"{self.kind} needs the suite's own broker and database")
        self.rng = random.Random(self.seed)

    @property
    def provider(self) -> str | None:
        name = self.kind.split("_", 1)[0]
        return name if name in PROVIDERS else None

    # --- demo.run.RunHooks ----------------------------------------------------------------

    async def prepared(self, standins: StandIns, env: dict[str, str]) -> dict[str, str]:
        lease = {"FOLLOWUP_SENDING_LEASE_SECONDS": repr(self.lease_real_seconds * self.speed)}
        if self.provider is None:
            return lease
        target = {
            "smtp": standins.mailbox.port,
            "sms": standins.sms.port,
            "webhook": standins.calltasks.port,
        }[self.provider]
        assert target is not None
        self._proxy = FaultyPort(target)
        port = await self._proxy.start()
        if self.provider == "smtp":
            return lease | {"FOLLOWUP_SMTP_PORT": str(port)}
        if self.provider == "sms":
            return lease | {"FOLLOWUP_SMS_PRIMARY_URL": f"http://127.0.0.1:{port}"}
        return lease | {"FOLLOWUP_WEBHOOK_URL": f"http://127.0.0.1:{port}/call-tasks"}

    async def during(
        self, deployment: Deployment, simulation: Simulation, clock: ScaledClock | SharedClock
    ) -> None:
        simulation.retry_real_seconds = self.retry_real_seconds
        start = max(clock.now(), simulation.scenario.start)
        span = (simulation.scenario.end - start).total_seconds() / clock.speed

        async def at(fraction: float) -> None:
            # A real-time pause to a share of the run: faults land while the clinic works.
            wait = (start - clock.now()).total_seconds() / clock.speed + fraction * span
            await asyncio.sleep(max(0.0, wait))

        def note(what: str) -> None:
            self.log.append(Injected(clock.now(), what))

        if self.kind == "kill9":
            moments = sorted(self.rng.uniform(0.3, 0.85) for _ in range(self.kills))
            victims = [SERVICES[i % len(SERVICES)] for i in range(self.kills)]  # each one
            self.rng.shuffle(victims)
            # Restarts run alongside (a busy machine takes seconds, i.e. virtual hours, to
            # bring a service back): the next kill keeps its moment unless it hits a
            # service still coming back.
            coming_back: dict[str, asyncio.Task[None]] = {}
            for fraction, service in zip(moments, victims, strict=True):
                await at(fraction)
                if service in coming_back:
                    await coming_back.pop(service)
                process = deployment.processes[service]
                process.kill()
                note(f"SIGKILL {service}")
                coming_back[service] = asyncio.create_task(self._restart(process, after=0.5))
            await asyncio.gather(*coming_back.values())
        elif self.kind == "replica_kill":
            await at(0.2)
            joining = []
            for service in SERVICES:
                env = deployment.service_env(service)
                if service == "tracker":
                    env["FOLLOWUP_MLLP_PORT"] = str(free_port())
                replica = ServiceProcess(
                    service,
                    free_port(),
                    env,
                    log=deployment.log_dir / f"{service}-replica.log",
                    new_session=True,
                )
                self._replicas.append(replica)
                joining.append(self._restart(replica))
            await asyncio.gather(*joining)
            note("a second replica of each service joined")
            for replica, fraction in zip(
                self._replicas, sorted(self.rng.uniform(0.35, 0.8) for _ in SERVICES), strict=True
            ):
                await at(fraction)
                replica.kill()
                note(f"SIGKILL second {replica.service} replica")
        elif self.kind in NEEDS_OWN_INFRA:
            assert self.infra is not None
            for fraction in (0.4,):  # one restart: at 1200x it already takes virtual hours
                await at(fraction)
                note(f"{self.kind} begins")
                if self.kind == "broker_restart":
                    await self.infra.restart_kafka(down_seconds=2.0)
                else:
                    await self.infra.restart_postgres(down_seconds=2.0)
                note(f"{self.kind} done")
        else:
            assert self._proxy is not None and self.provider is not None
            for begin, end in ((0.35, 0.5), (0.6, 0.75)):  # the clinic's busy hours
                await at(begin)
                if self.kind.endswith("_refuse"):
                    await self._proxy.refuse()
                    note(f"{self.provider} refuses connections")
                else:
                    await self._proxy.slow(SLOW_SECONDS[self.provider])
                    note(f"{self.provider} answers slowly")
                await at(end)
                await self._proxy.passes()
                note(f"{self.provider} back to normal")

    async def finished(self) -> None:
        for replica in self._replicas:
            if replica.alive:
                await replica.stop()
        if self._proxy is not None:
            await self._proxy.stop()

    async def _restart(self, process: ServiceProcess, after: float = 0.0) -> None:
        await asyncio.sleep(after)
        process.start()
        try:
            await process.wait_ready(120)
        except (TimeoutError, RuntimeError) as exc:
            self.errors.append(f"{process.service} did not come back: {exc}")
