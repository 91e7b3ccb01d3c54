"""Scheduler firing on a real PostgreSQL schema: due attempts fired per second by one and by
two firing loops (``CaseLedger.fire_due``, outbox write included), against a bare
``SKIP LOCKED`` claim + mark-done loop on the same rows freshly seeded (the floor of any
PostgreSQL job queue), and the cost of a tick when little is due among many open cases.
Then the scheduler as a process (``python -m services.scheduler``, its own firing, relay and
polling loops, the system clock): firing lateness at a steady rate, and a mass wake-up of
call tasks due at one instant while other work keeps falling due.

Sizes from the environment: ``FOLLOWUP_BENCH_OPEN_CASES`` (default 100,000 open cases;
``--big`` 1,000,000), ``FOLLOWUP_BENCH_DUE`` (default 5,000 of them due),
``FOLLOWUP_BENCH_STEADY_RATE`` (default 1,000 due/s, for ``FOLLOWUP_BENCH_STEADY_SECONDS``,
default 10) and ``FOLLOWUP_BENCH_WAKE_UP`` (call tasks at once, default 50,000). Each
measurement gets a fresh schema (dropped afterwards), seeded server-side with
``generate_series``. The two loops run in one process with a pool each, as two replicas
would share the database (not the CPU: on a small machine they compete with PostgreSQL).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from bench.harness import Figure, Observation, Result, percentile
from bench.processes import ServiceProcess, unique_prefix
from common.clock import ManualClock
from common.config import PREFIX, Settings
from common.db import create_pool, drop_schema, migrate
from common.kafka import delete_topics_with_prefix
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
    steady_rate: int = 1000
    steady_seconds: int = 10
    wake_up: int = 50_000
    other_rate: int = 100

    @classmethod
    def from_env(cls, big: bool = False) -> Sizes:
        def env(name: str, default: int) -> int:
            return int(os.environ.get(f"{PREFIX}BENCH_{name}", str(default)))

        return cls(
            open_cases=env("OPEN_CASES", 1_000_000 if big else 100_000),
            due=env("DUE", 5000),
            steady_rate=env("STEADY_RATE", 1000),
            steady_seconds=env("STEADY_SECONDS", 10),
            wake_up=env("WAKE_UP", 50_000),
            other_rate=env("OTHER_RATE", 100),
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
    def __init__(self, dsn: str, sizes: Sizes, bootstrap: str) -> None:
        self.dsn = dsn
        self.bootstrap = bootstrap
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

    async def bare(self) -> float:
        """The baseline: the bare claim loop on the same seed as ``firing``."""
        sizes = self.sizes
        schema = await self._schema(sizes.open_cases, sizes.due, timedelta(minutes=30))
        pool = await create_pool(self.dsn, schema, max_size=2)
        try:
            started = time.perf_counter()
            done = await bare_claim_loop(pool, NOW)
            elapsed = time.perf_counter() - started
            if done != sizes.due:
                raise RuntimeError(f"claimed {done} of {sizes.due} due attempts")
            return done / elapsed
        finally:
            await pool.close()
            await drop_schema(self.dsn, schema)

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

    async def figures(self) -> list[Result]:
        sizes = self.sizes
        floor = await self.bare()
        one = await self.firing(1)
        two = await self.firing(2)
        crowded = await self.ticks(sizes.open_cases)
        alone = await self.ticks(TICK_DUE * TICKS)
        where = f"{sizes.due} due/{sizes.open_cases} open"
        bare = "bare SKIP LOCKED claim+done"
        results: list[Result] = [
            Figure(f"scheduler: fire, 1 loop ({where})", one, bare, floor),
            Figure(f"scheduler: fire, 2 loops ({where})", two, bare, floor),
            Figure(
                f"scheduler: tick of {TICK_DUE} due among {sizes.open_cases} open",
                crowded,
                f"{TICK_DUE} due among {TICK_DUE * TICKS}",
                alone,
            ),
        ]
        results += await steady_lateness(
            self.dsn, self.bootstrap, sizes.steady_rate, sizes.steady_seconds
        )
        results += await mass_wake_up(self.dsn, self.bootstrap, sizes.wake_up, sizes.other_rate)
        return results


def run(
    sizes: Sizes | None = None,
    dsn: str | None = None,
    bootstrap: str | None = None,
    big: bool = False,
) -> list[Result]:
    dsn = dsn or os.environ.get(f"{PREFIX}DATABASE_URL", str(Settings().database_url))
    bootstrap = bootstrap or Settings().kafka_bootstrap
    return asyncio.run(Bench(dsn, sizes or Sizes.from_env(big), bootstrap).figures())


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


# --- the bare baseline and the scheduler as a process ------------------------------------


async def bare_claim_loop(pool: asyncpg.Pool, now: datetime, batch: int = FIRE_BATCH) -> int:
    """The floor of any PostgreSQL job queue on these rows: claim ``batch`` due attempts with
    ``SKIP LOCKED`` and mark them done, one transaction per batch, until none is due."""
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetch(
                """SELECT case_id, attempt_number FROM attempts
                    WHERE state = 'planned' AND planned_at <= $1
                    ORDER BY planned_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
                now,
                batch,
            )
            if not claimed:
                return total
            await conn.execute(
                """UPDATE attempts SET state = 'fired', fired_at = $1
                    WHERE (case_id, attempt_number) IN
                          (SELECT * FROM unnest($2::text[], $3::int[]))""",
                now,
                [r["case_id"] for r in claimed],
                [r["attempt_number"] for r in claimed],
            )
            total += len(claimed)


