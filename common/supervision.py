"""Supervision of a service's long-running tasks (consumers, timers, loops).

A consumer loop catches what a record can cause (a dead letter) and what the broker or the
database can cause (a retry). If a task ends anyway, by a bug or a state the loop did not
foresee, the service must not go on looking healthy while it reads nothing: the supervisor
logs it, counts it, makes ``/readyz`` fail and tells the process to exit non-zero, so the
platform restarts it (Kubernetes restarts a container whose process exits).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping

from prometheus_client import Counter

from common.logs import get_logger

log = get_logger(__name__)

TASKS_STOPPED = Counter(
    "followup_tasks_stopped_total",
    "Supervised tasks (consumers, timers, loops) that ended while the service was running; "
    "the service turns unready and exits.",
    ["service", "task"],
)

# sysexits.h EX_SOFTWARE: an internal error, not a configuration one (2) or a signal.
EXIT_TASK_STOPPED = 70
# Unready but still serving /metrics this long before the exit, so at least one scrape
# (15 s is the ServiceMonitor's interval) sees followup_tasks_stopped_total go up.
LINGER_SECONDS = 15.0


class TaskStopped(Exception):
    """A supervised task ended while the service was running."""

    def __init__(self, task: str) -> None:
        super().__init__(f"supervised task {task} stopped")
        self.task = task


class Supervisor:
    """Watches named tasks; the first that ends unasked turns the service unready."""

    def __init__(self, service: str, linger_seconds: float = LINGER_SECONDS) -> None:
        self.service = service
        self.linger_seconds = linger_seconds
        self.failed = asyncio.Event()
        self.stopped_task: str | None = None
        self._closing = False

    def watch(self, tasks: Mapping[str, asyncio.Task[None]]) -> None:
        """``tasks`` by a stable name (no prefixes or ids: it becomes a metric label)."""
        for name, task in tasks.items():
            task.add_done_callback(functools.partial(self._ended, name))

    def closing(self) -> None:
        """The service is stopping: tasks that end from now on were asked to."""
        self._closing = True

    async def ready(self) -> bool:
        return not self.failed.is_set()

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        if self._closing:
            return
        if task.cancelled():
            error = "CancelledError"
        else:
            exc = task.exception()
            # Only the type: an exception's text may quote personal data.
            error = type(exc).__name__ if exc is not None else "returned"
        TASKS_STOPPED.labels(self.service, name).inc()
        log.error("task_stopped", task=name, error=error, action="unready_and_exit")
        if self.stopped_task is None:
            self.stopped_task = name
        self.failed.set()

    async def wait_failed(self) -> TaskStopped:
        await self.failed.wait()
        return TaskStopped(self.stopped_task or "unknown")
