"""The three services as separate processes on one shared, scaled clock.

Each run gets its own topic prefix and PostgreSQL schemas, so two runs (or a run and the
tests) never see each other's data, and everything the run created is removed at the end.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from common.db import check_schema_name
from common.kafka import delete_topics_with_prefix
from common.launcher import REPO as REPO
from common.launcher import ServiceProcess

SERVICES = ("tracker", "scheduler", "notifier")
DEMO_PORTS = {"tracker": 8081, "scheduler": 8082, "notifier": 8083, "mllp": 2575}


def free_port(preferred: int = 0) -> int:
    """``preferred`` when it is free, else any free port."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free port")


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def ensure_infra(kafka: str, database_url: str) -> None:
    """Start Kafka and PostgreSQL with the repository's script when they are not up."""
    host, port = kafka.rsplit(":", 1)
    pg = database_url.rsplit("@", 1)[1].split("/", 1)[0]
    pg_host, pg_port = pg.rsplit(":", 1)
    if reachable(host, int(port)) and reachable(pg_host, int(pg_port)):
        return
    subprocess.run(["bash", str(REPO / "deploy/local/infra.sh"), "up"], check=True)


@dataclass
class Ports:
    tracker: int
    scheduler: int
    notifier: int
    mllp: int

    @classmethod
    def pick(cls, use_demo_ports: bool) -> Ports:
        def get(name: str) -> int:
            return free_port(DEMO_PORTS[name] if use_demo_ports else 0)

        return cls(get("tracker"), get("scheduler"), get("notifier"), get("mllp"))

    def http(self, service: str) -> int:
        return int(getattr(self, service))


@dataclass
class Deployment:
    run_id: str
    kafka: str
    database_url: str
    ports: Ports
    env: dict[str, str]
    log_dir: Path
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def topic_prefix(self) -> str:
        return f"demo{self.run_id}."

    def schema(self, service: str) -> str:
        return check_schema_name(f"demo_{self.run_id}_{service}")

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports.http(service)}"

    def service_env(self, service: str) -> dict[str, str]:
        env = {
            **self.env,
            "FOLLOWUP_SERVICE": service,
            "FOLLOWUP_TOPIC_PREFIX": self.topic_prefix,
            "FOLLOWUP_KAFKA_BOOTSTRAP": self.kafka,
            "FOLLOWUP_DATABASE_URL": self.database_url,
            "FOLLOWUP_DB_SCHEMA": self.schema(service),
            "FOLLOWUP_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
        if service == "tracker":
            env["FOLLOWUP_MLLP_HOST"] = "127.0.0.1"
            env["FOLLOWUP_MLLP_PORT"] = str(self.ports.mllp)
        return env

    def start(self) -> None:
        for service in SERVICES:
            self.processes[service] = ServiceProcess(
                service,
                self.ports.http(service),
                self.service_env(service),
                log=self.log_dir / f"{service}.log",
                new_session=True,
            ).start()

    async def wait_ready(self, timeout: float = 90.0) -> dict[str, bool]:
        """Wait for /readyz (200) of every service; one that exits stops the run."""

        async def one(process: ServiceProcess) -> bool:
            try:
                await process.wait_ready(timeout)
            except TimeoutError:
                return False
            return True

        ready = await asyncio.gather(*(one(p) for p in self.processes.values()))
        return dict(zip(self.processes, ready, strict=True))

    def alive(self) -> dict[str, bool]:
        return {s: p.alive for s, p in self.processes.items()}

    async def stop(self, timeout: float = 20.0) -> None:
        await asyncio.gather(*(p.stop(timeout) for p in self.processes.values()))

    async def clean_up(self) -> None:
        """Drop this run's schemas and topics (nothing of other runs)."""
        conn = await asyncpg.connect(self.database_url)
        try:
            rows = await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1",
                f"demo\\_{self.run_id}\\_%",
            )
            for row in rows:
                name = check_schema_name(row["nspname"])
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()
        await delete_topics_with_prefix(self.kafka, self.topic_prefix)


def shared_clock_env(path: Path) -> dict[str, str]:
    """The services read virtual time from the run's clock file (``common.clock.SharedClock``)."""
    return {"FOLLOWUP_CLOCK": "shared", "FOLLOWUP_CLOCK_FILE": str(path)}