async def seed_attempts(
    conn: asyncpg.Connection,
    first: int,
    count: int,
    channel: str,
    due_from: datetime,
    step: timedelta,
) -> None:
    """Open cases ``case-<first>..`` of their own patients, each with one planned attempt
    on ``channel``, due from ``due_from`` every ``step``."""
    opened = due_from - timedelta(hours=1)
    await conn.execute(
        """INSERT INTO cases (case_id, patient_id, reason, department, timezone, state,
               trigger_event_id, fact_at, opened_at, updated_at)
           SELECT 'case-' || n, 'pat-' || n, 'no_show', 'dental', 'Europe/Vilnius', 'open',
               'no_show:appt-' || n, $1, $1, $1
           FROM generate_series($2::int, $3::int) AS n""",
        opened,
        first,
        first + count - 1,
    )
    template = "no_show_call" if channel == "call_task" else f"no_show_{channel}"
    await conn.execute(
        """INSERT INTO attempts (case_id, attempt_number, purpose, channel, template, state,
               planned_at, window_end)
           SELECT 'case-' || n, 1, 'follow_up', $1, $2, 'planned',
               $3::timestamptz + $4::interval * (n - $5::int), $3::timestamptz + interval '3 hours'
           FROM generate_series($5::int, $6::int) AS n""",
        channel,
        template,
        due_from,
        step,
        first,
        first + count - 1,
    )


async def lateness(
    pool: asyncpg.Pool, channel: str, expected: int, timeout: float
) -> tuple[list[float], float]:
    """Waits until ``expected`` seeded attempts on ``channel`` are fired (the steps
    their firing planned next are not counted); their lateness (fired_at
    minus planned_at, seconds) and the seconds from the first planned to the last fired."""
    async with asyncio.timeout(timeout):
        while (
            await pool.fetchval(
                "SELECT count(*) FROM attempts WHERE channel = $1 AND attempt_number = 1 "
                "AND state = 'fired'",
                channel,
            )
            < expected
        ):
            await asyncio.sleep(0.2)
    rows = await pool.fetch(
        """SELECT extract(epoch FROM fired_at - planned_at)::float8 AS late,
                  extract(epoch FROM fired_at - min(planned_at) OVER ())::float8 AS since_first
             FROM attempts WHERE channel = $1 AND attempt_number = 1""",
        channel,
    )
    return [r["late"] for r in rows], max(r["since_first"] for r in rows)


class SchedulerProcess:
    """``python -m services.scheduler`` on a schema and topic prefix of its own."""

    def __init__(self, dsn: str, bootstrap: str) -> None:
        self.dsn = dsn
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"
        self.prefix = unique_prefix("sched")
        self.process = ServiceProcess(
            "services.scheduler",
            {
                "FOLLOWUP_DATABASE_URL": dsn,
                "FOLLOWUP_DB_SCHEMA": self.schema,
                "FOLLOWUP_KAFKA_BOOTSTRAP": bootstrap,
                "FOLLOWUP_TOPIC_PREFIX": self.prefix,
            },
        )
        self.bootstrap = bootstrap

    async def __aenter__(self) -> asyncpg.Pool:
        await self.process.start()
        self.pool = await create_pool(self.dsn, self.schema, max_size=2)
        return self.pool

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.close()
        await self.process.stop()
        await drop_schema(self.dsn, self.schema)
        await delete_topics_with_prefix(self.bootstrap, self.prefix)


async def steady_lateness(dsn: str, bootstrap: str, rate: int, seconds: int) -> list[Result]:
    due = rate * seconds
    async with SchedulerProcess(dsn, bootstrap) as pool:
        async with pool.acquire() as conn, conn.transaction():
            first = datetime.now(UTC) + timedelta(seconds=3)
            await seed_attempts(conn, 1, due, "sms", first, timedelta(seconds=1) / rate)
        late, _ = await lateness(pool, "sms", due, timeout=seconds + 300)
    where = f"steady {rate} due/s for {seconds} s"
    return [
        Observation(f"scheduler: firing lateness p50 ({where})", percentile(late, 0.5), "s"),
        Observation(f"scheduler: firing lateness p99 ({where})", percentile(late, 0.99), "s"),
    ]


async def mass_wake_up(dsn: str, bootstrap: str, calls: int, other_rate: int) -> list[Result]:
    """``calls`` call tasks due at one instant, while SMS keep falling due at ``other_rate``
    a second (for 30 s from that instant)."""
    others = other_rate * 30
    async with SchedulerProcess(dsn, bootstrap) as pool:
        nine = datetime.now(UTC) + timedelta(seconds=5)
        async with pool.acquire() as conn, conn.transaction():
            await seed_attempts(conn, 1, calls, "call_task", nine, timedelta(0))
            step = timedelta(seconds=1) / other_rate
            await seed_attempts(conn, calls + 1, others, "sms", nine, step)
        _, drained = await lateness(pool, "call_task", calls, timeout=900)
        late, _ = await lateness(pool, "sms", others, timeout=900)
    return [
        Observation(f"scheduler: mass wake-up, {calls} call tasks drained", drained, "s"),
        Observation(
            f"scheduler: mass wake-up, p99 lateness of other due work ({other_rate}/s)",
            percentile(late, 0.99),
            "s",
        ),
    ]


if __name__ == "__main__":
    # ``python -m bench.scheduler_bench``: statements per handler (not a timing).
    url = os.environ.get(f"{PREFIX}DATABASE_URL", str(Settings().database_url))
    for handler, statements in asyncio.run(statements_per_handler(url)).items():
        print(f"scheduler statements: {handler:<20} {statements:>3}")
