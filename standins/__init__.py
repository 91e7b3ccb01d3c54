"""The outside world's stand-ins, the one home the demo and the tests share: an SMS provider
in Twilio's wire format, a real SMTP server, a ticketing tool receiving signed call tasks.

Each speaks the real product's protocol on a real socket; where the notifier's own code
defines the protocol (the webhook signature, SMS segments), the stand-in uses that code."""

from __future__ import annotations

from aiohttp import web


async def serve(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Start ``app`` on ``host:port`` (0 = any free port); the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # reuse_address: a test may restart a stand-in on the port it had a moment ago.
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner, int(runner.addresses[0][1])


class Served:
    """A stand-in on a real socket: ``routes`` builds its aiohttp app, ``start`` serves it on
    127.0.0.1 (0 = any free port), ``stop`` ends it. Subclasses keep ``port`` and
    ``_runner`` as their own (dataclass) fields."""

    port: int
    _runner: web.AppRunner | None

    def routes(self) -> web.Application:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> str:
        self._runner, self.port = await serve(self.routes(), port=port)
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
