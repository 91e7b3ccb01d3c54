"""Running a service process: signals, graceful shutdown, one line for a bad configuration."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from common.config import ConfigError
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
    try:
        asyncio.run(main())
    except ConfigError as exc:
        # Found at start-up (e.g. a topic not laid out): one line, not a traceback.
        print(f"configuration error: {exc}", file=sys.stderr)
        # Clients built but never started would each log "Unclosed ..." when collected.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        raise SystemExit(2) from None
