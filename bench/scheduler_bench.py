"""Scheduler firing on a real PostgreSQL schema: due attempts fired per second by one and by
two firing loops, against a ``SELECT 1`` round trip (the floor any statement pays), and the
cost of a tick when little is due among many open cases.

Sizes from the environment: ``FOLLOWUP_BENCH_OPEN_CASES`` (default 100,000 open cases) and
``FOLLOWUP_BENCH_DUE`` (default 5,000 of them due). Each measurement gets a fresh schema
(dropped afterwards), seeded server-side with ``generate_series``. The two loops run in one
process with a pool each, as two replicas would share the database (not the CPU: on a
small machine they compete with PostgreSQL for it).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from bench.harness import Figure
from common.clock import ManualClock
from common.config import PREFIX, Settings
from common.db import create_pool, drop_schema, migrate
from services.scheduler.app import MIGRATIONS
from services.scheduler.ledger import CaseLedger
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy
from tests.support.scheduler import no_show_trigger, seed_open_cases, seed_planned_sms

# A Monday morning at the clinic: the seeded SMS steps are due now, the rest next week.
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=ZoneInfo("Europe/Vilnius"))
FIRE_BATCH = 200  # the service's default FOLLOWUP_FIRE_BATCH
TICK_DUE = 50  # attempts due at each tick of the tick-cost figure
TICKS = 40


@dataclass(frozen=True)
class Sizes:
    open_cases: int
    due: int

    @classmethod
    def from_env(cls) -> Sizes:
        return cls(
            open_cases=int(os.environ.get("FOLLOWUP_BENCH_OPEN_CASES", "100000")),
            due=int(os.environ.get("FOLLOWUP_BENCH_DUE", "5000")),
        )


async def seed(pool: asyncpg.Pool, open_cases: int, due: int, spread: timedelta) -> None:
    """``open_cases`` no-show cases of distinct patients, each with one planned SMS; the
    first ``due`` are due between ``NOW - spread`` and ``NOW``, the others next week."""
    async with pool.acquire() as conn, conn.transaction():
        await seed_open_cases(conn, open_cases, NOW - timedelta(hours=1))
        step = spread / max(due, 1)
        await seed_planned_sms(
            conn,
            open_cases,
            NOW - spread + step,
            NOW + timedelta(days=8),
            step=step,
            due=due,
            later=NOW + timedelta(days=7),
        )
    async with pool.acquire() as conn:
        await conn.execute("ANALYZE cases; ANALYZE attempts")


class Bench:
    def __init__(self, dsn: str, sizes: Sizes) -> None:
        self.dsn = dsn
        self.sizes = sizes
        self.policy = CadencePolicy.load(DEFAULT_POLICY_PATH)
        self.schemas: list[str] = []  # every schema made, each dropped after its measurement

    async def _schema(self, open_cases: int, due: int, spread: timedelta) -> str:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        self.schemas.append(schema)
        await migrate(self.dsn, schema, MIGRATIONS)
        pool = await create_pool(self.dsn, schema, max_size=2)
        try:
            await seed(pool, open_cases, due, spread)
        except BaseException:
            await drop_schema(self.dsn, schema)
            raise
        finally:
            await pool.close()
        return schema

    async def round_trips(self, count: int = 1000, repeats: int = 5) -> float:
        """The baseline: ``SELECT 1`` round trips per second on one connection (the median
        of a few runs: a short loop on a shared machine is noisy)."""
        conn = await asyncpg.connect(self.dsn)
        try:
            rates = []
            for _ in range(repeats):
                started = time.perf_counter()
                for _ in range(count):
                    await conn.fetchval("SELECT 1")
                rates.append(count / (time.perf_counter() - started))
            return statistics.median(rates)
        finally:
            await conn.close()

    async def firing(self, loops: int) -> float:
        """Due attempts fired per second by ``loops`` firing loops, until none is due."""
        sizes = self.sizes
        schema = await self._schema(sizes.open_cases, sizes.due, timedelta(minutes=30))
        pools = [await create_pool(self.dsn, schema, max_size=2) for _ in range(loops)]
        clock = ManualClock(NOW)
        try:

            async def drain(ledger: CaseLedger) -> int:
                total = 0
                while (fired := await ledger.fire_due(FIRE_BATCH)) > 0:
                    total += fired
                return total

            started = time.perf_counter()
            counts = await asyncio.gather(
                *(drain(CaseLedger(p, self.policy, clock)) for p in pools)
            )
            elapsed = time.perf_counter() - started
            if sum(counts) != sizes.due:
                raise RuntimeError(f"fired {sum(counts)} of {sizes.due} due attempts")
            return sizes.due / elapsed
        finally:
            for p in pools:
                await p.close()
            await drop_schema(self.dsn, schema)

    async def ticks(self, open_cases: int) -> float:
        """Ticks per second when ``TICK_DUE`` attempts are due among ``open_cases``."""
        due = TICK_DUE * TICKS
        schema = await self._schema(max(open_cases, due), due, timedelta(seconds=TICKS))
        pool = await create_pool(self.dsn, schema, max_size=2)
        clock = ManualClock(NOW - timedelta(seconds=TICKS))
        ledger = CaseLedger(pool, self.policy, clock)
        try:
            elapsed = 0.0
            for _ in range(TICKS):
                # One second later, the next TICK_DUE attempts are due.
                clock.advance(timedelta(seconds=1))
                started = time.perf_counter()
                fired = await ledger.fire_due(FIRE_BATCH)
                elapsed += time.perf_counter() - started
                if fired != TICK_DUE:
                    raise RuntimeError(f"a tick fired {fired}, expected {TICK_DUE}")
            return TICKS / elapsed
        finally:
            await pool.close()
            await drop_schema(self.dsn, schema)

    async def figures(self) -> list[Figure]:
        sizes = self.sizes
        floor = await self.round_trips()
        one = await self.firing(1)
        two = await self.firing(2)
        crowded = await self.ticks(sizes.open_cases)
        alone = await self.ticks(TICK_DUE * TICKS)
        where = f"{sizes.due} due/{sizes.open_cases} open"
        return [
            Figure(f"scheduler: fire, 1 loop ({where})", one, "SELECT 1 round trip", floor),
            Figure(f"scheduler: fire, 2 loops ({where})", two, "fire, 1 loop", one),
            Figure(
                f"scheduler: tick of {TICK_DUE} due among {sizes.open_cases} open",
                crowded,
                f"{TICK_DUE} due among {TICK_DUE * TICKS}",
                alone,
            ),
        ]


def run(sizes: Sizes | None = None, dsn: str | None = None) -> list[Figure]:
    dsn = dsn or os.environ.get(f"{PREFIX}DATABASE_URL", str(Settings().database_url))
    return asyncio.run(Bench(dsn, sizes or Sizes.from_env()).figures())


# --- statements per handler ---------------------------------------------------------------

_COUNTED = ("execute", "executemany", "fetch", "fetchrow", "fetchval")


class StatementCounter:
    """Counts the statements a handler sends, by wrapping asyncpg's connection methods while
    it runs: every round trip, BEGIN, COMMIT and the pool's reset on release included (3 in
    every handler); an ``executemany`` counts once."""

    def __init__(self) -> None:
        self.count = 0
        self._saved: dict[str, object] = {}

    def __enter__(self) -> StatementCounter:
        for name in _COUNTED:
            original = getattr(asyncpg.Connection, name)
            self._saved[name] = original

            def counted(conn: object, *args: object, _original: object = original, **kw: object):  # type: ignore[no-untyped-def]
                self.count += 1
                return _original(conn, *args, **kw)  # type: ignore[operator]

            setattr(asyncpg.Connection, name, counted)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._saved.items():
            setattr(asyncpg.Connection, name, original)


async def statements_per_handler(dsn: str) -> dict[str, int]:
    """Statements for a no-show trigger, firing its first attempt, and a no_answer on it."""
    from schemas.events import OutcomeEvent

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    await migrate(dsn, schema, MIGRATIONS)
    pool = await create_pool(dsn, schema, max_size=2)
    missed = NOW - timedelta(minutes=30)
    clock = ManualClock(NOW)
    ledger = CaseLedger(pool, CadencePolicy.load(DEFAULT_POLICY_PATH), clock)
    found: dict[str, int] = {}
    try:
        trigger = no_show_trigger(missed=missed)
        with StatementCounter() as counter:
            await ledger.handle_trigger(trigger)
        found["trigger"] = counter.count
        async with pool.acquire() as conn:
            case_id, planned_at = await conn.fetchrow(
                "SELECT case_id, planned_at FROM attempts WHERE attempt_number = 1"
            )
        clock.set(planned_at)
        with StatementCounter() as counter:
            fired = await ledger.fire_due(FIRE_BATCH)
        if fired != 1:
            raise RuntimeError(f"fired {fired}, expected 1")
        found["one firing"] = counter.count
        answer = OutcomeEvent(
            event_id="outcome-1",
            occurred_at=planned_at,
            source="notifier",
            outcome="no_answer",
            patient_id="pat-1",
            channel="call_task",
            case_id=case_id,
            attempt_number=1,
        )
        with StatementCounter() as counter:
            await ledger.handle_outcome(answer)
        found["no_answer outcome"] = counter.count
        return found
    finally:
        await pool.close()
        await drop_schema(dsn, schema)


if __name__ == "__main__":
    # ``python -m bench.scheduler_bench``: statements per handler (not a timing).
    url = os.environ.get(f"{PREFIX}DATABASE_URL", str(Settings().database_url))
    for handler, statements in asyncio.run(statements_per_handler(url)).items():
        print(f"scheduler statements: {handler:<20} {statements:>3}")
