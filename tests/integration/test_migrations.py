from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from common.db import MigrationError, create_pool, migrate

pytestmark = pytest.mark.integration


def write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql, encoding="utf-8")


async def test_migrations_apply_once_and_are_idempotent(
    database_url: str, pg_schema: str, tmp_path: Path
) -> None:
    write(tmp_path, "001_cases.sql", "CREATE TABLE cases (id text PRIMARY KEY);")
    write(tmp_path, "002_index.sql", "ALTER TABLE cases ADD COLUMN state text;")
    assert await migrate(database_url, pg_schema, tmp_path) == [1, 2]
    assert await migrate(database_url, pg_schema, tmp_path) == []

    pool = await create_pool(database_url, pg_schema)
    try:
        # The pool's search_path is the service's schema: unqualified names land there.
        await pool.execute("INSERT INTO cases (id, state) VALUES ('c1', 'open')")
        assert await pool.fetchval(f'SELECT state FROM "{pg_schema}".cases') == "open"
    finally:
        await pool.close()

    write(tmp_path, "003_more.sql", "ALTER TABLE cases ADD COLUMN reason text;")
    assert await migrate(database_url, pg_schema, tmp_path) == [3]


async def test_an_edited_migration_is_refused(
    database_url: str, pg_schema: str, tmp_path: Path
) -> None:
    write(tmp_path, "001_cases.sql", "CREATE TABLE cases (id text PRIMARY KEY);")
    await migrate(database_url, pg_schema, tmp_path)
    write(tmp_path, "001_cases.sql", "CREATE TABLE cases (id integer PRIMARY KEY);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(database_url, pg_schema, tmp_path)


async def test_a_failing_migration_leaves_nothing_half_done(
    database_url: str, pg_schema: str, tmp_path: Path
) -> None:
    write(tmp_path, "001_ok.sql", "CREATE TABLE a (id int);")
    write(tmp_path, "002_bad.sql", "CREATE TABLE b (id int); SELECT * FROM missing;")
    with pytest.raises(asyncpg.UndefinedTableError):
        await migrate(database_url, pg_schema, tmp_path)
    conn = await asyncpg.connect(database_url)
    try:
        tables = {
            r["tablename"]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1", pg_schema
            )
        }
    finally:
        await conn.close()
    assert tables == {"a", "schema_migrations"}
