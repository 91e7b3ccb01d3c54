"""Time comes from an injected clock, so tests and the demo can run a week in seconds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current moment, time-zone aware (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when told to: for unit tests."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = moment.astimezone(UTC)

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    async def sleep(self, seconds: float) -> None:
        # Yield to the loop without moving time; tests move it explicitly.
        await asyncio.sleep(0)


class ScaledClock:
    """Virtual time that runs ``speed`` times faster than the wall clock from an anchor.

    Every process given the same anchor and speed computes the same virtual time, which
    is how the demo shares one accelerated clock between separate services.
    """

    def __init__(self, anchor_real: datetime, anchor_virtual: datetime, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        if anchor_real.tzinfo is None or anchor_virtual.tzinfo is None:
            raise ValueError("ScaledClock anchors must be aware datetimes")
        self.anchor_real = anchor_real.astimezone(UTC)
        self.anchor_virtual = anchor_virtual.astimezone(UTC)
        self.speed = speed

    def now(self) -> datetime:
        elapsed = datetime.now(UTC) - self.anchor_real
        return self.anchor_virtual + elapsed * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds / self.speed))

    def real_seconds(self, virtual: timedelta) -> float:
        return virtual.total_seconds() / self.speed
