"""A real CalDAV server for tests: Radicale (from PyPI) on a free port with a throwaway
storage folder, no authentication (any user name logs in; each user owns ``/<user>/``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.support.polling import free_port


class RadicaleServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._folder = Path(tempfile.mkdtemp(prefix="radicale-"))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> RadicaleServer:
        self._process = subprocess.Popen(
            [
                sys.executable, "-m", "radicale",
                "--server-hosts", f"127.0.0.1:{self.port}",
                "--auth-type", "none",
                "--rights-type", "owner_only",
                "--storage-filesystem-folder", str(self._folder / "collections"),
                "--logging-level", "warning",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"radicale exited ({self._process.returncode})")
            try:
                with urllib.request.urlopen(f"{self.base_url}/.web/", timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("radicale did not answer in time")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        shutil.rmtree(self._folder, ignore_errors=True)
