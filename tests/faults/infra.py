"""A Kafka broker and a PostgreSQL server of the fault suite's own, on other ports and in
another directory, so restarting them touches no one else's (the shared servers of the
tests and the other runs stay up). Started by the repository's own scripts
(``deploy/local/kafka.sh``, ``postgres.sh``), which take their ports and state directory
from the environment."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import infra as shared
from tests.support.polling import free_port

SCRIPTS = shared.REPO / "deploy" / "local"
SHARED_KAFKA_LIB = shared.REPO / ".cache" / "infra" / "kafka" / "lib"


@dataclass
class OwnInfra:
    directory: Path = field(
        default_factory=lambda: Path(tempfile.gettempdir()) / f"followup-faults-{os.getpid()}"
    )
    kafka_port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    pg_port: int = field(default_factory=free_port)

    @property
    def kafka(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def database_url(self) -> str:
        return f"postgresql://followup:followup@127.0.0.1:{self.pg_port}/followup"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "FOLLOWUP_INFRA_DIR": str(self.directory),
            "FOLLOWUP_KAFKA_PORT": str(self.kafka_port),
            "FOLLOWUP_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "FOLLOWUP_PG_PORT": str(self.pg_port),
            "FOLLOWUP_KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m",
        }

    async def _script(self, name: str, action: str) -> None:
        def run() -> None:
            subprocess.run(
                ["bash", str(SCRIPTS / name), action],
                env=self._env(),
                check=True,
                stdout=subprocess.DEVNULL,
            )

        await asyncio.to_thread(run)

    async def up(self) -> None:
        lib = self.directory / "kafka" / "lib"
        if not lib.exists() and SHARED_KAFKA_LIB.is_dir():
            # The broker's jars, fetched once for everybody: no second Maven download.
            lib.parent.mkdir(parents=True, exist_ok=True)
            lib.symlink_to(SHARED_KAFKA_LIB)
        await self._script("postgres.sh", "up")
        await self._script("kafka.sh", "up")

    async def restart_kafka(self, down_seconds: float = 0.0) -> None:
        await self._script("kafka.sh", "down")
        await asyncio.sleep(down_seconds)
        await self._script("kafka.sh", "up")

    async def restart_postgres(self, down_seconds: float = 0.0) -> None:
        await self._script("postgres.sh", "down")
        await asyncio.sleep(down_seconds)
        await self._script("postgres.sh", "up")

    async def down(self) -> None:
        try:
            await self._script("kafka.sh", "down")
        finally:
            await self._script("postgres.sh", "down")
            shutil.rmtree(self.directory, ignore_errors=True)
