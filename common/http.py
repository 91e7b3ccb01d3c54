"""The operations endpoint every service serves: /metrics, /healthz, /readyz.

Services mount their own routes (FHIR ingest, case API, call-task results) on the same
aiohttp application, so one port serves both operators and integrators.
"""

from __future__ import annotations

import errno
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from common.config import StartupError
from common.supervision import Supervisor

ReadinessCheck = Callable[[], Awaitable[bool]]


def bearer_token_ok(request: web.Request, token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>``; compared in constant
    time. An empty configured token accepts nobody (an API left unconfigured stays shut)."""
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def port_taken(exc: OSError, host: str, port: int, variable: str) -> OSError | StartupError:
    """A bind that failed as one line naming the address and the variable to change."""
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"{host}:{port} is already in use: set {variable} to a free port")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
        return StartupError(f"cannot listen on {host}:{port} ({exc.strerror}): set {variable}")
    return exc


class OpsServer:
    def __init__(self, service: str, registry: CollectorRegistry = REGISTRY) -> None:
        self.service = service
        self.registry = registry
        self.app = web.Application(client_max_size=1024 * 1024)
        self._checks: dict[str, ReadinessCheck] = {}
        # The service's long-running tasks; one that ends makes /readyz fail ("tasks").
        self.supervisor = Supervisor(service)
        self._checks["tasks"] = self.supervisor.ready
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        self._checks[name] = check

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError as exc:
            await self._runner.cleanup()
            raise port_taken(exc, host, port, "FOLLOWUP_HTTP_PORT") from None
        # The port actually bound: port 0 asks the system for a free one.
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        # Liveness: the event loop answers. Dependencies belong to readiness.
        return web.json_response({"status": "ok", "service": self.service})

    async def _readyz(self, _request: web.Request) -> web.Response:
        results: dict[str, bool] = {}
        for name, check in self._checks.items():
            try:
                results[name] = await check()
            except Exception:
                results[name] = False
        ready = all(results.values())
        return web.json_response(
            {"status": "ready" if ready else "not_ready", "checks": results},
            status=200 if ready else 503,
        )
