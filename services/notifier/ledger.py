"""The delivery ledger: claim an idempotency key before sending, so each key sends once.

A command is claimed by inserting its row (ON CONFLICT DO NOTHING): a repeated command
finds the row and is dropped. Workers take due rows with FOR UPDATE SKIP LOCKED, mark them
'sending' in their own committed transaction just before the provider call, and record
the result after it. A row still 'sending' after the lease means the process died around
the provider call; the dispatcher decides per channel what that means (see dispatcher.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from schemas.events import NotificationCommand


@dataclass(frozen=True)
class Delivery:
    """A row taken for sending (now 'sending' in the ledger)."""

    command: NotificationCommand
    tries: int
    sinks_done: tuple[str, ...]
    recovered: bool  # taken over from a process that died while 'sending'


@dataclass(frozen=True)
class FinishedDelivery:
    command: NotificationCommand
    outcome: str
    detail: str | None
    respond_by: datetime | None
    finished_at: datetime


@dataclass(frozen=True)
class Finish:
    """A delivery's result, to be recorded (``Ledger.finish_all``)."""

    command: NotificationCommand
    at: datetime
    outcome: str
    detail: str | None = None
    provider: str | None = None
    provider_id: str | None = None
    respond_by: datetime | None = None


class Ledger:
    def __init__(self, pool: asyncpg.Pool, *, sending_lease: timedelta) -> None:
        self._pool = pool
        self._lease = sending_lease

    async def claim(self, command: NotificationCommand, now: datetime) -> bool:
        """True when this command is new; False for a repeat (already claimed)."""
        key = await self._pool.fetchval(
            """INSERT INTO deliveries (idempotency_key, purpose, case_id, attempt_number,
                   patient_id, channel, command, state, due_at, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $8)
               ON CONFLICT DO NOTHING RETURNING idempotency_key""",
            command.idempotency_key,
            command.purpose,
            command.case_id,
            command.attempt_number,
            command.patient_id,
            command.channel,
            command.model_dump_json(),
            now,
        )
        return key is not None

    async def take_due(
        self,
        now: datetime,
        limit: int = 20,
        *,
        channel_room: Mapping[str, int] | None = None,
        one_per_patient: bool = False,
        busy_keys: Sequence[str] = (),
        busy_patients: Sequence[str] = (),
    ) -> list[Delivery]:
        """Due rows (and rows abandoned while 'sending'), marked 'sending' and committed.

        With ``one_per_patient``, at most one row per patient, the earliest, and none of a
        patient who has a row 'sending' within the lease: the dispatcher sends a patient's
        deliveries one after the other, in due order, so the runaway guard sees each one
        finished before the next (whichever replica took it). ``channel_room`` caps how
        many rows each channel named in it may take now (a channel not named is not
        capped). Rows not taken stay pending for the next look. ``busy_keys`` and
        ``busy_patients`` are what the caller is sending right now: never taken, whatever
        the lease (which a scaled clock shortens to milliseconds).
        """
        room = dict(channel_room or {})
        full = [channel for channel, n in room.items() if n <= 0]
        # One statement (no BEGIN/COMMIT round trips): lock the due rows, keep each
        # patient's earliest and each channel's room, mark those 'sending'. Rows locked
        # but not kept are released when the statement ends and stay pending.
        rows = await self._pool.fetch(
            """WITH candidates AS (
                   SELECT idempotency_key, purpose, patient_id, channel, state, due_at
                   FROM deliveries d
                   WHERE ((state = 'pending' AND due_at <= $1)
                          OR (state = 'sending' AND sending_since <= $2))
                     AND channel <> ALL($4::text[])
                     AND d.idempotency_key <> ALL($6::text[])
                     AND NOT ($5 AND d.patient_id = ANY($7::text[]))
                     AND NOT ($5 AND EXISTS (
                         SELECT 1 FROM deliveries s WHERE s.patient_id = d.patient_id
                            AND s.state = 'sending' AND s.sending_since > $2))
                   ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED),
               firsts AS (
                   SELECT *, row_number() OVER (PARTITION BY channel
                                                ORDER BY due_at, idempotency_key) AS nth
                   FROM (SELECT *, row_number() OVER (PARTITION BY patient_id
                                          ORDER BY due_at, idempotency_key) AS of_patient
                         FROM candidates) c
                   WHERE NOT $5 OR of_patient = 1),
               taken AS (
                   SELECT f.* FROM firsts f
                   LEFT JOIN unnest($8::text[], $9::int[]) AS room(channel, n)
                     ON room.channel = f.channel
                   WHERE room.n IS NULL OR f.nth <= room.n)
               UPDATE deliveries d SET state = 'sending', sending_since = $1,
                   tries = d.tries + 1
               FROM taken t
               WHERE d.idempotency_key = t.idempotency_key AND d.purpose = t.purpose
               RETURNING d.command, d.tries, d.sinks_done, t.state AS was, t.due_at,
                   t.idempotency_key""",
            now,
            now - self._lease,
            limit,
            full,
            one_per_patient,
            list(busy_keys),
            list(busy_patients),
            list(room),
            list(room.values()),
        )
        rows = sorted(rows, key=lambda row: (row["due_at"], row["idempotency_key"]))
        return [
            Delivery(
                command=NotificationCommand.model_validate_json(row["command"]),
                tries=row["tries"],
                sinks_done=tuple(row["sinks_done"]),
                recovered=row["was"] == "sending",
            )
            for row in rows
        ]

    async def hold(self, command: NotificationCommand, until: datetime) -> None:
        await self._pool.execute(
            """UPDATE deliveries SET state = 'pending', due_at = $3, sending_since = NULL
               WHERE idempotency_key = $1 AND purpose = $2""",
            command.idempotency_key,
            command.purpose,
            until,
        )

    async def sink_done(self, command: NotificationCommand, sink: str) -> None:
        await self._pool.execute(
            """UPDATE deliveries SET sinks_done = array_append(sinks_done, $3)
               WHERE idempotency_key = $1 AND purpose = $2 AND NOT ($3 = ANY(sinks_done))""",
            command.idempotency_key,
            command.purpose,
            sink,
        )

    async def finish(
        self,
        command: NotificationCommand,
        now: datetime,
        outcome: str,
        *,
        detail: str | None = None,
        provider: str | None = None,
        provider_id: str | None = None,
        respond_by: datetime | None = None,
    ) -> None:
        await self.finish_all(
            [Finish(command, now, outcome, detail, provider, provider_id, respond_by)]
        )

    async def finish_all(self, finishes: Sequence[Finish]) -> None:
        """``finish`` for many, in one statement (the dispatcher records a round of sends
        together: one round trip instead of one per delivery)."""
        if not finishes:
            return
        await self._pool.execute(
            """UPDATE deliveries d SET state = 'done', outcome = t.outcome, detail = t.detail,
                   provider = COALESCE(t.provider, d.provider),
                   provider_id = COALESCE(t.provider_id, d.provider_id),
                   respond_by = t.respond_by, finished_at = t.finished_at, sending_since = NULL
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::timestamptz[], $8::timestamptz[])
                    AS t(idempotency_key, purpose, outcome, detail, provider, provider_id,
                         respond_by, finished_at)
               WHERE d.idempotency_key = t.idempotency_key AND d.purpose = t.purpose""",
            [f.command.idempotency_key for f in finishes],
            [f.command.purpose for f in finishes],
            [f.outcome for f in finishes],
            [f.detail for f in finishes],
            [f.provider for f in finishes],
            [f.provider_id for f in finishes],
            [f.respond_by for f in finishes],
            [f.at for f in finishes],
        )

    async def unpublished(self, limit: int = 100) -> list[FinishedDelivery]:
        rows = await self._pool.fetch(
            """SELECT command, outcome, detail, respond_by, finished_at FROM deliveries
               WHERE outcome IS NOT NULL AND NOT outcome_published
               ORDER BY finished_at LIMIT $1""",
            limit,
        )
        return [
            FinishedDelivery(
                command=NotificationCommand.model_validate_json(r["command"]),
                outcome=r["outcome"],
                detail=r["detail"],
                respond_by=r["respond_by"],
                finished_at=r["finished_at"],
            )
            for r in rows
        ]

    async def mark_published(self, command: NotificationCommand) -> None:
        await self._pool.execute(
            """UPDATE deliveries SET outcome_published = true
               WHERE idempotency_key = $1 AND purpose = $2""",
            command.idempotency_key,
            command.purpose,
        )

    async def mark_all_published(self, commands: Sequence[NotificationCommand]) -> None:
        """``mark_published`` for many, in one statement."""
        await self._pool.execute(
            """UPDATE deliveries d SET outcome_published = true
               FROM unnest($1::text[], $2::text[]) AS t(idempotency_key, purpose)
               WHERE d.idempotency_key = t.idempotency_key AND d.purpose = t.purpose""",
            [c.idempotency_key for c in commands],
            [c.purpose for c in commands],
        )

    async def call_task(self, channel: str, task_id: str) -> NotificationCommand | None:
        """The command that created call task ``task_id`` (its idempotency key)."""
        raw = await self._pool.fetchval(
            """SELECT command FROM deliveries WHERE idempotency_key = $1
                   AND channel = $2 AND purpose <> 'withdrawal'""",
            task_id,
            channel,
        )
        return NotificationCommand.model_validate_json(raw) if raw else None

    async def follow_up(self, key: str) -> NotificationCommand | None:
        """The patient message ``key`` (a follow-up, not an escalation or a withdrawal)."""
        raw = await self._pool.fetchval(
            """SELECT command FROM deliveries WHERE idempotency_key = $1
                   AND purpose = 'follow_up'""",
            key,
        )
        return NotificationCommand.model_validate_json(raw) if raw else None

    async def record_link_report(
        self, task_id: str, outcome: str, now: datetime
    ) -> tuple[str, bool]:
        """Records a result reported through a signed link, once per task: the result
        recorded for the task (this one, or a first click's) and whether this was first."""
        row = await self._pool.fetchrow(
            """INSERT INTO link_reports (task_id, outcome, recorded_at) VALUES ($1, $2, $3)
               ON CONFLICT (task_id) DO UPDATE SET task_id = EXCLUDED.task_id
               RETURNING outcome, (xmax = 0) AS first""",
            task_id,
            outcome,
            now,
        )
        assert row is not None
        return str(row["outcome"]), bool(row["first"])

    async def link_report(self, task_id: str) -> str | None:
        """The result already recorded for a task through its links, if any."""
        found = await self._pool.fetchval(
            "SELECT outcome FROM link_reports WHERE task_id = $1", task_id
        )
        return str(found) if found is not None else None

    async def withdrawn_task(
        self, withdrawal: NotificationCommand
    ) -> tuple[NotificationCommand, str] | None:
        """The call task a withdrawal withdraws (same case, attempt and channel), with the
        state of its delivery.

        The withdrawal carries its own idempotency key (``<case>:<n>:withdrawal`` from the
        scheduler), so it is never looked up by its key; case and attempt are what it
        shares with the task, whatever shape either key has.
        """
        row = await self._pool.fetchrow(
            """SELECT command, state FROM deliveries WHERE case_id = $1 AND attempt_number = $2
                   AND channel = $3 AND purpose <> 'withdrawal'
               ORDER BY created_at LIMIT 1""",
            withdrawal.case_id,
            withdrawal.attempt_number,
            withdrawal.channel,
        )
        if row is None:
            return None
        return NotificationCommand.model_validate_json(row["command"]), row["state"]

    async def sent_since(
        self, patient_id: str, since: datetime, exclude_key: str, channels: Sequence[str]
    ) -> int:
        """Messages on ``channels`` that went (or may have gone) to this patient since
        ``since``. For the runaway guard: counts what reached a provider, whatever case or
        cause."""
        counts = await self.sent_since_each([(exclude_key, patient_id, since)], channels)
        return counts[exclude_key]

    async def sent_since_each(
        self, asked: Sequence[tuple[str, str, datetime]], channels: Sequence[str]
    ) -> dict[str, int]:
        """``sent_since`` for many deliveries (key, patient, since) in one round trip, by key."""
        if not asked:
            return {}
        rows = await self._pool.fetch(
            """SELECT t.idempotency_key, (SELECT count(*) FROM deliveries d
                   WHERE d.patient_id = t.patient_id
                     AND d.channel = ANY($4::text[]) AND d.purpose <> 'withdrawal'
                     AND d.idempotency_key <> t.idempotency_key
                     AND (d.provider_id IS NOT NULL OR d.state = 'sending')
                     AND COALESCE(d.finished_at, d.sending_since) >= t.since) AS sent
               FROM unnest($1::text[], $2::text[], $3::timestamptz[])
                    AS t(idempotency_key, patient_id, since)""",
            [key for key, _, _ in asked],
            [patient for _, patient, _ in asked],
            [since for _, _, since in asked],
            list(channels),
        )
        return {row["idempotency_key"]: int(row["sent"]) for row in rows}

    async def cancel_if_unsent(self, command: NotificationCommand, now: datetime) -> bool:
        """Withdraw a command that has not gone out yet; True when it was still pending."""
        key = await self._pool.fetchval(
            """UPDATE deliveries SET state = 'done', outcome = 'withdrawn',
                   detail = 'never_sent', finished_at = $3
               WHERE idempotency_key = $1 AND purpose = $2 AND state = 'pending'
               RETURNING idempotency_key""",
            command.idempotency_key,
            command.purpose,
            now,
        )
        return key is not None

    async def sent_command(
        self, channel: str, *, provider_id: str | None, key: str | None = None
    ) -> NotificationCommand | None:
        """The command a provider's receipt or a bounce is about: by the provider's id
        (an SMS sid, an email's Message-ID), else by our key (carried in a callback URL)."""
        raw = await self._pool.fetchval(
            """SELECT command FROM deliveries WHERE channel = $3
                   AND (provider_id = $1 OR idempotency_key = $2)
               ORDER BY (provider_id = $1) DESC NULLS LAST LIMIT 1""",
            provider_id,
            key,
            channel,
        )
        return NotificationCommand.model_validate_json(raw) if raw else None

    async def open_feedback(
        self, patient_id: str, channel: str, since: datetime
    ) -> NotificationCommand | None:
        """The latest feedback question sent to the patient on ``channel`` since ``since``."""
        raw = await self._pool.fetchval(
            """SELECT command FROM deliveries WHERE patient_id = $1 AND purpose = 'feedback'
                   AND channel = $2 AND outcome = 'sent' AND finished_at >= $3
               ORDER BY finished_at DESC LIMIT 1""",
            patient_id,
            channel,
            since,
        )
        return NotificationCommand.model_validate_json(raw) if raw else None

    # --- replay protection of signed callbacks ---------------------------------------

    async def first_callback(self, key: str, now: datetime, retention: timedelta) -> bool:
        """Remember a signed callback's key; False when it was seen within ``retention``
        (a replay or the provider's retry of one already acted on)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM seen_callbacks WHERE seen_at < $1", now - retention)
            fresh = await conn.fetchval(
                """INSERT INTO seen_callbacks (key, seen_at) VALUES ($1, $2)
                   ON CONFLICT DO NOTHING RETURNING key""",
                key,
                now,
            )
        return fresh is not None

    async def forget_callback(self, key: str) -> None:
        """Acting on the callback failed: let the provider's retry be acted on."""
        await self._pool.execute("DELETE FROM seen_callbacks WHERE key = $1", key)

    # --- the connectors' read-back of the administrators' tools -----------------------

    async def poll_position(self, sink: str, source: str) -> str | None:
        """Where ``sink``'s read-back of the tool at ``source`` stopped; None: never read."""
        position: str | None = await self._pool.fetchval(
            "SELECT position FROM tool_poll_positions WHERE sink = $1 AND source = $2",
            sink,
            source,
        )
        return position

    async def save_poll_position(
        self, sink: str, source: str, position: str, now: datetime
    ) -> None:
        await self._pool.execute(
            """INSERT INTO tool_poll_positions (sink, source, position, updated_at)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (sink, source)
               DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at""",
            sink,
            source,
            position,
            now,
        )

    async def tool_report_published(self, report_id: str) -> bool:
        found = await self._pool.fetchval(
            "SELECT 1 FROM tool_reports WHERE report_id = $1", report_id
        )
        return found is not None

    async def note_tool_report(self, report_id: str, now: datetime, retention: timedelta) -> None:
        """Remember a published tool result (for ``retention``: longer than any tool keeps
        a completed task in what a poll reads)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM tool_reports WHERE published_at < $1", now - retention)
            await conn.execute(
                "INSERT INTO tool_reports (report_id, published_at) VALUES ($1, $2) "
                "ON CONFLICT DO NOTHING",
                report_id,
                now,
            )
