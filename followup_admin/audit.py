"""The breach protocol's question: what could this credential have seen since ...?

Reads the audit log of reads of personal data (``common/audit.py``, schema
``FOLLOWUP_AUDIT_SCHEMA`` in ``FOLLOWUP_DATABASE_URL``): per patient id, the fields shown,
how many reads, the first and the last, and through which routes. Ids only: the answer
holds no personal data, so it can be handed to the data protection officer as it is.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg

from common.audit import Seen, credential_id, seen_since
from common.db import first_contact


def credential_of(kind: str, secret: str) -> str:
    """The id the log knows a credential by (its fingerprint, never the secret)."""
    return credential_id(kind, secret)


def seen(dsn: str, schema: str, credential: str, since: datetime) -> list[Seen]:
    async def ask() -> list[Seen]:
        conn = await first_contact(asyncpg.connect(dsn), dsn)
        assert conn is not None
        try:
            exists = await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".reads')
            if exists is None:
                return []  # no service has recorded a read yet
            return await seen_since(conn, schema, credential, since)
        finally:
            await conn.close()

    return asyncio.run(ask())


def as_json(found: list[Seen], credential: str, since: datetime) -> dict[str, Any]:
    return {
        "credential_id": credential,
        "since": since.isoformat(),
        "patients": len(found),
        "reads": [
            {
                "patient_id": s.patient_id,
                "fields": list(s.fields),
                "reads": s.reads,
                "first_at": s.first_at.isoformat(),
                "last_at": s.last_at.isoformat(),
                "routes": list(s.routes),
            }
            for s in found
        ],
    }
