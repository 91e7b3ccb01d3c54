"""Running a service process: signals, graceful shutdown, one line for a bad configuration."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from common.logs import get_logger

log = get_logger(__name__)


async def wait_for_stop_signal() -> None:
    """Return on SIGTERM or SIGINT, so the caller can stop consumers and commit offsets."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())
