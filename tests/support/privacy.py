"""A privacy scan of one service's schema: every row of every table as text, so a test can
assert that none of a patient's name, phone, email or notes is left anywhere."""

from __future__ import annotations

import asyncpg


async def every_row_as_text(pool: asyncpg.Pool) -> str:
    """All rows of the pool's schema (its search_path), migrations bookkeeping aside."""
    tables = await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
        "AND tablename <> 'schema_migrations'"
    )
    rows: list[str] = []
    for table in tables:
        rows += [r[0] for r in await pool.fetch(f'SELECT x::text FROM "{table[0]}" x')]
    return "\n".join(rows)
