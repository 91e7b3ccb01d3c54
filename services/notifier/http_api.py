"""The notifier's HTTP API, mounted on the ops server: provider callbacks, inbound SMS,
administrators' call results and the email unsubscribe link.

Provider requests are verified by the provider's signature (X-Twilio-Signature) against
the public URL the provider called; administrators need the bearer token. Answers are
4xx with a reason on bad input; nothing personal is logged.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from common.clock import Clock
from common.http import bearer_token_ok
from common.logs import get_logger
from schemas.events import OutcomeEvent, OutcomeKind
from services.notifier import metrics
from services.notifier.bounces import BounceError, parse_bounce_json, parse_bounce_message
from services.notifier.call_reports import ReportError, parse_call_report, report_outcome, valid_id
from services.notifier.contacts import normalise_phone
from services.notifier.directory import Directory
from services.notifier.email_channel import unsubscribe_token
from services.notifier.ledger import Ledger
from services.notifier.outcomes import command_outcome
from services.notifier.sms import valid_twilio_signature
from services.notifier.sms_text import classify_reply

log = get_logger(__name__)

_STATUS_OUTCOMES: dict[str, OutcomeKind] = {
    "delivered": "delivered",
    "failed": "failed",
    "undelivered": "failed",
}

Publish = Callable[[OutcomeEvent], Awaitable[None]]


class NotifierApi:
    def __init__(
        self,
        *,
        ledger: Ledger,
        directory: Directory,
        publish: Publish,
        clock: Clock,
        public_base_url: str,
        provider_tokens: Sequence[str],
        api_token: str,
        link_secret: str,
        default_region: str,
    ) -> None:
        self._ledger = ledger
        self._directory = directory
        self._publish = publish
        self._clock = clock
        self._base = public_base_url.rstrip("/")
        self._provider_tokens = [t for t in provider_tokens if t]
        self._api_token = api_token
        self._link_secret = link_secret
        self._region = default_region

    def mount(self, app: web.Application) -> None:
        app.router.add_post("/sms/status", self.sms_status)
        app.router.add_post("/sms/inbound", self.sms_inbound)
        app.router.add_post("/calltasks/{task_id}/result", self.call_result)
        app.router.add_post("/call-tasks/outcomes", self.call_outcome)
        app.router.add_post("/email/bounces", self.email_bounce)
        app.router.add_route("*", "/unsubscribe", self.unsubscribe)

    async def _signed_form(self, request: web.Request) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.post()).items()}
        url = self._base + request.raw_path  # exactly as the provider signed it
        signature = request.headers.get("X-Twilio-Signature")
        if not any(valid_twilio_signature(t, url, form, signature) for t in self._provider_tokens):
            log.warning("provider_signature_refused", path=request.path)
            raise web.HTTPForbidden(text="invalid provider signature")
        return form

    async def sms_status(self, request: web.Request) -> web.Response:
        form = await self._signed_form(request)
        outcome = _STATUS_OUTCOMES.get(form.get("MessageStatus", ""))
        if outcome is None:
            return web.Response(status=204)  # queued/sent/accepted: nothing to report yet
        command = await self._ledger.sms_command(request.query.get("key"), form.get("MessageSid"))
        if command is None:
            raise web.HTTPNotFound(text="unknown message")
        error = form.get("ErrorCode")
        await self._publish(
            command_outcome(
                command,
                outcome,
                self._clock.now(),
                detail=f"provider_{error}" if outcome == "failed" and error else None,
            )
        )
        return web.Response(status=204)

    async def sms_inbound(self, request: web.Request) -> web.Response:
        form = await self._signed_form(request)
        message_id = form.get("MessageSid", "")
        phone = normalise_phone(form.get("From"), self._region)
        if not valid_id(message_id) or phone is None:
            raise web.HTTPBadRequest(text="MessageSid and a valid From are required")
        meaning = classify_reply(form.get("Body", ""))
        now = self._clock.now()
        if meaning in ("opt_out", "opt_in"):
            # STOP wins at once, for whoever holds this number, before anything else.
            await self._directory.set_opt_out(phone, "sms", meaning == "opt_out", now, message_id)
            if meaning == "opt_out":
                metrics.OPT_OUTS.labels("sms").inc()
        patients = await self._directory.patients_with_phone(phone)
        for patient_id in patients:
            event_id = message_id if len(patients) == 1 else f"{message_id}:{patient_id}"
            await self._publish(
                OutcomeEvent(
                    event_id=event_id,
                    occurred_at=now,
                    source="notifier",
                    outcome=meaning,
                    patient_id=patient_id,
                    channel="sms",
                )
            )
        log.info("sms_reply", meaning=meaning, message_id=message_id, patients=len(patients))
        return web.Response(text="<Response/>", content_type="application/xml")

    async def call_result(self, request: web.Request) -> web.Response:
        """``POST /calltasks/{task_id}/result``: the task's own report URL."""
        return await self._report(request, lambda body: request.match_info["task_id"])

    async def call_outcome(self, request: web.Request) -> web.Response:
        """``POST /call-tasks/outcomes``: the agreed route; the body names the task by its
        idempotency key (``<case_id>:<n>``, which is also the task id)."""

        def task_of(body: dict[str, Any]) -> str:
            key = body.get("idempotency_key")
            if not valid_id(key):
                raise web.HTTPBadRequest(text="idempotency_key: the call task's key is required")
            return str(key)

        return await self._report(request, task_of)

    def _authorise(self, request: web.Request) -> None:
        if not bearer_token_ok(request, self._api_token):
            raise web.HTTPUnauthorized(text="a valid bearer token is required")

    async def email_bounce(self, request: web.Request) -> web.Response:
        """``POST /email/bounces``: an RFC 3464 report (the whole message, or its body with
        ``Content-Type: multipart/report; ...``) or the minimal JSON form (``bounces.py``)."""
        self._authorise(request)
        raw = await request.read()
        try:
            if request.content_type == "application/json":
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise BounceError("body is not JSON") from None
                bounce = parse_bounce_json(body)
            else:
                if request.content_type == "multipart/report":
                    # The MIME headers came as HTTP headers: put them back on the message.
                    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n"
                    raw = head.encode() + raw
                bounce = parse_bounce_message(raw)
        except BounceError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        if not bounce.permanent:
            return web.json_response({"result": "ignored", "status": bounce.status})
        command = await self._ledger.email_command(bounce.message_id)
        if command is None:
            raise web.HTTPNotFound(text="unknown Message-ID")
        event = command_outcome(command, "bounced", self._clock.now(), detail=bounce.detail)
        await self._publish(event)
        log.info("email_bounced", key=command.idempotency_key, status=bounce.status)
        return web.json_response({"result": "bounced", "event_id": event.event_id}, status=202)

    async def _report(
        self, request: web.Request, task_of: Callable[[dict[str, Any]], str]
    ) -> web.Response:
        self._authorise(request)
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body is not JSON") from None
        try:
            report = parse_call_report(body)
        except ReportError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        command = await self._ledger.call_task(task_of(body))
        if command is None:
            raise web.HTTPNotFound(text="unknown call task")
        event = report_outcome(report, command, self._clock.now())
        await self._publish(event)
        return web.json_response({"event_id": event.event_id, "outcome": event.outcome}, status=202)

    async def unsubscribe(self, request: web.Request) -> web.Response:
        patient_id = request.query.get("patient", "")
        token = request.query.get("token", "")
        if not (
            valid_id(patient_id)
            and self._link_secret
            and hmac.compare_digest(token, unsubscribe_token(self._link_secret, patient_id))
        ):
            raise web.HTTPForbidden(text="invalid unsubscribe link")
        if request.method not in ("GET", "POST"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        contact = await self._directory.contact(patient_id)
        if contact is not None and contact.email:
            now = self._clock.now()
            event_id = f"unsubscribe:{patient_id}:email"
            await self._directory.set_opt_out(contact.email, "email", True, now, event_id)
            metrics.OPT_OUTS.labels("email").inc()
            await self._publish(
                OutcomeEvent(
                    event_id=event_id,
                    occurred_at=now,
                    source="notifier",
                    outcome="opt_out",
                    patient_id=patient_id,
                    channel="email",
                )
            )
        return web.Response(text="You will receive no more emails from us.")
