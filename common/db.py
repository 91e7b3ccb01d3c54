"""PostgreSQL: a connection pool per service schema and a small forward-only migration runner.

Each service owns one schema; its migrations are ``NNN_name.sql`` files applied in order
inside a transaction, recorded in ``<schema>.schema_migrations``, under an advisory lock so
that replicas starting together do not race. SQL in migrations uses unqualified names: the
pool's ``search_path`` is the service schema, which lets tests run in a throwaway schema.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg

from common.config import StartupError

T = TypeVar("T")

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_FILE = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


def read_migrations(directory: Path) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{directory}: two migrations share a version")
    return found


async def first_contact(connecting: Awaitable[T], dsn: str) -> T:
    """A connection's first contact: an unreachable server, a refused login or a certificate
    that does not verify becomes one line naming the address (never the password)."""
    try:
        return await connecting
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        where = urlsplit(dsn)
        raise StartupError(
            f"PostgreSQL unreachable at {where.hostname}:{where.port or 5432}{where.path} "
            f"({type(exc).__name__}): set FOLLOWUP_DATABASE_URL "
            "(add ?sslmode=verify-full&sslrootcert=<CA file> for TLS)"
        ) from None


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A pool's reset that sends nothing: asyncpg still rolls back an open transaction."""


async def create_pool(
    dsn: str,
    schema: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    reset_sessions: bool = True,
) -> asyncpg.Pool:
    """``reset_sessions=False`` skips asyncpg's reset query on every release (advisory
    unlock, ``CLOSE ALL``, ``UNLISTEN``, ``RESET ALL``: one more round trip per statement),
    for a service whose pooled connections never change session state."""
    check_schema_name(schema)
    # sslmode and sslrootcert in the URL (require, verify-full) are asyncpg's own.
    pool = await first_contact(
        asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            server_settings={"search_path": schema, "application_name": schema},
            reset=None if reset_sessions else _keep_session,
        ),
        dsn,
    )
    assert pool is not None
    return pool


async def migrate(dsn: str, schema: str, directory: Path) -> list[int]:
    """Apply what is missing; return the versions applied now (empty when up to date)."""
    check_schema_name(schema)
    migrations = read_migrations(directory)
    applied_now: list[int] = []
    conn = await first_contact(asyncpg.connect(dsn, server_settings={"search_path": schema}), dsn)
    try:
        lock_key = int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big", signed=True)
        await conn.execute("SELECT pg_advisory_lock($1)", lock_key)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations (
                        version integer PRIMARY KEY,
                        name text NOT NULL,
                        checksum text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            rows = await conn.fetch(f'SELECT version, checksum FROM "{schema}".schema_migrations')
            done = {r["version"]: r["checksum"] for r in rows}
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"{schema}: migration {migration.version} ({migration.name}) "
                            "changed after it was applied; add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        f'INSERT INTO "{schema}".schema_migrations (version, name, checksum) '
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                applied_now.append(migration.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock_key)
    finally:
        await conn.close()
    return applied_now


async def drop_schema(dsn: str, schema: str) -> None:
    check_schema_name(schema)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
