"""Time comes from an injected clock, so tests and the demo can run a week in seconds."""

from __future__ import annotations

import asyncio
import mmap
import struct
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
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

    def virtual_at(self, real: datetime) -> datetime | None:
        """The virtual time the clock showed at wall-clock ``real``."""
        return self.anchor_virtual + (real - self.anchor_real) * self.speed


class SharedClock:
    """Virtual time every process reads from one small file, which its owner can hold back.

    The file (``FOLLOWUP_CLOCK_FILE``) holds an anchor, a speed and a *lease*: the clock runs
    ``speed`` times the wall clock from the anchor but never past the lease. A harness (the
    outcome lab) moves the lease forward only while the services keep up, so a busy machine
    slows virtual time instead of making the services late. Readers map the file and read
    it on every ``now()``; a sequence number makes a reading torn by a write retry.
    """

    _LAYOUT = struct.Struct("<Qdddd")  # sequence, anchor real, anchor virtual, speed, lease

    def __init__(self, path: Path, *, writable: bool = False) -> None:
        self.path = path
        self._file = open(path, "r+b" if writable else "rb")  # noqa: SIM115 (kept open)
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        self._map = mmap.mmap(self._file.fileno(), self._LAYOUT.size, access=access)
        self._latest = 0.0  # never backwards within a process, even across a lease change

    @classmethod
    def create(
        cls, path: Path, anchor_real: datetime, anchor_virtual: datetime, speed: float
    ) -> SharedClock:
        """A new clock file, leased without limit (a scaled clock) until ``lease`` says."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        if anchor_real.tzinfo is None or anchor_virtual.tzinfo is None:
            raise ValueError("SharedClock anchors must be aware datetimes")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            cls._LAYOUT.pack(
                0, anchor_real.timestamp(), anchor_virtual.timestamp(), speed, float("inf")
            )
        )
        return cls(path, writable=True)

    def _read(self) -> tuple[float, float, float, float]:
        while True:
            seq, real, virtual, speed, lease = self._LAYOUT.unpack_from(self._map, 0)
            if seq % 2 == 0 and self._LAYOUT.unpack_from(self._map, 0)[0] == seq:
                return real, virtual, speed, lease

    def _virtual(self) -> float:
        real, virtual, speed, lease = self._read()
        moment = min(virtual + (time.time() - real) * speed, lease)
        self._latest = max(self._latest, moment)
        return self._latest

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._virtual(), UTC)

    @property
    def speed(self) -> float:
        """The most the clock runs: virtual seconds per real second while leased."""
        return self._read()[2]

    @property
    def lease(self) -> datetime | None:
        lease = self._read()[3]
        return None if lease == float("inf") else datetime.fromtimestamp(lease, UTC)

    def real_seconds(self, virtual: timedelta) -> float:
        return virtual.total_seconds() / self.speed

    def virtual_at(self, real: datetime) -> datetime | None:
        """The virtual time the clock showed at wall-clock ``real``, where it can still say:
        since its last lease change, while it runs without limit (None otherwise)."""
        anchor_real, anchor_virtual, speed, lease = self._read()
        if lease != float("inf") or real.timestamp() < anchor_real:
            return None
        return datetime.fromtimestamp(
            anchor_virtual + (real.timestamp() - anchor_real) * speed, UTC
        )

    def lease_until(self, moment: datetime | None) -> datetime:
        """Let the clock run until ``moment`` (None: without limit), never backwards; the
        anchor moves to now, so a clock that stood still goes on from where it stood."""
        speed, now = self.speed, self._virtual()
        lease = float("inf") if moment is None else max(now, moment.timestamp())
        seq = self._LAYOUT.unpack_from(self._map, 0)[0]
        # Odd while being written: a reader in another process reads again.
        self._LAYOUT.pack_into(self._map, 0, seq + 1, time.time(), now, speed, lease)
        struct.pack_into("<Q", self._map, 0, seq + 2)
        return datetime.fromtimestamp(now, UTC)

    async def sleep(self, seconds: float) -> None:
        # Held back, the clock may stand still: look again, at least as late as the wall
        # clock could bring the moment, so many sleepers do not wake each other up.
        target = self._virtual() + max(0.0, seconds)
        while (left := target - self._virtual()) > 0:
            await asyncio.sleep(max(left / self.speed, 0.02))

    def close(self) -> None:
        self._map.close()
        self._file.close()
