"""SMS through a provider interface; the Twilio-compatible REST provider; failover.

Twilio's Messages resource: POST /2010-04-01/Accounts/{sid}/Messages.json, form-encoded
To/From/Body/StatusCallback, HTTP basic auth (sid, token). Callbacks and inbound replies
carry X-Twilio-Signature = base64(HMAC-SHA1(token, url + sorted key/value pairs)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from common.clock import Clock
from services.notifier.channels import (
    PermanentSendError,
    RateLimiter,
    SendReceipt,
    TransientSendError,
)


@dataclass(frozen=True)
class SmsMessage:
    to: str
    body: str
    status_callback: str | None = None


class SmsProvider(Protocol):
    name: str

    async def send(self, message: SmsMessage) -> SendReceipt: ...


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    payload = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def valid_twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    if not signature:
        return False
    return hmac.compare_digest(twilio_signature(auth_token, url, params), signature)


class TwilioProvider:
    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        account_sid: str,
        auth_token: str,
        from_number: str,
        clock: Clock,
        per_second: float = 10.0,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth = aiohttp.BasicAuth(account_sid, auth_token)
        self._from = from_number
        self._limit = RateLimiter(per_second, clock)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, message: SmsMessage) -> SendReceipt:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        form = {"To": message.to, "From": self._from, "Body": message.body}
        if message.status_callback:
            form["StatusCallback"] = message.status_callback
        await self._limit.wait()
        try:
            async with self._session.post(self._url, data=form, auth=self._auth) as response:
                payload = await response.json(content_type=None)
                status = response.status
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise TransientSendError(self.name, type(exc).__name__) from None
        if 200 <= status < 300 and isinstance(payload, dict) and payload.get("sid"):
            return SendReceipt(self.name, str(payload["sid"]))
        if status == 429 or status >= 500:
            raise TransientSendError(self.name, f"http_{status}")
        code = payload.get("code") if isinstance(payload, dict) else None
        raise PermanentSendError(self.name, f"provider_{code or status}")


class FailoverSms:
    """Tries providers in order; only a transient failure moves on to the next one.

    A permanent refusal (an invalid number) would be refused by any provider alike.
    """

    def __init__(self, providers: Sequence[SmsProvider]) -> None:
        if not providers:
            raise ValueError("at least one SMS provider is needed")
        self.providers = list(providers)
        self.name = self.providers[0].name

    async def send(self, message: SmsMessage) -> SendReceipt:
        last: TransientSendError | None = None
        for provider in self.providers:
            try:
                return await provider.send(message)
            except TransientSendError as exc:
                last = exc
        assert last is not None
        raise last
