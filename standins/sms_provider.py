"""A stand-in for a Twilio-compatible SMS provider, on a real socket, in the real wire format.

For tests and the demo: it accepts POST /2010-04-01/Accounts/{sid}/Messages.json
(form-encoded, basic auth), records each message, answers like Twilio (201 + JSON with a
"sid"), can be told to fail the next requests (503, 400 with a Twilio error code), and
posts status callbacks and inbound replies signed with X-Twilio-Signature, and keeps the
TwiML ``<Message>`` answers to replies (what Twilio would text back) in ``answers``. Numbers
can be given a carrier fact (``number_errors``: a landline, a number that does not exist, a
handset switched off) that the provider reports with Twilio's error code, as Twilio does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
from dataclasses import dataclass, field
from xml.etree import ElementTree

import aiohttp
import yarl
from aiohttp import web

from services.notifier.sms_text import segment_count
from standins import serve


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    payload = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    return base64.b64encode(
        hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    ).decode()


# Twilio's error dictionary, the API answers the stand-in gives for a number's fact.
API_ERRORS = {
    21211: "The 'To' number is not a valid phone number.",
    21614: "'To' number is not a valid mobile number",
    21610: "Attempt to send to unsubscribed recipient",
}


def more_info(code: int) -> str:
    return f"https://www.twilio.com/docs/errors/{code}"


@dataclass
class SentMessage:
    sid: str
    to: str
    from_: str
    body: str
    status_callback: str | None
    form: dict[str, str] = field(default_factory=dict)


class SmsProviderStandIn:
    def __init__(self, account_sid: str = "ACstandin", auth_token: str = "standin-token") -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[SentMessage] = []
        self.answers: list[tuple[str, str]] = []  # (to, body) of TwiML <Message> answers
        self.requests = 0
        self._failures: list[tuple[int, int | None]] = []  # (http status, twilio error code)
        # E.164 number -> the Twilio error code the provider gives for it: 21xxx refuse the
        # request (400, as the API does), 30xxx come later as an ``undelivered`` callback.
        self.number_errors: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.app = web.Application()
        self.app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create_message)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, status: int, times: int = 1, code: int | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (and a Twilio error code)."""
        self._failures.extend([(status, code)] * times)

    async def start(self, port: int = 0) -> str:
        self._runner, self.port = await serve(self.app, "127.0.0.1", port)
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _create_message(self, request: web.Request) -> web.Response:
        self.requests += 1
        expected = aiohttp.BasicAuth(self.account_sid, self.auth_token).encode()
        if (
            request.match_info["sid"] != self.account_sid
            or request.headers.get("Authorization") != expected
        ):
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        if self._failures:
            status, code = self._failures.pop(0)
            return web.json_response(
                {"code": code, "message": "stand-in failure", "status": status}, status=status
            )
        form = {k: str(v) for k, v in (await request.post()).items()}
        to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        if not to.startswith("+") or not to[1:].isdigit():
            return web.json_response(
                {"code": 21211, "message": "The 'To' number is not valid.", "status": 400},
                status=400,
            )
        if not body:
            return web.json_response({"code": 21602, "message": "Body required"}, status=400)
        code = self.number_errors.get(to)
        if code is not None and code < 30000:
            message = API_ERRORS.get(code, "The 'To' number cannot receive this message.")
            return web.json_response(
                {"code": code, "message": message, "more_info": more_info(code), "status": 400},
                status=400,
            )
        sid = f"SM{next(self._ids):032x}"
        self.messages.append(SentMessage(sid, to, from_, body, form.get("StatusCallback"), form))
        return web.json_response(
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": to,
                "from": from_,
                "body": body,
                "status": "queued",
                "num_segments": str(segment_count(body)[1]),
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            },
            status=201,
        )

    async def _post_signed(
        self, url: str, params: dict[str, str], *, valid_signature: bool
    ) -> aiohttp.ClientResponse:
        signature = sign(self.auth_token if valid_signature else "wrong-token", url, params)
        async with aiohttp.ClientSession() as http:
            # encoded=True: request exactly the URL that was signed, as the provider does.
            response = await http.post(
                yarl.URL(url, encoded=True),
                data=params,
                headers={"X-Twilio-Signature": signature},
            )
            await response.read()
            return response

    async def send_status(
        self,
        message: SentMessage,
        status: str,
        *,
        valid_signature: bool = True,
        error_code: str | None = None,
    ) -> int:
        """POST a status callback for ``message``; returns the notifier's HTTP status."""
        assert message.status_callback, "the message asked for no status callback"
        params = {
            "MessageSid": message.sid,
            "MessageStatus": status,
            "AccountSid": self.account_sid,
            "To": message.to,
            "From": message.from_,
        }
        if error_code:
            params["ErrorCode"] = error_code
        response = await self._post_signed(
            message.status_callback, params, valid_signature=valid_signature
        )
        return response.status

    async def send_reply(
        self,
        url: str,
        from_: str,
        body: str,
        *,
        to: str = "+15005550006",
        valid_signature: bool = True,
    ) -> int:
        """POST an inbound SMS (a patient's reply) to ``url``; returns the HTTP status."""
        params = {
            "MessageSid": f"SM{next(self._ids):032x}",
            "AccountSid": self.account_sid,
            "From": from_,
            "To": to,
            "Body": body,
            "NumMedia": "0",
        }
        response = await self._post_signed(url, params, valid_signature=valid_signature)
        body = await response.text()
        if response.status == 200 and "<Message>" in body:
            # Twilio sends a TwiML <Message> answer back to whoever wrote, as an SMS.
            for message in ElementTree.fromstring(body).iter("Message"):
                self.answers.append((from_, message.text or ""))
        return response.status
