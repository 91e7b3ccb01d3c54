"""Start a service as its own process (``python -m services.<name>``) and wait for /readyz.

The one launcher of the demo, the end-to-end run and the tests that run a service as a real
process (kill it, restart it, let Prometheus scrape it). It sets the service's HTTP host
and port; everything else comes from ``env`` on top of this process's environment. No
service imports it: a service is started by its platform, this is how a harness plays one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]


class ServiceExited(RuntimeError):
    """The process ended while it was expected to come up."""


@dataclass
class ServiceProcess:
    service: str  # tracker, scheduler, notifier
    http_port: int
    env: Mapping[str, str] = field(default_factory=dict)
    log: Path | None = None  # stdout and stderr are appended here (else discarded)
    new_session: bool = False  # out of the terminal's process group: Ctrl-C stops the harness only
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def start(self) -> ServiceProcess:
        env = {
            **os.environ,
            **self.env,
            "FOLLOWUP_HTTP_HOST": "127.0.0.1",
            "FOLLOWUP_HTTP_PORT": str(self.http_port),
        }
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with self.log.open("ab") as out:
                self.process = self._spawn(env, out)
        else:
            self.process = self._spawn(env, subprocess.DEVNULL)
        return self

    def _spawn(self, env: dict[str, str], out: IO[bytes] | int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", f"services.{self.service}"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=self.new_session,
        )

    def wait_ready_blocking(self, timeout: float = 60.0) -> None:
        """Until /readyz answers 200; ServiceExited if the process ends, TimeoutError after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                where = f"; see {self.log}" if self.log is not None else ""
                raise ServiceExited(f"{self.service} exited with {self.returncode}{where}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:  # refused, not ready yet (503), or slow to answer
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.service} not ready on port {self.http_port} in {timeout:.0f} s")

    async def wait_ready(self, timeout: float = 60.0) -> None:
        await asyncio.to_thread(self.wait_ready_blocking, timeout)

    async def started(self, timeout: float = 60.0) -> ServiceProcess:
        """Start and wait until ready."""
        self.start()
        await self.wait_ready(timeout)
        return self

    def terminate(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a graceful stop), SIGKILL after ``timeout``; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """SIGKILL: no goodbye, offsets and leases left as they are."""
        assert self.process is not None, "never started"
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        return self.process.wait(timeout=10)

    async def stop(self, timeout: float = 20.0) -> int | None:
        return await asyncio.to_thread(self.terminate, timeout)
