"""The lab's pacer: virtual time held where it is while work is overdue, and leased no
further than the leash or just past the next moment work is due."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from common.clock import SharedClock
from demo.deployment import Deployment
from demo.lab.pacer import Looks, Pacer
from demo.simulator.clinic import Simulation

START = datetime(2026, 3, 2, 6, tzinfo=UTC)


class Done(Exception):
    pass


@dataclass
class Script:
    """Each look: what is overdue and when work is due next; the lease each look found."""

    clock: SharedClock
    answers: list[tuple[list[str], datetime | None]]
    leases: list[datetime | None] = field(default_factory=list)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def overdue(self, now: datetime, simulation: Any) -> tuple[list[str], datetime | None]:
        self.leases.append(self.clock.lease)
        if len(self.leases) > len(self.answers):
            raise Done  # a day of virtual time at this speed is a real day
        return self.answers[len(self.leases) - 1]


@dataclass
class Scenario:
    end: datetime


@dataclass
class Clinic:
    scenario: Scenario


def test_the_clock_is_held_while_work_is_overdue_and_leased_to_the_next_due_moment(
    tmp_path: Path,
) -> None:
    # Slow enough that the wall clock never reaches a lease between two looks.
    clock = SharedClock.create(tmp_path / "clock", datetime.now(UTC), START, speed=1.0)
    due = START + timedelta(minutes=5)
    script = Script(clock, [([], None), (["kafka", "attempts"], None), ([], due), ([], None)])

    def looks(deployment: Deployment, simulation: Simulation) -> Looks:
        return script

    pacer = Pacer("", "", look_every=0.001, looks=looks)
    end = Scenario(START + timedelta(days=1))
    with pytest.raises(Done):
        asyncio.run(pacer.during(cast(Any, None), cast(Any, Clinic(end)), clock))
    free, held, to_due, free_again = script.leases[1:5]
    assert free is not None and free - START >= pacer.leash  # nothing due: the leash
    assert held is not None and held - START <= pacer.creep + timedelta(seconds=1)  # held
    assert to_due == due + pacer.past_due  # no further than just past the due work
    assert free_again is not None and free_again - START >= pacer.leash
    assert pacer.stats.held_looks == 1
    assert pacer.stats.reasons == {"kafka": 1, "attempts": 1}
    assert clock.lease == end.end  # the clinic closed: the clock stands at its closing


def test_only_the_notifiers_sends_let_a_held_clock_creep(tmp_path: Path) -> None:
    clock = SharedClock.create(tmp_path / "clock", datetime.now(UTC), START, speed=1.0)
    script = Script(clock, [(["deliveries"], None), (["clinic", "deliveries"], None)])

    def looks(deployment: Deployment, simulation: Simulation) -> Looks:
        return script

    pacer = Pacer("", "", look_every=0.001, creep_after=0.0, looks=looks)
    with pytest.raises(Done):
        day = Clinic(Scenario(START + timedelta(days=1)))
        asyncio.run(pacer.during(cast(Any, None), cast(Any, day), clock))
    crept, held = script.leases[1:3]
    assert crept is not None and crept - START >= pacer.creep  # a rate limit waits on it
    assert held is not None and held - crept < timedelta(seconds=1)  # the clinic: held
    assert pacer.stats.crept_looks == 1


def test_the_clock_stands_at_the_opening_while_the_services_start(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from demo.lab.lab import SERVICE_ENV, LabHooks

    opening = START + timedelta(hours=5)
    # The runner anchors the clock a little in the future, at a great speed: unheld, it
    # would be days past the opening by the time slow services are ready.
    clock = SharedClock.create(tmp_path / "clock", datetime.now(UTC), START, 1e6)
    hooks = LabHooks(
        cast(Pacer, None), cast(Any, None), cast(Any, None), opening, dict(SERVICE_ENV)
    )
    env = asyncio.run(hooks.prepared(SimpleNamespace(sms=SimpleNamespace(clock=clock)), {}))
    assert env == SERVICE_ENV
    assert clock.lease == opening
    assert clock.now() <= opening
