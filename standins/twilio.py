"""The SMS provider stand-in of a running clinic: the Twilio-format stand-in
(``standins/sms_provider.py``: Twilio's REST resource, basic auth, Twilio's error JSON,
``X-Twilio-Signature`` on callbacks and replies), with what a running clinic needs on top:

- every accepted message is stamped with the shared virtual clock, kept in ``sms.jsonl``
  and handed to the patients' phones (``on_message``);
- status callbacks ``sent`` then ``delivered`` follow each message, as Twilio sends them
  (``undelivered`` with the ``ErrorCode`` for a number given a 30xxx ``number_errors`` code:
  a handset switched off never rings);
- ``reply()`` sends a patient's answer to the notifier's inbound URL (the first that exists).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import yarl
from aiohttp import web

from common.clock import Clock
from services.notifier.sms_text import segment_count
from standins.sms_provider import SentMessage, SmsProviderStandIn, sign

# The provider signs its callbacks itself (tests check it against Twilio's documented
# example); the notifier's own check verifies it, so the two are proved to agree.
twilio_signature = sign


@dataclass(frozen=True)
class SmsRecord:
    sid: str
    to: str
    from_: str
    body: str
    at: datetime  # virtual time of receipt at the provider
    segments: int  # as the notifier counts them (services.notifier.sms_text)
    # The notifier's idempotency key, from the status callback URL it asked for (?key=...).
    key: str | None = None


@dataclass(frozen=True)
class ReplyRecord:
    from_: str
    body: str
    at: datetime
    status: int


def _callback_key(url: str | None) -> str | None:
    return yarl.URL(url).query.get("key") if url else None


class TwilioStandIn(SmsProviderStandIn):
    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        clock: Clock,
        capture_dir: Path,
        inbound_urls: list[str] | None = None,
        on_message: Callable[[SmsRecord], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(account_sid, auth_token)
        self.clock = clock
        # Where the patients' replies go; the first URL that exists is kept.
        self.inbound_urls = inbound_urls or []
        self.on_message = on_message
        self.capture = capture_dir / "sms.jsonl"
        capture_dir.mkdir(parents=True, exist_ok=True)
        self.records: list[SmsRecord] = []
        self.replies: list[ReplyRecord] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.callbacks_failed = 0

    async def start(self, port: int = 0) -> str:
        return await super().start(port)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().stop()

    async def _create_message(self, request: web.Request) -> web.Response:
        accepted = len(self.messages)
        response = await super()._create_message(request)
        if len(self.messages) > accepted:
            self._accepted(self.messages[-1])
        return response

    def _accepted(self, sent: SentMessage) -> None:
        record = SmsRecord(
            sid=sent.sid,
            to=sent.to,
            from_=sent.from_,
            body=sent.body,
            at=self.clock.now(),
            segments=segment_count(sent.body)[1],
            key=_callback_key(sent.status_callback),
        )
        self.records.append(record)
        with self.capture.open("a", encoding="utf-8") as f:
            row = asdict(record) | {"at": record.at.isoformat()}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        task = asyncio.ensure_future(self._deliver(sent, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, sent: SentMessage, record: SmsRecord) -> None:
        code = self.number_errors.get(sent.to)
        if sent.status_callback:
            final = ("undelivered", str(code)) if code is not None else ("delivered", None)
            for status, error_code in (("sent", None), final):
                try:
                    await self.send_status(sent, status, error_code=error_code)
                except aiohttp.ClientError:
                    self.callbacks_failed += 1
        if code is not None:
            return  # never reached a phone
        if self.on_message is not None:
            await self.on_message(record)

    async def reply(self, from_: str, to: str, body: str) -> ReplyRecord:
        """A patient answers from their phone: Twilio's inbound webhook to the notifier."""
        if not self.inbound_urls:
            raise RuntimeError("no inbound URL configured for replies")
        status = 0
        for url in list(self.inbound_urls):
            try:
                status = await self.send_reply(url, from_, body, to=to)
            except aiohttp.ClientError:
                status = 0
            if status != 404:
                self.inbound_urls = [url]
                break
        record = ReplyRecord(from_=from_, body=body, at=self.clock.now(), status=status)
        self.replies.append(record)
        return record
