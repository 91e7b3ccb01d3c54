"""The lab's pacer: virtual time moves on only while the services keep up.

The services and the clinic read one shared clock file (``common.clock.SharedClock``). The
pacer gives the clock a short lease (``leash`` of virtual time) each time it finds nothing
overdue, and holds it where it is while anything is: a clinic action due and not yet
acknowledged, a message on any of the run's topics not yet consumed (a consumer group's
committed offset behind the partition's end), an attempt the scheduler should have fired,
a command in its outbox, a case due for review, a delivery the notifier should have sent or
reported. On a busy machine virtual time runs slower; what the services do, and when by
their clock, stays the same, so the lab's verdicts do not depend on the machine's load.

While held, the clock still creeps (``creep`` per look), so that work which itself waits
for virtual time (a rate limit, the front desk's five minutes at the phone) cannot hold it
for ever; how long and why it was held is reported with each run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from common.clock import ScaledClock, SharedClock
from common.db import check_schema_name
from demo.deployment import Deployment
from demo.simulator.clinic import Simulation


@dataclass
class PacerStats:
    looks: int = 0
    held_looks: int = 0
    held_real_seconds: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)  # looks held, by what was due
    paced_real_seconds: float = 0.0  # from the clinic's opening to its closing

    def as_dict(self) -> dict[str, Any]:
        return {
            "looks": self.looks,
            "held_looks": self.held_looks,
            "held_real_seconds": round(self.held_real_seconds, 1),
            "paced_real_seconds": round(self.paced_real_seconds, 1),
            "held_by": dict(self.reasons.most_common()),
        }


@dataclass
class Pacer:
    """``demo.run.RunHooks`` for a run on a shared clock (``DemoConfig.shared_clock``)."""

    kafka: str
    database_url: str
    leash: timedelta = timedelta(minutes=30)
    creep: timedelta = timedelta(minutes=1)
    look_every: float = 0.05  # real seconds between looks
    stats: PacerStats = field(default_factory=PacerStats)

    async def prepared(self, standins: Any, env: dict[str, str]) -> dict[str, str]:
        return {}

    async def finished(self) -> None:
        return None

    async def during(
        self, deployment: Deployment, simulation: Simulation, clock: ScaledClock | SharedClock
    ) -> None:
        if not isinstance(clock, SharedClock):
            raise TypeError("the pacer needs DemoConfig.shared_clock")
        until = simulation.scenario.end
        self.stats = PacerStats()
        looks = _Looks(self.kafka, self.database_url, deployment)
        await looks.start()
        began = time.monotonic()
        try:
            while (now := clock.now()) < until:
                reasons = await looks.overdue(now, simulation)
                self.stats.looks += 1
                if reasons:
                    self.stats.held_looks += 1
                    self.stats.reasons.update(reasons)
                    held = time.monotonic()
                    clock.lease_until(min(now + self.creep, until))
                    await asyncio.sleep(self.look_every)
                    self.stats.held_real_seconds += time.monotonic() - held
                else:
                    clock.lease_until(min(now + self.leash, until))
                    await asyncio.sleep(self.look_every)
        finally:
            self.stats.paced_real_seconds = time.monotonic() - began
            # The clinic has closed: the clock stands at its closing while the run settles.
            clock.lease_until(until)
            await looks.stop()


class _Looks:
    """Where the pacer looks for overdue work: the clinic, Kafka and the services' tables."""

    def __init__(self, kafka: str, database_url: str, deployment: Deployment) -> None:
        self.prefix = deployment.topic_prefix
        self.scheduler = check_schema_name(deployment.schema("scheduler"))
        self.notifier = check_schema_name(deployment.schema("notifier"))
        self.database_url = database_url
        self.admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        self.ends = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=None)
        self.db: asyncpg.Connection | None = None
        self.groups: list[str] = []
        self.coordinator: int | None = None
        self.groups_listed = 0.0

    async def start(self) -> None:
        await self.admin.start()
        await self.ends.start()
        self.db = await asyncpg.connect(self.database_url)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.admin.close()
        with contextlib.suppress(Exception):
            await self.ends.stop()
        if self.db is not None:
            with contextlib.suppress(Exception):
                await self.db.close()

    async def overdue(self, now: datetime, simulation: Simulation) -> list[str]:
        reasons = ["clinic"] if simulation.behind(now) else []
        if await self.kafka_lag():
            reasons.append("kafka")
        reasons += await self.tables(now)
        return reasons

    async def kafka_lag(self) -> int:
        if time.monotonic() - self.groups_listed > 5 or not self.groups:
            listed = await self.admin.list_consumer_groups()
            self.groups = sorted(str(g[0]) for g in listed if str(g[0]).startswith(self.prefix))
            if self.groups and self.coordinator is None:
                self.coordinator = await self.admin.find_coordinator(self.groups[0])
            self.groups_listed = time.monotonic()
        committed: dict[TopicPartition, int] = {}
        offsets = await asyncio.gather(
            *(
                self.admin.list_consumer_group_offsets(g, group_coordinator_id=self.coordinator)
                for g in self.groups
            )
        )
        lag = 0
        pairs: list[tuple[TopicPartition, int]] = []
        for by_partition in offsets:
            for tp, meta in by_partition.items():
                if meta.offset >= 0:
                    pairs.append((tp, meta.offset))
                    committed[tp] = meta.offset
        if not pairs:
            return 0
        ends = await self.ends.end_offsets(list(committed))
        for tp, offset in pairs:
            lag += max(0, ends.get(tp, 0) - offset)
        return lag

    async def tables(self, now: datetime) -> list[str]:
        assert self.db is not None
        s, n = f'"{self.scheduler}"', f'"{self.notifier}"'
        row = await self.db.fetchrow(
            f"""SELECT
                EXISTS (SELECT 1 FROM {s}.attempts WHERE state = 'planned' AND planned_at <= $1)
                    AS attempts,
                EXISTS (SELECT 1 FROM {s}.outbox WHERE published_at IS NULL) AS outbox,
                EXISTS (SELECT 1 FROM {s}.cases WHERE review_at <= $1 AND state <> 'closed')
                    AS reviews,
                EXISTS (SELECT 1 FROM {n}.deliveries
                        WHERE (state = 'pending' AND due_at <= $1) OR state = 'sending')
                    AS deliveries,
                EXISTS (SELECT 1 FROM {n}.deliveries
                        WHERE outcome IS NOT NULL AND NOT outcome_published) AS outcomes""",
            now,
        )
        return [name for name, due in (row or {}).items() if due]
