"""The retention sweep prunes the rebooking tables (rebook_links, rebook_requests) on the real
PostgreSQL schema of a running notifier: a link its period after it expired, a request its
period after it was made, and never a request while a link of its case is still valid."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from services.notifier.privacy import RetentionPeriods
from tests.integration.notifier.world import World

pytestmark = pytest.mark.integration

PERIODS = RetentionPeriods(
    message_bodies=timedelta(days=30),
    contacts=timedelta(days=365),
    opt_outs=timedelta(days=730),
    rebooking=timedelta(days=30),
)


def _purged(table: str) -> float:
    labels = {"service": "notifier", "table": table}
    return REGISTRY.get_sample_value("followup_retention_purged_rows_total", labels) or 0.0


async def _ids(world: World, table: str, column: str) -> set[str]:
    rows = await world.app.pool.fetch(f"SELECT {column} FROM {table}")
    return {str(r[column]) for r in rows}


async def test_rebooking_rows_go_their_period_after_expiry_and_never_while_a_link_holds(
    world: World,
) -> None:
    now = world.clock.now()
    pool = world.app.pool
    # c-old: its one link expires tomorrow. c-live: a later message's link holds 40 days.
    for link_id, key, expires in (
        ("oldlink00001", "c-old:2", now + timedelta(days=1)),
        ("livelink0001", "c-live:1", now + timedelta(days=1)),
        ("livelink0003", "c-live:3", now + timedelta(days=40)),
    ):
        await pool.execute(
            "INSERT INTO rebook_links (link_id, idempotency_key, expires_at) VALUES ($1, $2, $3)",
            link_id,
            key,
            expires,
        )
    for case_id, state in (("c-old", "confirmed"), ("c-live", "requested")):
        await pool.execute(
            """INSERT INTO rebook_requests (case_id, patient_id, idempotency_key, kind, state,
                   requested_at) VALUES ($1, 'p-1', $2, 'booking', $3, $4)""",
            case_id,
            f"{case_id}:1",
            state,
            now,
        )
    before = _purged("rebook_links"), _purged("rebook_requests")

    world.clock.advance(timedelta(days=30))  # 29 days after the first links expired
    await world.app.privacy.prune(PERIODS)
    assert await _ids(world, "rebook_links", "link_id") == {
        "oldlink00001",
        "livelink0001",
        "livelink0003",
    }
    assert await _ids(world, "rebook_requests", "case_id") == {"c-old", "c-live"}

    world.clock.advance(timedelta(days=2))  # 31 days after: those links are gone
    assert await world.app.privacy.prune(PERIODS) >= 3
    assert await _ids(world, "rebook_links", "link_id") == {"livelink0003"}
    # c-old asked 32 days ago and has no valid link: gone; c-live's link still holds.
    assert await _ids(world, "rebook_requests", "case_id") == {"c-live"}
    assert _purged("rebook_links") - before[0] == 2
    assert _purged("rebook_requests") - before[1] == 1

    world.clock.advance(timedelta(days=39))  # 71 days: the last link expired 31 days ago
    await world.app.privacy.prune(PERIODS)
    assert await _ids(world, "rebook_links", "link_id") == set()
    assert await _ids(world, "rebook_requests", "case_id") == set()
