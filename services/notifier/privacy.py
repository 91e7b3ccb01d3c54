"""Retention and erasure of the notifier's personal data (issue 19).

What is personal here: the contacts row (names, phone, email), opt-outs by address, and the
delivery ledger's commands (the doctor's notes and the stage's name travel in them). What
stays: ids and codes (patient, case, attempt, idempotency key, channel, outcome), so the
audit trail and the exactly-once ledger still hold after an erasure or a sweep.

- An erasure request (``PatientStatusEvent`` with status ``erased``) removes the patient's
  contact, the opt-outs of addresses nobody else holds, and the notes in every command of
  the patient's deliveries; the status ``erased`` makes the patient not contactable; an
  ``erasures`` row records who asked and when (ids only).
- A contact older than the erasure (a replay of followup.contacts before compaction) is not
  stored again. A newer one is the hospital sending the patient again: contactable anew.
- A tombstone on followup.contacts (the compacted topic's own erasure) removes the contact
  (and the messenger sessions of its addresses no other contact holds).
  It keeps the opt-outs of the contact's addresses (they protect whoever holds the address)
  but writes the patient's id on them (``left_by``): the two topics are read by two
  consumers in no order, and an erasure read after the tombstone finds no contact, so it
  deletes the opt-outs by that id. Either order, each message twice, leaves the same.
- The retention sweep strips notes from commands finished longer ago than their period,
  deletes contacts with no activity for their period, and opt-outs of addresses no contact
  holds any more, in batches. Rebooking (issue 20): a link's row goes its period after the
  link expired (until then a late tap gets "expired", not "unknown"), a request its period
  after it was made, once no link of its case is valid any more (else the case could be
  asked for twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from common.clock import Clock
from common.logs import get_logger
from common.metrics import ERASURES, RETENTION_PURGED
from schemas.events import ContactEvent, PatientStatusEvent
from services.notifier.directory import Directory

log = get_logger(__name__)

# Fields of a stored NotificationCommand that are personal or clinical free text; the
# command stays readable (they are optional) and keeps its ids.
COMMAND_FREE_TEXT = ("doctor_notes", "stage_name")
_STRIP = "command - 'doctor_notes' - 'stage_name'"
_HAS_TEXT = "command ?| array['doctor_notes', 'stage_name']"


@dataclass(frozen=True)
class RetentionPeriods:
    message_bodies: timedelta  # after the delivery finished
    contacts: timedelta  # after the last change and the last delivery
    opt_outs: timedelta  # of addresses no contact holds any more
    rebooking: timedelta = timedelta(days=30)  # links after expiry, requests after asked


class Privacy:
    def __init__(self, pool: asyncpg.Pool, directory: Directory, clock: Clock, service: str):
        self._pool = pool
        self._directory = directory
        self._clock = clock
        self._service = service

    # --- consumed events --------------------------------------------------------------

    async def record_contact(self, event: ContactEvent) -> None:
        if await self._erased_since(event.patient_id, event.occurred_at):
            return  # a replay of what was erased: not stored again
        await self._directory.record_contact(event)
        # An erasure that landed between the check and the write: undo the write.
        if await self._erased_since(event.patient_id, event.occurred_at):
            await self._pool.execute("DELETE FROM contacts WHERE patient_id = $1", event.patient_id)
            return
        # Newer than the erasure: the hospital sent the patient again.
        await self._pool.execute(
            """UPDATE patient_status SET status = 'active', effective_at = $2
               WHERE patient_id = $1 AND status = 'erased' AND effective_at < $2""",
            event.patient_id,
            event.occurred_at,
        )

    async def record_patient_status(self, event: PatientStatusEvent) -> None:
        if event.status == "erased":
            await self.erase(event)
        else:
            await self._directory.record_patient_status(event)

    async def forget_contact(self, patient_id: str) -> None:
        """A tombstone on followup.contacts: the contact is gone from the source."""
        async with self._pool.acquire() as conn, conn.transaction():
            contact = await conn.fetchrow(
                f"DELETE FROM contacts WHERE patient_id = $1 RETURNING {_ADDRESS_COLUMNS}",
                patient_id,
            )
            if contact is not None:
                # Sessions only matter for sending to a contact holding the address.
                await _forget_chat_sessions(conn, _addresses(contact))
                # The erasure may be read after this (another topic): the opt-outs stay, but
                # remember whose they were, so that it still finds them (privacy.erase).
                await conn.execute(
                    """UPDATE opt_outs SET left_by = array_append(left_by, $1)
                       WHERE address = ANY($2::text[]) AND NOT left_by @> ARRAY[$1::text]""",
                    patient_id,
                    _addresses(contact),
                )
        if contact is not None:
            ERASURES.labels(self._service, "tombstone").inc()
        log.info("contact_tombstone", patient_id=patient_id, removed=contact is not None)

    async def erase(self, event: PatientStatusEvent) -> None:
        """Remove the patient's personal fields; keep ids; record the erasure. Idempotent."""
        now = self._clock.now()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO patient_status (patient_id, status, effective_at, event_id)
                   VALUES ($1, 'erased', $2, $3)
                   ON CONFLICT (patient_id) DO UPDATE SET status = 'erased',
                       effective_at = EXCLUDED.effective_at, event_id = EXCLUDED.event_id
                   WHERE patient_status.effective_at <= EXCLUDED.effective_at""",
                event.patient_id,
                event.effective_at,
                event.event_id,
            )
            contact = await conn.fetchrow(
                f"DELETE FROM contacts WHERE patient_id = $1 RETURNING {_ADDRESS_COLUMNS}",
                event.patient_id,
            )
            addresses = _addresses(contact) if contact is not None else []
            # When the patient last wrote on a messenger is about them too.
            await _forget_chat_sessions(conn, addresses)
            # The contact's addresses, or those a tombstone read first left behind. An
            # address another patient's contact still holds keeps its opt-out: it protects
            # that patient too.
            await conn.execute(
                f"""DELETE FROM opt_outs o
                   WHERE (o.address = ANY($1::text[]) OR o.left_by @> ARRAY[$2::text])
                   AND NOT EXISTS (SELECT 1 FROM contacts c WHERE {_HOLDS.format(a="o")})""",
                addresses,
                event.patient_id,
            )
            await conn.execute(
                f"UPDATE deliveries SET command = {_STRIP} WHERE patient_id = $1 AND {_HAS_TEXT}",
                event.patient_id,
            )
            first = await conn.fetchval(
                """INSERT INTO erasures (event_id, patient_id, requested_by, requested_at,
                       erased_at) VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (event_id) DO NOTHING RETURNING 1""",
                event.event_id,
                event.patient_id,
                event.requested_by,
                event.effective_at,
                now,
            )
        if first:
            ERASURES.labels(self._service, "request").inc()
        log.info("patient_erased", patient_id=event.patient_id, event_id=event.event_id)

    async def _erased_since(self, patient_id: str, at: datetime) -> bool:
        return bool(
            await self._pool.fetchval(
                """SELECT 1 FROM patient_status WHERE patient_id = $1 AND status = 'erased'
                   AND effective_at >= $2""",
                patient_id,
                at,
            )
        )

    # --- retention --------------------------------------------------------------------

    async def prune(self, periods: RetentionPeriods, limit: int = 1_000) -> int:
        """One batch of each table past its period; the number of rows purged."""
        now = self._clock.now()
        async with self._pool.acquire() as conn:
            bodies = await conn.fetchval(
                f"""WITH old AS (SELECT idempotency_key, purpose FROM deliveries
                                 WHERE finished_at < $1 AND {_HAS_TEXT} LIMIT $2)
                    , done AS (UPDATE deliveries d SET command = {_STRIP} FROM old
                               WHERE d.idempotency_key = old.idempotency_key
                                 AND d.purpose = old.purpose RETURNING 1)
                    SELECT count(*) FROM done""",
                now - periods.message_bodies,
                limit,
            )
            contacts = await conn.fetchval(
                """WITH old AS (SELECT c.patient_id FROM contacts c
                                WHERE c.occurred_at < $1 AND NOT EXISTS (
                                    SELECT 1 FROM deliveries d WHERE d.patient_id = c.patient_id
                                    AND (d.finished_at IS NULL OR d.created_at >= $1))
                                LIMIT $2)
                   , gone AS (DELETE FROM contacts c USING old
                              WHERE c.patient_id = old.patient_id RETURNING 1)
                   SELECT count(*) FROM gone""",
                now - periods.contacts,
                limit,
            )
            opt_outs = await conn.fetchval(
                """WITH old AS (SELECT o.address, o.channel FROM opt_outs o
                                WHERE o.changed_at < $1 AND o.channel IN ('sms', 'email')
                                AND NOT EXISTS (SELECT 1 FROM contacts c
                                    WHERE c.phone_e164 = o.address OR c.email = o.address)
                                LIMIT $2)
                   , gone AS (DELETE FROM opt_outs o USING old
                              WHERE o.address = old.address AND o.channel = old.channel
                              RETURNING 1)
                   SELECT count(*) FROM gone""",
                now - periods.opt_outs,
                limit,
            )
            links, requests = await _prune_rebooking(conn, now - periods.rebooking, now, limit)
        for table, n in (
            ("deliveries.command", bodies),
            ("contacts", contacts),
            ("opt_outs", opt_outs),
            ("rebook_links", links),
            ("rebook_requests", requests),
        ):
            if n:
                RETENTION_PURGED.labels(self._service, table).inc(n)
        return int(bodies) + int(contacts) + int(opt_outs) + int(links) + int(requests)


async def _prune_rebooking(
    conn: asyncpg.Connection, before: datetime, now: datetime, limit: int
) -> tuple[int, int]:
    """One batch of rebooking links expired before ``before`` and of requests made before it
    whose case has no valid link left; how many of each."""
    links = await conn.fetchval(
        """WITH old AS (SELECT link_id FROM rebook_links WHERE expires_at < $1 LIMIT $2)
           , gone AS (DELETE FROM rebook_links l USING old
                      WHERE l.link_id = old.link_id RETURNING 1)
           SELECT count(*) FROM gone""",
        before,
        limit,
    )
    # A link's key is <case>:<attempt>; LIKE's wildcards in a case id only keep more.
    requests = await conn.fetchval(
        """WITH old AS (SELECT r.case_id FROM rebook_requests r
                        WHERE r.requested_at < $1 AND NOT EXISTS (
                            SELECT 1 FROM rebook_links l WHERE l.expires_at >= $3
                            AND l.idempotency_key LIKE r.case_id || ':%')
                        LIMIT $2)
           , gone AS (DELETE FROM rebook_requests r USING old
                      WHERE r.case_id = old.case_id RETURNING 1)
           SELECT count(*) FROM gone""",
        before,
        limit,
        now,
    )
    return int(links or 0), int(requests or 0)


# Every address of a contact (SMS and WhatsApp share the phone), and "a contact holds
# address {a}.address" for a NOT EXISTS over contacts c.
_ADDRESS_COLUMNS = "phone_e164, email, telegram_chat_id, viber_user_id"
_HOLDS = (
    "c.phone_e164 = {a}.address OR c.email = {a}.address"
    " OR c.telegram_chat_id = {a}.address OR c.viber_user_id = {a}.address"
)


def _addresses(contact: asyncpg.Record) -> list[str]:
    return [a for a in (contact[c] for c in _ADDRESS_COLUMNS.split(", ")) if a]


async def _forget_chat_sessions(conn: asyncpg.Connection, addresses: list[str]) -> None:
    """The messenger sessions of addresses no contact holds any more."""
    await conn.execute(
        f"""DELETE FROM chat_sessions s WHERE s.address = ANY($1::text[])
           AND NOT EXISTS (SELECT 1 FROM contacts c WHERE {_HOLDS.format(a="s")})""",
        addresses,
    )
