"""A stand-in SMS provider that speaks Twilio's REST and webhook formats on a real socket.

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP Basic auth
  (AccountSid:AuthToken) and form fields ``To``, ``From``, ``Body``, ``StatusCallback``:
  answers ``201`` with Twilio's message JSON (``sid`` ``SM...``, ``status`` ``queued``), or
  Twilio's error JSON (``21211`` invalid ``To``, ``20003`` authentication).
- Then calls ``StatusCallback`` with ``MessageStatus`` ``sent`` and ``delivered``, signed
  like Twilio signs (``X-Twilio-Signature``: base64 HMAC-SHA1 of the URL followed by the
  sorted form fields, keyed with the auth token).
- ``reply()`` posts a patient's inbound SMS to the configured inbound URL, signed the same way.

Every accepted message is handed to ``on_message`` (the patients' phones) and recorded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import phonenumbers
import yarl
from aiohttp import web

from common.clock import Clock
from demo.standins import serve

API_VERSION = "2010-04-01"


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    payload = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True)
class SmsRecord:
    sid: str
    to: str
    from_: str
    body: str
    at: datetime  # virtual time of receipt at the provider
    segments: int


@dataclass(frozen=True)
class ReplyRecord:
    sid: str
    from_: str
    body: str
    at: datetime
    status: int


def _segments(body: str) -> int:
    gsm = all(ord(c) < 128 for c in body)
    single, multi = (160, 153) if gsm else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // multi)


class TwilioStandIn:
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
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.clock = clock
        # Where the patients' replies go; the first URL that exists is kept.
        self.inbound_urls = inbound_urls or []
        self.on_message = on_message
        self.capture = capture_dir / "sms.jsonl"
        capture_dir.mkdir(parents=True, exist_ok=True)
        self.messages: list[SmsRecord] = []
        self.replies: list[ReplyRecord] = []
        self.callbacks_failed = 0
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.app = web.Application()
        self.app.router.add_post(
            "/2010-04-01/Accounts/{account}/Messages.json", self._create_message
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._session = aiohttp.ClientSession()
        self._runner, self.port = await serve(self.app, host, port)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _sid(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):032x}"

    def _authorised(self, request: web.Request, account: str) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return (
            account == self.account_sid
            and hmac.compare_digest(user, self.account_sid)
            and hmac.compare_digest(password, self.auth_token)
        )

    @staticmethod
    def _error(status: int, code: int, message: str) -> web.Response:
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return web.json_response(body, status=status)

    async def _create_message(self, request: web.Request) -> web.Response:
        account = request.match_info["account"]
        if not self._authorised(request, account):
            return self._error(401, 20003, "Authentication Error - invalid username")
        form = await request.post()
        to, from_, body = str(form.get("To", "")), str(form.get("From", "")), form.get("Body")
        if body is None or not str(body):
            return self._error(400, 21602, "Message body is required.")
        try:
            valid = phonenumbers.is_valid_number(phonenumbers.parse(to, None))
        except phonenumbers.NumberParseException:
            valid = False
        if not valid:
            return self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        record = SmsRecord(
            sid=self._sid("SM"),
            to=to,
            from_=from_,
            body=str(body),
            at=self.clock.now(),
            segments=_segments(str(body)),
        )
        self.messages.append(record)
        with self.capture.open("a", encoding="utf-8") as f:
            row = asdict(record) | {"at": record.at.isoformat()}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        callback = form.get("StatusCallback")
        self._spawn(self._deliver(record, str(callback) if callback else None))
        created = record.at.strftime("%a, %d %b %Y %H:%M:%S +0000")
        return web.json_response(
            {
                "sid": record.sid,
                "account_sid": self.account_sid,
                "api_version": API_VERSION,
                "to": to,
                "from": from_,
                "body": record.body,
                "status": "queued",
                "direction": "outbound-api",
                "num_segments": str(record.segments),
                "num_media": "0",
                "date_created": created,
                "date_updated": created,
                "date_sent": None,
                "error_code": None,
                "error_message": None,
                "price": None,
                "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{record.sid}.json",
            },
            status=201,
        )

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, record: SmsRecord, callback: str | None) -> None:
        if callback:
            for status in ("sent", "delivered"):
                await self._post_signed(
                    callback,
                    {
                        "MessageSid": record.sid,
                        "SmsSid": record.sid,
                        "AccountSid": self.account_sid,
                        "From": record.from_,
                        "To": record.to,
                        "MessageStatus": status,
                        "SmsStatus": status,
                        "ApiVersion": API_VERSION,
                    },
                )
        if self.on_message is not None:
            await self.on_message(record)

    async def _post_signed(self, url: str, params: dict[str, str]) -> int:
        assert self._session is not None
        headers = {"X-Twilio-Signature": twilio_signature(self.auth_token, url, params)}
        # Twilio requests exactly the URL it was given and signs that string: no requoting.
        target = yarl.URL(url, encoded=True)
        try:
            async with self._session.post(target, data=params, headers=headers) as resp:
                if resp.status >= 300:
                    self.callbacks_failed += 1
                return resp.status
        except aiohttp.ClientError:
            self.callbacks_failed += 1
            return 0

    async def reply(self, from_: str, to: str, body: str) -> ReplyRecord:
        """A patient answers from their phone: Twilio's inbound webhook to the notifier."""
        if not self.inbound_urls:
            raise RuntimeError("no inbound URL configured for replies")
        sid = self._sid("SM")
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "SmsMessageSid": sid,
            "AccountSid": self.account_sid,
            "From": from_,
            "To": to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": "1",
            "ApiVersion": API_VERSION,
        }
        status = 0
        for url in list(self.inbound_urls):
            status = await self._post_signed(url, params)
            if status != 404:
                self.inbound_urls = [url]
                break
        record = ReplyRecord(sid=sid, from_=from_, body=body, at=self.clock.now(), status=status)
        self.replies.append(record)
        return record
