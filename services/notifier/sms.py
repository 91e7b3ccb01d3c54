"""The SMS channel: render, send through Twilio-compatible providers with failover, and the
provider's inbound routes (status callbacks, replies with the STOP rule) in its vocabulary.

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
from datetime import timedelta
from typing import Literal, Protocol
from urllib.parse import quote
from xml.sax.saxutils import escape as xml_escape

import aiohttp
from aiohttp import web

from common.clock import Clock
from common.logs import get_logger
from schemas.events import NotificationCommand, OutcomeEvent, OutcomeKind
from schemas.vocabulary import NUMBER_LANDLINE, NUMBER_WRONG
from services.notifier import feedback, metrics
from services.notifier.call_reports import valid_id
from services.notifier.carrier_errors import ErrorClass, Triage, triage, triage_detail
from services.notifier.channels import (
    ChannelRules,
    Job,
    Parts,
    PermanentSendError,
    RateLimiter,
    Route,
    SendReceipt,
    Sent,
    TransientSendError,
)
from services.notifier.contacts import Contact, normalise_phone
from services.notifier.outcomes import command_outcome
from services.notifier.sms_text import read_reply, segment_count

log = get_logger(__name__)


@dataclass(frozen=True)
class SmsMessage:
    to: str
    body: str
    status_callback: str | None = None
    sender: str | None = None  # a chain's clinic's own number; None: the provider's


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
        self.auth_token = auth_token  # also checks the provider's signed callbacks
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
        form = {"To": message.to, "From": message.sender or self._from, "Body": message.body}
        if message.status_callback:
            form["StatusCallback"] = message.status_callback
        await self._limit.wait()
        try:
            async with self._session.post(self._url, data=form, auth=self._auth) as response:
                payload = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Never connected: nothing reached the provider, so trying again is safe.
            raise TransientSendError(self.name, type(exc).__name__) from None
        except (TimeoutError, aiohttp.ClientError, ValueError):
            # The request went out and its answer was lost (too slow, cut off): the provider
            # may have the message and cannot deduplicate, so at most once, as after a
            # crash while 'sending': no retry, no failover, outcome failed/delivery_unknown.
            log.warning("sms_delivery_unknown", provider=self.name)
            raise PermanentSendError(self.name, "delivery_unknown") from None
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


# --- the provider's vocabulary -----------------------------------------------------------

# Twilio's MessageStatus values that are a result; queued/sent/accepted are not yet one.
STATUS_OUTCOMES: dict[str, OutcomeKind] = {
    "delivered": "delivered",
    "failed": "failed",
    "undelivered": "failed",
}


@dataclass(frozen=True)
class CarrierVerdict:
    """What the notifier does with one carrier error (``carrier_errors.triage``): the
    outcome it reports, the mark it keeps on the number, whether it is an opt-out."""

    error_class: ErrorClass
    outcome: OutcomeKind
    detail: str
    mark: str | None = None  # vocabulary.NUMBER_MARKS
    opt_out: bool = False


def carrier_verdict(found: Triage) -> CarrierVerdict:
    """A triaged error as the scheduler reads it (``cadence.lost_channels`` and
    ``PASSING_FAILURES``): a landline or a wrong number makes SMS impossible (and stays on
    the number); a phone that is off, a busy carrier or an unexplained failure leaves the
    channel to the cadence's next step; a carrier opt-out is the patient's STOP (no more
    texts, the next step on another channel); a problem of our sender refuses the attempt,
    so the same step goes at once on another channel."""
    c = found.error_class
    if c == "landline":
        return CarrierVerdict(c, "channel_impossible", NUMBER_LANDLINE, mark=NUMBER_LANDLINE)
    if c == "invalid_number":
        return CarrierVerdict(c, "channel_impossible", NUMBER_WRONG, mark=NUMBER_WRONG)
    if c == "carrier_opt_out":
        return CarrierVerdict(c, "failed", "opted_out", opt_out=True)
    if c == "unreachable":
        return CarrierVerdict(c, "failed", "unreachable")
    if c == "transient":
        return CarrierVerdict(c, "failed", "carrier_busy")
    if c == "sender":
        # Our side (account, registration, filter): the text reached nobody, so the step is
        # not spent: it goes at once on another channel; operators read the code.
        code = found.code if found.code is not None else "sender"
        return CarrierVerdict(c, "channel_impossible", f"provider_{code}")
    return CarrierVerdict(c, "failed", "carrier_unknown")


def status_outcome(status: str, error_code: str | None) -> tuple[OutcomeKind, str | None] | None:
    """A status callback as (outcome, detail), or None while the message is under way."""
    outcome = STATUS_OUTCOMES.get(status)
    if outcome is None:
        return None
    if outcome == "delivered":
        return outcome, None
    verdict = carrier_verdict(triage("twilio", error_code))
    return verdict.outcome, verdict.detail


def _missing_phone(contact: Contact) -> str | None:
    if not contact.phone_raw:
        return "no_phone"
    if contact.phone is None:
        return "invalid_phone"
    return contact.phone_mark  # landline or number_wrong: no SMS in any case until a new one


RULES = ChannelRules(
    consent="sms", reaches_patient=True, resend_when_unsure=False, missing=_missing_phone
)


# --- the channel -------------------------------------------------------------------------


class SmsChannel:
    name: Literal["sms"] = "sms"
    rules = RULES

    def __init__(self, parts: Parts, providers: Sequence[TwilioProvider]) -> None:
        self._parts = parts
        self._providers = list(providers)
        self._sms = FailoverSms(self._providers) if self._providers else None
        self._tokens = [p.auth_token for p in self._providers if p.auth_token]

    def render(self, command: NotificationCommand, contact: Contact) -> SmsMessage:
        assert contact.phone is not None
        # A number several patients share: whoever reads it may not be this patient, so
        # the text names no one and no visit (generic care-first message only).
        # A proxy (a child's guardian, a carer) reads it too: the same care-first text
        # that names no one, never more than needed.
        shared = contact.phone_shared_by > 1 or contact.proxy is not None
        context = self._parts.voice.context(command, contact, redacted=shared)
        if feedback.is_feedback(command):
            body = feedback.question(self._parts, contact, command)
        else:
            body = self._parts.book.render("sms", contact.language, context)
        key = quote(command.idempotency_key, safe="")
        return SmsMessage(
            contact.phone,
            body,
            f"{self._parts.public_base_url}/sms/status?key={key}",
            sender=self._parts.voice.for_site(command.site).sms_from,
        )

    async def send(self, job: Job) -> Sent:
        if self._sms is None:
            raise PermanentSendError("none", "channel_not_configured")
        assert job.contact is not None
        message = self.render(job.command, job.contact)
        if job.contact.phone_shared_by > 1:
            metrics.HELD.labels("shared_number_redacted").inc()
        try:
            receipt = await self._sms.send(message)
        except PermanentSendError as exc:
            # The provider refused at once (21211 invalid, 21614 not a mobile, 21610 STOP).
            verdict = await self._carrier_said(job.command, message.to, triage_detail(exc.detail))
            raise PermanentSendError(exc.provider, verdict.detail, verdict.outcome) from None
        encoding, segments = segment_count(message.body)
        metrics.SMS_SEGMENTS.labels(encoding).inc(segments)
        return Sent("sent", provider=receipt.provider, provider_id=receipt.provider_id)

    async def _carrier_said(
        self, command: NotificationCommand, phone: str | None, found: Triage
    ) -> CarrierVerdict:
        """Act on a carrier error: keep the mark on the number, or record the opt-out."""
        verdict = carrier_verdict(found)
        metrics.CARRIER_ERRORS.labels(verdict.error_class).inc()
        log.info(
            "sms_carrier_error",
            key=command.idempotency_key,
            code=found.code,
            error_class=verdict.error_class,
        )
        if phone is None:
            return verdict
        if verdict.mark is not None:
            await self._parts.directory.mark_phone(phone, verdict.mark, self._parts.clock.now())
        if verdict.opt_out:
            await self._opted_out_at_provider(command, phone)
        return verdict

    async def _opted_out_at_provider(self, command: NotificationCommand, phone: str) -> None:
        now = self._parts.clock.now()
        event_id = f"{command.idempotency_key}:opt_out"
        await self._parts.directory.set_opt_out(phone, self.name, True, now, event_id)
        metrics.OPT_OUTS.labels(self.name).inc()
        await self._parts.publish_outcome(command_outcome(command, "opt_out", now))
        log.info("sms_opted_out_at_provider", key=command.idempotency_key)

    def routes(self) -> Sequence[Route]:
        return (
            Route("POST", "/sms/status", self.status_callback),
            Route("POST", "/sms/inbound", self.inbound),
        )

    async def close(self) -> None:
        for provider in self._providers:
            await provider.close()

    async def _signed_form(self, request: web.Request) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.post()).items()}
        url = self._parts.public_base_url + request.raw_path  # exactly as the provider signed it
        signature = request.headers.get("X-Twilio-Signature")
        if not any(valid_twilio_signature(t, url, form, signature) for t in self._tokens):
            log.warning("provider_signature_refused", path=request.path)
            raise web.HTTPForbidden(text="invalid provider signature")
        return form

    async def _first_time(self, key: str, route: str) -> bool:
        """Replay protection: the provider's signature has no timestamp, so a captured
        callback would stay valid forever. Its key is remembered; a repeat (a replay, or
        the provider retrying one we acted on) is acknowledged with a 2xx and no effect:
        providers retry on anything else, and the first one was already acted on."""
        retention = timedelta(days=self._parts.settings.callback_retention_days)
        fresh = await self._parts.ledger.first_callback(key, self._parts.clock.now(), retention)
        if not fresh:
            log.warning("callback_repeated", route=route)
        return fresh

    async def status_callback(self, request: web.Request) -> web.Response:
        """``POST /sms/status?key=``: delivered / failed (undelivered) outcomes."""
        form = await self._signed_form(request)
        result = status_outcome(form.get("MessageStatus", ""), form.get("ErrorCode"))
        if result is None:
            return web.Response(status=204)  # queued/sent/accepted: nothing to report yet
        signed = self._parts.public_base_url + request.raw_path
        pairs = "".join(f"{k}{form[k]}" for k in sorted(form))
        key = "sms_status:" + hashlib.sha256((signed + pairs).encode()).hexdigest()
        if not await self._first_time(key, "sms_status"):
            return web.Response(status=204)  # a replayed callback: acknowledged, no effect
        try:
            command = await self._parts.ledger.sent_command(
                self.name, provider_id=form.get("MessageSid"), key=request.query.get("key")
            )
            if command is None:
                raise web.HTTPNotFound(text="unknown message")
            outcome, detail = result
            if outcome != "delivered":
                phone = normalise_phone(form.get("To"), self._parts.settings.default_region)
                found = triage("twilio", form.get("ErrorCode"))
                verdict = await self._carrier_said(command, phone, found)
                outcome, detail = verdict.outcome, verdict.detail
            await self._parts.publish_outcome(
                command_outcome(command, outcome, self._parts.clock.now(), detail=detail)
            )
        except BaseException:
            await self._parts.ledger.forget_callback(key)
            raise
        return web.Response(status=204)

    async def inbound(self, request: web.Request) -> web.Response:
        """``POST /sms/inbound``: STOP/START/HELP (lt/ru/bg too) or a plain reply."""
        form = await self._signed_form(request)
        message_id = form.get("MessageSid", "")
        phone = normalise_phone(form.get("From"), self._parts.settings.default_region)
        if not valid_id(message_id) or phone is None:
            raise web.HTTPBadRequest(text="MessageSid and a valid From are required")
        key = f"sms_inbound:{message_id}"
        if not await self._first_time(key, "sms_inbound"):
            return web.Response(text="<Response/>", content_type="application/xml")
        try:
            return await self._act_on_reply(form, message_id, phone)
        except BaseException:
            await self._parts.ledger.forget_callback(key)
            raise

    async def _act_on_reply(
        self, form: Mapping[str, str], message_id: str, phone: str
    ) -> web.Response:
        reading = read_reply(form.get("Body", ""))
        meaning = reading.meaning
        now = self._parts.clock.now()
        if meaning in ("opt_out", "opt_in"):
            # STOP wins at once, for whoever holds this number, before anything else.
            await self._parts.directory.set_opt_out(
                phone, self.name, meaning == "opt_out", now, message_id
            )
            if meaning == "opt_out":
                metrics.OPT_OUTS.labels(self.name).inc()
        patients = await self._parts.directory.patients_with_phone(phone)
        answered: list[str] = []
        if meaning == "reply":  # "4, thank you": the answer to an open feedback question
            answered = await feedback.take_answer(
                self._parts, patients, self.name, form.get("Body", "")
            )
        for patient_id in patients:
            if patient_id in answered:
                continue
            event_id = message_id if len(patients) == 1 else f"{message_id}:{patient_id}"
            await self._parts.publish_outcome(
                OutcomeEvent(
                    event_id=event_id,
                    occurred_at=now,
                    source="notifier",
                    outcome=meaning,
                    patient_id=patient_id,
                    channel=self.name,
                )
            )
        log.info("sms_reply", meaning=meaning, message_id=message_id, patients=len(patients))
        phrase = CONFIRMATIONS.get(meaning) or ("feedback_thanks" if answered else None)
        if phrase is None:
            return web.Response(text="<Response/>", content_type="application/xml")
        # STOP, START and HELP are answered at once, in the patient's language (that of
        # the records with this number when they agree, else that of the word itself).
        languages = {c.language for p in patients if (c := await self._parts.directory.contact(p))}
        language = languages.pop() if len(languages) == 1 else reading.language
        text = self._parts.book.phrase(language or self._parts.book.default_language, phrase)
        return web.Response(text=twiml_message(text), content_type="application/xml")


CONFIRMATIONS = {"opt_out": "sms_stopped", "opt_in": "sms_started", "help": "sms_help"}


def twiml_message(text: str) -> str:
    """A TwiML answer that sends ``text`` back to whoever wrote."""
    return f"<Response><Message>{xml_escape(text)}</Message></Response>"


def build(parts: Parts) -> SmsChannel:
    s = parts.settings
    providers: list[TwilioProvider] = []
    for role in ("primary", "secondary"):
        url = getattr(s, f"sms_{role}_url")
        if not url:
            continue
        providers.append(
            TwilioProvider(
                name=role,
                base_url=url,
                account_sid=getattr(s, f"sms_{role}_sid"),
                auth_token=getattr(s, f"sms_{role}_token"),
                from_number=getattr(s, f"sms_{role}_from"),
                clock=parts.clock,
                per_second=s.sms_rate_per_second,
            )
        )
    return SmsChannel(parts, providers)
