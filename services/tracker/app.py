"""The tracker's composition root: configuration, adapters and wiring live here alone."""

from __future__ import annotations

from common import logs
from common.config import Settings, load_or_exit
from common.http import OpsServer
from common.service import run, wait_for_stop_signal


class TrackerSettings(Settings):
    service: str = "tracker"


async def serve(settings: TrackerSettings) -> None:
    ops = OpsServer(settings.service)
    await ops.start(settings.http_host, settings.http_port)
    logs.get_logger(__name__).info("started", port=ops.port)
    try:
        await wait_for_stop_signal()
    finally:
        await ops.stop()


def main() -> None:
    settings = load_or_exit(TrackerSettings)
    logs.configure(settings.service, settings.log_level, settings.log_format)
    run(lambda: serve(settings))
