"""The lab's pacer: virtual time moves on only while the services keep up.

The services and the clinic read one shared clock file (``common.clock.SharedClock``). The
pacer gives the clock a short lease each time it finds nothing overdue: the ``leash`` (half
an hour of virtual time), and never further than just past the next moment it knows work is
due (the clinic's next action, the scheduler's next attempt or review, the notifier's next
delivery, the tracker's next no-show timer). It holds the clock where it is while anything
is overdue: a clinic action due and not yet acknowledged, a message on any of the run's
topics not yet consumed (a consumer group's committed offset behind the partition's end),
an attempt the scheduler should have fired, a command in its outbox, a case due for
review, a delivery the notifier should have sent or reported. On a busy machine virtual
time runs slower; what the services do, and when by their clock, stays the same, so the
lab's verdicts do not depend on the machine's load. What a service does between two looks
(a few hundredths of a second) can be late by one lease at most, whatever the load.

While held, the clock creeps on (``creep`` per look) only when what is overdue is the
notifier's sends, which can themselves wait for virtual time (a rate limit, a retry), after
three real seconds, or when anything has held it for ``stuck_after`` real seconds, so no
run stands still for ever; how long and why it was held is reported with each run.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from common.clock import ScaledClock, SharedClock
from common.db import check_schema_name
from demo.deployment import Deployment
from demo.simulator.clinic import Simulation
from schemas.topics import APPOINTMENTS, CATALOGUE, OUTCOMES, PATIENTS, PLANS

NO_SHOW_GRACE = timedelta(minutes=15)
# Overdue work that may itself wait for virtual time: the notifier's sends and reports.
WAITS_ON_CLOCK = frozenset({"deliveries", "outcomes"})


@dataclass
class PacerStats:
    looks: int = 0
    held_looks: int = 0
    held_real_seconds: float = 0.0
    crept_looks: int = 0  # held looks that still let the clock creep on
    reasons: Counter[str] = field(default_factory=Counter)  # looks held, by what was due
    paced_real_seconds: float = 0.0  # from the clinic's opening to its closing

    def as_dict(self) -> dict[str, Any]:
        return {
            "looks": self.looks,
            "held_looks": self.held_looks,
            "held_real_seconds": round(self.held_real_seconds, 1),
            "crept_looks": self.crept_looks,
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
    # Real seconds held before the notifier's sends creep: a send to three call-task sinks on
    # a starved machine takes a second or two; its SMS rate limit waits on the clock.
    creep_after: float = 3.0
    stuck_after: float = 20.0  # real seconds held before anything creeps
    # How far past a due moment the clock may go: work due within it is looked at together
    # (fewer looks); less than the 20 minutes between a check-in and its no-show timer.
    past_due: timedelta = timedelta(minutes=10)
    look_every: float = 0.005  # real seconds between looks
    stats: PacerStats = field(default_factory=PacerStats)
    # Where it looks (a stand-in in the pacer's unit test); None: Kafka and the tables.
    looks: Callable[[Deployment, Simulation], Looks] | None = None

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
        looks = (
            self.looks(deployment, simulation)
            if self.looks is not None
            else _Looks(self.kafka, self.database_url, deployment, simulation)
        )
        await looks.start()
        began = time.monotonic()
        held_since: float | None = None
        try:
            while (now := clock.now()) < until:
                overdue, due_next = await looks.overdue(now, simulation)
                self.stats.looks += 1
                if overdue:
                    self.stats.held_looks += 1
                    self.stats.reasons.update(overdue)
                    held = time.monotonic()
                    held_since = held if held_since is None else held_since
                    creeps = self._creeps(overdue, held - held_since)
                    self.stats.crept_looks += creeps
                    clock.lease_until(min(now + self.creep, until) if creeps else now)
                    await asyncio.sleep(self.look_every)
                    self.stats.held_real_seconds += time.monotonic() - held
                    continue
                held_since = None
                # No further than the leash, nor past the next moment something is due
                # (a clinic action, an attempt, a review, a delivery, a no-show timer):
                # the clock stops just after it until that work is done.
                horizon = min(m for m in (now + self.leash, due_next, until) if m is not None)
                clock.lease_until(max(horizon + self.past_due, now))
                await asyncio.sleep(self.look_every)
        finally:
            self.stats.paced_real_seconds = time.monotonic() - began
            # The clinic has closed: the clock stands at its closing while the run settles.
            clock.lease_until(until)
            await looks.stop()

    def _creeps(self, overdue: list[str], held_for: float) -> bool:
        """Whether a held clock creeps on: only for the notifier's sends, which can wait
        for its clock themselves (a rate limit, a retry), once held a while; for anything
        after ``stuck_after`` real seconds, so that no run can stand still for ever."""
        if set(overdue) <= WAITS_ON_CLOCK and held_for >= self.creep_after:
            return True
        return held_for >= self.stuck_after


class Looks(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def overdue(
        self, now: datetime, simulation: Simulation
    ) -> tuple[list[str], datetime | None]: ...


class _Looks:
    """Where the pacer looks for overdue work: the clinic, Kafka and the services' tables."""

    def __init__(
        self, kafka: str, database_url: str, deployment: Deployment, simulation: Simulation
    ) -> None:
        # The tracker's no-show timers: each booked visit's start and grace (its README).
        self.timers = sorted(
            a.start + NO_SHOW_GRACE for p in simulation.scenario.patients for a in p.appointments
        )
        self.prefix = deployment.topic_prefix
        self.scheduler = check_schema_name(deployment.schema("scheduler"))
        self.notifier = check_schema_name(deployment.schema("notifier"))
        self.database_url = database_url
        self.admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        self.ends = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=None)
        self.db: asyncpg.Connection | None = None
        self.groups: list[str] = []
        self.consumed: dict[str, set[str]] = {}  # group -> the topics it reads
        self.partitions: dict[str, list[int]] = {}  # topic -> its partitions
        self.coordinator: int | None = None
        self.groups_listed = 0.0
        self.groups_stable = 0  # listings in a row that found the same groups
        # The partitions' ends at the last look that found no lag (None: lag, or not known).
        self.caught_up: dict[TopicPartition, int] | None = None

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

    async def overdue(
        self, now: datetime, simulation: Simulation
    ) -> tuple[list[str], datetime | None]:
        """What is overdue at ``now`` (by kind), and when the next known work is due."""
        if simulation.behind(now):
            return ["clinic"], None  # held anyway: the topics and tables are looked at next
        # Kafka and the tables at once: a look is as long as the slower of the two.
        lag, (overdue, due_next) = await asyncio.gather(self.kafka_lag(), self.tables(now))
        reasons = ["kafka"] if lag else []
        timer = bisect.bisect_right(self.timers, now)
        moments = [
            m
            for m in (
                due_next,
                simulation.next_action_at(),
                self.timers[timer] if timer < len(self.timers) else None,
            )
            if m is not None
        ]
        return reasons + overdue, min(moments, default=None)

    async def kafka_lag(self) -> int:
        """Messages on the run's topics that a service's group has not committed past. A
        partition a group has never committed counts from its start (the run's topics are
        new): a first message there is lag too."""
        # The broker's every group is listed (hundreds on a shared broker, a costly answer):
        # every 5 s until the run's groups stayed the same three times, then every minute.
        every = 60.0 if self.groups_stable >= 3 else 5.0
        if time.monotonic() - self.groups_listed > every or not self.groups:
            groups = list(self.groups)
            await self._list_groups()
            self.groups_stable = self.groups_stable + 1 if self.groups == groups else 0
            if self.groups != groups:
                self.caught_up = None
        if self.caught_up is not None:
            # Committed offsets never go back: while no partition's end has moved since
            # every group had committed up to it, there is still no lag, and one request
            # for the ends saves one per group for what they committed.
            if await self.ends.end_offsets(list(self.caught_up)) == self.caught_up:
                return 0
            self.caught_up = None
        offsets = await asyncio.gather(
            *(
                self.admin.list_consumer_group_offsets(g, group_coordinator_id=self.coordinator)
                for g in self.groups
            )
        )
        wanted: list[tuple[TopicPartition, int]] = []
        for group, committed in zip(self.groups, offsets, strict=True):
            topics = self.consumed[group] | {tp.topic for tp in committed}
            for topic in topics:
                for partition in self.partitions.get(topic, ()):
                    tp = TopicPartition(topic, partition)
                    meta = committed.get(tp)
                    wanted.append((tp, meta.offset if meta is not None and meta.offset >= 0 else 0))
        if not wanted:
            return 0
        ends = await self.ends.end_offsets(list({tp for tp, _ in wanted}))
        lag = int(sum(max(0, ends.get(tp, 0) - offset) for tp, offset in wanted))
        self.caught_up = dict(ends) if lag == 0 else None
        return lag

    async def _list_groups(self) -> None:
        listed = await self.admin.list_consumer_groups()
        self.groups = sorted(str(g[0]) for g in listed if str(g[0]).startswith(self.prefix))
        if self.groups and self.coordinator is None:
            self.coordinator = await self.admin.find_coordinator(self.groups[0])
        # The run's topics are the catalogue's under its prefix, laid out before the services
        # started: described once, not the broker's every topic on each listing.
        topics = [self.prefix + spec.name for spec in CATALOGUE]
        if not self.partitions:
            for described in await self.admin.describe_topics(topics):
                numbers = [int(p["partition"]) for p in described.get("partitions", ())]
                if numbers:
                    self.partitions[str(described["topic"])] = sorted(numbers)
        for group in self.groups:
            # The scheduler's and notifier's groups are named after their one topic; the
            # tracker's reads the clinic's four input topics.
            tail = group[len(self.prefix) :]
            if tail == "tracker":
                bases = {spec.name for spec in (APPOINTMENTS, OUTCOMES, PATIENTS, PLANS)}
            else:
                bases = {
                    t[len(self.prefix) :]
                    for t in topics
                    if tail.endswith("." + t[len(self.prefix) :])
                }
            self.consumed[group] = {self.prefix + b for b in bases}
        self.groups_listed = time.monotonic()

    async def tables(self, now: datetime) -> tuple[list[str], datetime | None]:
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
                        WHERE outcome IS NOT NULL AND NOT outcome_published) AS outcomes,
                LEAST(
                    (SELECT min(planned_at) FROM {s}.attempts WHERE state = 'planned'),
                    (SELECT min(review_at) FROM {s}.cases
                     WHERE review_at IS NOT NULL AND state <> 'closed'),
                    (SELECT min(due_at) FROM {n}.deliveries WHERE state = 'pending')
                ) AS due_next""",
            now,
        )
        if row is None:
            return [], None
        due_next: datetime | None = row["due_next"]
        return [k for k, v in row.items() if k != "due_next" and v], due_next
