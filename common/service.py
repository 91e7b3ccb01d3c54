"""Running a service process: signals, graceful shutdown, one line for a bad configuration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from common.config import ConfigError, StartupError
from common.logs import get_logger
from common.supervision import EXIT_TASK_STOPPED, Supervisor, TaskStopped

log = get_logger(__name__)


async def wait_for_stop_signal(supervisor: Supervisor | None = None) -> None:
    """Return on SIGTERM or SIGINT, so the caller can stop consumers and commit offsets.
    Raise TaskStopped when a task of ``supervisor`` ended: the caller stops the rest in its
    ``finally`` and run() exits non-zero."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.create_task(stop.wait())]
    if supervisor is not None:
        waiters.append(asyncio.create_task(supervisor.failed.wait()))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if supervisor is not None and supervisor.failed.is_set() and not stop.is_set():
            # Unready already; linger so a scrape sees the stopped task (a signal ends it).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), supervisor.linger_seconds)
    finally:
        for waiter in waiters:
            waiter.cancel()
    if supervisor is not None and supervisor.failed.is_set():
        supervisor.closing()
        raise await supervisor.wait_failed()
    if supervisor is not None:
        supervisor.closing()
    log.info("stopping")


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        asyncio.run(main())
    except ConfigError as exc:
        # Found at start-up (e.g. a topic not laid out): one line, not a traceback.
        kind = "cannot start" if isinstance(exc, StartupError) else "configuration error"
        print(f"{kind}: {exc}", file=sys.stderr)
        # Clients built but never started would each log "Unclosed ..." when collected.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        raise SystemExit(2) from None
    except TaskStopped as exc:
        log.error("exiting", reason="task_stopped", task=exc.task, exit_code=EXIT_TASK_STOPPED)
        raise SystemExit(EXIT_TASK_STOPPED) from None
