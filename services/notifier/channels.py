"""What every channel and call-task sink shares: the send result and its two failure kinds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from common.clock import Clock


@dataclass(frozen=True)
class SendReceipt:
    provider: str
    provider_id: str | None = None


class TransientSendError(Exception):
    """Try again later (timeout, 5xx, 429, SMTP 4xx, connection refused)."""

    def __init__(self, provider: str, code: str) -> None:
        super().__init__(f"{provider}: {code}")
        self.provider = provider
        self.code = code


class PermanentSendError(Exception):
    """Will never work as asked; ``detail`` is a reason code for the failed outcome."""

    def __init__(self, provider: str, detail: str) -> None:
        super().__init__(f"{provider}: {detail}")
        self.provider = provider
        self.detail = detail


class RateLimiter:
    """Spaces calls to at most ``per_second`` on the injected clock (a provider's limit)."""

    def __init__(self, per_second: float, clock: Clock) -> None:
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._clock = clock
        self._next: datetime | None = None

    async def wait(self) -> None:
        if self._interval == 0.0:
            return
        now = self._clock.now()
        if self._next is not None and now < self._next:
            await self._clock.sleep((self._next - now).total_seconds())
            now = self._next
        self._next = now + timedelta(seconds=self._interval)
