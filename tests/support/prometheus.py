"""A real Prometheus (Debian's binary, fetched by deploy/ops-tools.sh) for tests: scrapes the
given targets every second, loads the alert rules, answers PromQL over its HTTP API.

    with PrometheusServer({"followup-tracker": ["127.0.0.1:8081"]}, tmp_path) as prom:
        prom.wait_for_targets()
        prom.query("up")
"""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.support import ops
from tests.support.polling import free_port


def service_jobs(ports: Mapping[str, int]) -> dict[str, list[str]]:
    """One scrape job per service, named as the dashboards and alerts select them."""
    return {f"followup-{service}": [f"127.0.0.1:{port}"] for service, port in ports.items()}


def every_query() -> list[tuple[str, str]]:
    """Every alert expression and dashboard panel query, with where it comes from."""
    return [(f"alert {a.name}", a.expr) for a in ops.alerts()] + [
        (f"panel {p.dashboard} / {p.panel}", ops.concrete(p.expr)) for p in ops.panel_queries()
    ]


class PromQLError(Exception):
    """Prometheus refused a query (errorType and error as it said them)."""


class PrometheusServer:
    def __init__(self, jobs: dict[str, list[str]], workdir: Path) -> None:
        self.jobs = jobs
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in ops.RULE_FILES],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in self.jobs.items()
            ],
        }
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self._log = (self.workdir / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                ops.ops_tools()["PROMETHEUS"],
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait(lambda: self._get("/-/ready", raw=True) is not None, "Prometheus to be ready")
        self.started = time.time()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-4000:]

    def _wait(self, done: Any, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"Prometheus exited:\n{self.log()}")
            if done():
                return
            time.sleep(0.25)
        raise TimeoutError(f"waited {timeout}s for {what}\n{self.log()}")

    def _get(self, path: str, params: dict[str, str] | None = None, raw: bool = False) -> Any:
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            if raw:
                return None  # /-/ready answers 503 in plain text while Prometheus starts
            payload = json.loads(error.read() or b"{}")
            raise PromQLError(f"{payload.get('errorType')}: {payload.get('error')}") from None
        except OSError:
            return None
        return body if raw else json.loads(body)["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query", {"query": expr})
        result: list[dict[str, Any]] = data["result"]
        return result

    def returned_data(self, expr: str, since: float, step: float = 1.0) -> bool:
        """Whether ``expr`` had a value (not NaN) at any moment from ``since`` until now, as a
        Grafana graph over that time range would draw it."""
        data = self._get(
            "/api/v1/query_range",
            {"query": expr, "start": str(since), "end": str(time.time()), "step": str(step)},
        )
        return any(
            not math.isnan(float(value))
            for series in data["result"]
            for _, value in series["values"]
        )

    def refused(self) -> list[str]:
        """Every alert expression and panel query Prometheus refuses, with its error."""
        refused = []
        for where, expr in every_query():
            try:
                self.query(expr)
            except PromQLError as error:
                refused.append(f"{where}: {error}")
        return refused

    def series(self, selector: str, lookback_seconds: int = 300) -> list[dict[str, str]]:
        start = str(time.time() - lookback_seconds)
        found: list[dict[str, str]] = self._get(
            "/api/v1/series", {"match[]": selector, "start": start}
        )
        return found

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self._get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets")["activeTargets"]
        return active

    def wait_for_targets(self, scrapes: int = 3, timeout: float = 60.0) -> None:
        """Every target up, then a few more scrapes so rate() has samples to work with."""
        expected = sum(len(t) for t in self.jobs.values())

        def all_up() -> bool:
            targets = self.targets() or []
            return len(targets) == expected and all(t["health"] == "up" for t in targets)

        self._wait(all_up, "every target to be up", timeout)
        time.sleep(scrapes * 1.0 + 0.5)
