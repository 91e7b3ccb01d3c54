"""The audit log of reads of personal data (the breach protocol, docs/runbook.md).

Every API or page that shows a patient's data records who read it (a **credential id**:
``api_token:<fingerprint>`` for the bearer token of a service's API, ``report_link:<task
id>`` for a signed report link; never the secret itself), when, through which route, which
patient ids and which fields, in the PostgreSQL schema ``FOLLOWUP_AUDIT_SCHEMA`` (default
``audit``), shared by the services (a cross-cutting record, like the logs; no service reads
another's rows through it). The read is answered only once its record is written: a read
that cannot be recorded fails. ``seen_since`` is the question asked after a leak: what
could this credential have seen since then? (``python -m followup_admin audit``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from common.db import check_schema_name, migrate

MIGRATIONS = Path(__file__).parent / "audit_migrations"


def credential_id(kind: str, secret: str) -> str:
    """A credential's id for the log: its kind and a fingerprint (12 hex digits of
    SHA-256), so a leaked token can be named without the log holding it."""
    return f"{kind}:{hashlib.sha256(secret.encode()).hexdigest()[:12]}"


class AuditLog:
    """Writes read records with the service's own pool into the audit schema."""

    def __init__(self, pool: asyncpg.Pool, schema: str, service: str) -> None:
        check_schema_name(schema)
        self._pool = pool
        self._table = f'"{schema}".reads'
        self.service = service

    @classmethod
    async def ready(cls, pool: asyncpg.Pool, dsn: str, schema: str, service: str) -> AuditLog:
        await migrate(dsn, schema, MIGRATIONS)
        return cls(pool, schema, service)

    async def read(
        self,
        credential: str,
        route: str,
        patient_ids: Iterable[str],
        fields: Sequence[str],
        at: datetime,
    ) -> None:
        patients = sorted(set(patient_ids))
        if not patients:
            return
        await self._pool.execute(
            f"""INSERT INTO {self._table} (at, service, credential_id, route, patient_id, fields)
                SELECT $1, $2, $3, $4, p, $6 FROM unnest($5::text[]) AS p""",
            at,
            self.service,
            credential,
            route,
            patients,
            sorted(set(fields)),
        )


@dataclass(frozen=True)
class Seen:
    """What one credential could have seen of one patient."""

    patient_id: str
    fields: tuple[str, ...]
    reads: int
    first_at: datetime
    last_at: datetime
    routes: tuple[str, ...]


async def seen_since(
    conn: asyncpg.Connection | asyncpg.Pool, schema: str, credential: str, since: datetime
) -> list[Seen]:
    check_schema_name(schema)
    rows = await conn.fetch(
        f"""SELECT patient_id, count(*) AS reads, min(at) AS first_at, max(at) AS last_at,
                   array_agg(DISTINCT route ORDER BY route) AS routes,
                   (SELECT array_agg(DISTINCT f ORDER BY f) FROM "{schema}".reads r2,
                           unnest(r2.fields) AS f
                     WHERE r2.credential_id = $1 AND r2.at >= $2
                       AND r2.patient_id = r.patient_id) AS fields
              FROM "{schema}".reads r
             WHERE credential_id = $1 AND at >= $2
             GROUP BY patient_id ORDER BY patient_id""",
        credential,
        since,
    )
    return [
        Seen(
            r["patient_id"],
            tuple(r["fields"] or ()),
            int(r["reads"]),
            r["first_at"],
            r["last_at"],
            tuple(r["routes"]),
        )
        for r in rows
    ]
