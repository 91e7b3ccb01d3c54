"""The outbox relay: publishes committed commands to followup.notifications, then marks them.

The rows are claimed with ``FOR UPDATE SKIP LOCKED`` so replicas share the backlog; they
are marked published only after the broker acknowledged them, in the same transaction
that claimed them. A relay that dies between the two leaves them unmarked, and the next
one sends them again: the command's idempotency key lets the notifier drop the repeat.
"""

from __future__ import annotations

from collections import Counter

import asyncpg

from common.clock import Clock
from common.codec import decode
from common.kafka import KafkaPublisher
from common.sites import SiteRegistry, Sites
from schemas.events import NotificationCommand
from services.scheduler import metrics


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: KafkaPublisher,
        topic: str,
        clock: Clock,
        sites: SiteRegistry | None = None,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._topic = topic
        self._clock = clock
        self._sites = sites or SiteRegistry.fixed(Sites.implicit())

    async def publish_pending(self, limit: int = 500) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, payload FROM outbox WHERE published_at IS NULL
                    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
                limit,
            )
            if not rows:
                return 0
            commands = [decode(NotificationCommand, r["payload"].encode()) for r in rows]
            await self._publisher.publish_many(self._topic, commands)
            await conn.execute(
                "UPDATE outbox SET published_at = $2 WHERE id = ANY($1)",
                [r["id"] for r in rows],
                self._clock.now(),
            )
        # Counted once the marks are committed: a relay that dies before resends the batch
        # (the notifier drops the repeats by key) and counts it then.
        metrics.OUTBOX_PUBLISHED.inc(len(rows))
        sites = self._sites.current()
        sent = Counter(sites.label(c.site) for c in commands if c.purpose == "escalation")
        for site, count in sent.items():
            metrics.ESCALATIONS_SENT.labels(site).inc(count)
        return len(rows)
