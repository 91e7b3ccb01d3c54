"""`make demo`: for now, starts the three services against the real infrastructure, checks
that each answers /healthz and /readyz, shows where their metrics are, and stops them.

The clinic simulator (issue: the main job) replaces this with a clinic running end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

SERVICES = {"tracker": 8081, "scheduler": 8082, "notifier": 8083}


def wait_healthy(port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


def main() -> int:
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, port in SERVICES.items():
            env = {**os.environ, "FOLLOWUP_HTTP_PORT": str(port), "FOLLOWUP_LOG_FORMAT": "console"}
            processes[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=env)
        ok = True
        for name, port in SERVICES.items():
            healthy = wait_healthy(port)
            ok &= healthy
            state = "up" if healthy else "NOT UP"
            print(f"{name:<10} {state:<7} http://127.0.0.1:{port}/metrics")
        print("\nThe services run idle: the clinic simulator is not built yet.")
        return 0 if ok else 1
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
