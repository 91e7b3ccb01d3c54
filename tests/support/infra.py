"""Where the test infrastructure is and how to make sure it is up."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAFKA_BOOTSTRAP = os.environ.get(
    "FOLLOWUP_KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('FOLLOWUP_KAFKA_PORT', '19092')}"
)
_PG_PORT = os.environ.get("FOLLOWUP_PG_PORT", "15432")
DATABASE_URL = os.environ.get(
    "FOLLOWUP_DATABASE_URL", f"postgresql://followup:followup@127.0.0.1:{_PG_PORT}/followup"
)


def accepts(host_port: str) -> bool:
    host, port = host_port.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def ensure_up() -> None:
    """Start Kafka and PostgreSQL with the repository's own script when they are not up."""
    pg = DATABASE_URL.rsplit("@", 1)[1].split("/", 1)[0]
    if accepts(KAFKA_BOOTSTRAP) and accepts(pg):
        return
    subprocess.run(["bash", str(REPO / "deploy/local/infra.sh"), "up"], check=True)
