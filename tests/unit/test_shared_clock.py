"""The shared clock: one file, read by every process, held back by its owner's lease."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common.clock import SharedClock
from common.config import ConfigError, Settings

VIRTUAL = datetime(2026, 3, 2, 8, tzinfo=UTC)


def test_a_reader_sees_the_owners_time_and_stops_at_the_lease(tmp_path: Path) -> None:
    owner = SharedClock.create(
        tmp_path / "clock", datetime.now(UTC) - timedelta(seconds=10), VIRTUAL, speed=3600
    )
    reader = SharedClock(tmp_path / "clock")
    assert timedelta(hours=9, minutes=59) < reader.now() - VIRTUAL < timedelta(hours=11)
    held = owner.lease_until(None)
    owner.lease_until(held + timedelta(minutes=1))
    # The wall clock alone would take it hours further; the lease holds it a minute on.
    assert reader.now() <= held + timedelta(minutes=1)
    at = reader.now()
    assert reader.now() >= at  # never backwards
    owner.lease_until(VIRTUAL)  # a lease in the past holds the clock where it is
    stood = reader.now()
    assert stood >= at and reader.now() == stood
    assert reader.lease == owner.lease == stood


def test_sleep_waits_for_the_lease_to_move_on(tmp_path: Path) -> None:
    owner = SharedClock.create(tmp_path / "clock", datetime.now(UTC), VIRTUAL, speed=3600)
    stood = owner.lease_until(VIRTUAL)  # held

    async def scenario() -> bool:
        sleeper = asyncio.create_task(SharedClock(tmp_path / "clock").sleep(60))
        await asyncio.sleep(0.2)  # 12 virtual minutes of wall time: still held
        waiting = not sleeper.done()
        owner.lease_until(stood + timedelta(hours=1))
        await asyncio.wait_for(sleeper, 2)
        return waiting

    assert asyncio.run(scenario())


def test_settings_make_a_shared_clock_from_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SharedClock.create(tmp_path / "clock", datetime.now(UTC), VIRTUAL, speed=60)
    clock = Settings(clock="shared", clock_file=tmp_path / "clock").make_clock()
    assert isinstance(clock, SharedClock) and clock.speed == 60
    with pytest.raises(ConfigError, match="CLOCK_FILE"):
        Settings(clock="shared", clock_file=tmp_path / "missing").make_clock()


def test_virtual_at_maps_wall_clock_moments_while_the_clock_runs_freely(tmp_path: Path) -> None:
    began = datetime.now(UTC)
    owner = SharedClock.create(tmp_path / "clock", began, VIRTUAL, speed=3600)
    reader = SharedClock(tmp_path / "clock")
    assert reader.virtual_at(began + timedelta(seconds=2)) == VIRTUAL + timedelta(hours=2)
    assert reader.virtual_at(began - timedelta(seconds=1)) is None  # before the anchor
    owner.lease_until(VIRTUAL + timedelta(days=1))
    assert reader.virtual_at(began + timedelta(seconds=2)) is None  # held: no longer linear
