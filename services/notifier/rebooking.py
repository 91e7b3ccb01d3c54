"""Rebooking by link: the page's HTTP routes, what the patient asked for, and the hospital's
booking that answers it (the pure parts are in rebook_links.py and slots.py).

- ``GET /r/{token}``: the page (free slots before the stage deadline, "call me back").
  Expired 410, tampered 400, unknown 404, already used 409 (saying what was asked and
  whether the hospital has booked it yet). Records nothing but the metric.
- ``POST /r``: ``action=book`` + ``slot``: the case is claimed (``rebook_requests``, one
  request per case whatever link of it is used), the slot read again and the booking
  requested at the hospital (``SlotSource.request_booking``); taken meanwhile -> 409 with
  the next free slots. The page then says "requested": followup books nothing itself.
  ``action=callback`` + ``call_at``: an ``OutcomeEvent`` ``callback_requested`` of the
  message's attempt with ``respond_by`` = the chosen moment (the scheduler plans a call
  task then, as for a call result; "soon" leaves it unset: the next call the cadence
  places), event id ``rebook:<case>:callback``.
- ``followup.appointments``: a booking of the patient at the requested start (or naming
  the Appointment we requested) turns the request ``confirmed``. The case itself is closed
  by the scheduler from the same event (recovered; a pending call task withdrawn), not here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from aiohttp import web

from common.clock import Clock
from common.config import ConfigError
from common.logs import get_logger
from schemas.base import MESSENGERS
from schemas.events import AppointmentEvent, NotificationCommand
from services.notifier import localise, metrics, rebook_links
from services.notifier.channels import Parts, Route
from services.notifier.contacts import Contact
from services.notifier.outcomes import command_outcome
from services.notifier.report_links import LinkError, same_site
from services.notifier.settings import NotifierSettings
from services.notifier.slots import (
    BookingRequest,
    CachedSlots,
    FreeSlot,
    SlotFilter,
    SlotSource,
    SlotSourceError,
    SlotTaken,
)
from services.notifier.templates import REASONS, MessageContext

log = get_logger(__name__)
# The patient's own messages: SMS, email and the chat messengers (WhatsApp, Telegram, Viber).
CHANNELS_WITH_LINK: frozenset[str] = frozenset({"sms", "email", *MESSENGERS})
BOOKED = frozenset({"booked", "pending"})
CLAIM_LEASE = timedelta(seconds=60)  # a request under way longer than this died


@dataclass(frozen=True)
class RebookRequest:
    kind: str  # booking | callback
    state: str  # claimed | requested | confirmed
    slot_start: datetime | None
    callback_at: datetime | None


class RebookStore:
    """``rebook_requests``: load and save only."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record_link(self, link_id: str, key: str, expires_at: datetime) -> None:
        await self._pool.execute(
            """INSERT INTO rebook_links (link_id, idempotency_key, expires_at)
               VALUES ($1, $2, $3) ON CONFLICT (link_id) DO NOTHING""",
            link_id,
            key,
            expires_at,
        )

    async def link(self, link_id: str) -> tuple[str, datetime] | None:
        row = await self._pool.fetchrow(
            "SELECT idempotency_key, expires_at FROM rebook_links WHERE link_id = $1", link_id
        )
        return (str(row["idempotency_key"]), row["expires_at"]) if row else None

    async def first_open(self, link_id: str, now: datetime) -> bool:
        """True the first time the link is opened."""
        opened = await self._pool.fetchval(
            """UPDATE rebook_links SET opened_at = $2
               WHERE link_id = $1 AND opened_at IS NULL RETURNING 1""",
            link_id,
            now,
        )
        return opened is not None

    async def request_of(self, case_id: str) -> RebookRequest | None:
        row = await self._pool.fetchrow(
            "SELECT kind, state, slot_start, callback_at FROM rebook_requests WHERE case_id = $1",
            case_id,
        )
        return RebookRequest(**dict(row)) if row else None

    async def claim(
        self, command: NotificationCommand, kind: str, now: datetime, callback_at: datetime | None
    ) -> bool:
        """True when this request is the case's first (or takes over one that died)."""
        state = "requested" if kind == "callback" else "claimed"
        claimed = await self._pool.fetchval(
            """INSERT INTO rebook_requests (case_id, patient_id, idempotency_key, kind, state,
                   callback_at, requested_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (case_id) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key,
                   kind = EXCLUDED.kind, state = EXCLUDED.state,
                   callback_at = EXCLUDED.callback_at, requested_at = EXCLUDED.requested_at
               WHERE rebook_requests.state = 'claimed' AND rebook_requests.requested_at < $8
               RETURNING 1""",
            command.case_id,
            command.patient_id,
            command.idempotency_key,
            kind,
            state,
            callback_at,
            now,
            now - CLAIM_LEASE,
        )
        return claimed is not None

    async def release(self, case_id: str) -> None:
        await self._pool.execute(
            "DELETE FROM rebook_requests WHERE case_id = $1 AND state = 'claimed'", case_id
        )

    async def requested(self, case_id: str, slot: FreeSlot, reference: str) -> None:
        await self._pool.execute(
            """UPDATE rebook_requests SET state = 'requested', slot_id = $2, slot_start = $3,
                   reference = $4 WHERE case_id = $1""",
            case_id,
            slot.slot_id,
            slot.start,
            reference,
        )

    async def confirm(self, event: AppointmentEvent, now: datetime) -> int:
        """Requests of the patient this booking answers -> confirmed; how many."""
        ids = [event.appointment_id, *event.other_ids]
        done = await self._pool.fetchval(
            """WITH done AS (UPDATE rebook_requests SET state = 'confirmed', confirmed_at = $4
                   WHERE patient_id = $1 AND state = 'requested' AND kind = 'booking'
                     AND (slot_start = $2 OR reference = ANY($3::text[])) RETURNING 1)
               SELECT count(*) FROM done""",
            event.patient_id,
            event.start,
            ids,
            now,
        )
        return int(done or 0)


def build_source(settings: NotifierSettings, clock: Clock) -> CachedSlots | None:
    """The configured slot source behind its short cache, None when rebooking is off;
    ConfigError for a setting it lacks (the service does not start)."""
    s = settings
    if not s.slots_source:
        return None
    if not s.link_secret:
        raise ConfigError("rebooking: FOLLOWUP_SLOTS_SOURCE needs FOLLOWUP_LINK_SECRET")
    source: SlotSource
    if s.slots_source == "fhir":
        if not s.slots_fhir_url:
            raise ConfigError("rebooking: FOLLOWUP_SLOTS_SOURCE=fhir needs FOLLOWUP_SLOTS_FHIR_URL")
        from services.notifier.slots_fhir import FhirSlots

        source = FhirSlots(
            s.slots_fhir_url,
            token=s.slots_fhir_token,
            search=s.slots_fhir_search,
            department_actor=s.slots_department_actor,
            booking_state=s.slots_booking_status,
        )
    else:
        if not s.slots_hl7_host:
            raise ConfigError("rebooking: FOLLOWUP_SLOTS_SOURCE=hl7 needs FOLLOWUP_SLOTS_HL7_HOST")
        from services.notifier.slots_hl7 import Hl7Slots, client_tls

        if s.slots_hl7_tls_cert and not s.slots_hl7_tls_ca:
            raise ConfigError(
                "rebooking: FOLLOWUP_SLOTS_HL7_TLS_CERT needs FOLLOWUP_SLOTS_HL7_TLS_CA"
            )
        source = Hl7Slots(
            s.slots_hl7_host,
            s.slots_hl7_port,
            clock,
            facility=s.slots_hl7_facility,
            booking_state=s.slots_booking_status,
            tls=client_tls(s.slots_hl7_tls_ca, s.slots_hl7_tls_cert, s.slots_hl7_tls_key)
            if s.slots_hl7_tls_ca
            else None,
        )
    return CachedSlots(source, clock, timedelta(minutes=s.slots_cache_minutes))


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


class Rebooking:
    """The rebooking link's routes and the link itself for the messages (``link_for``)."""

    name = "rebooking"

    def __init__(self, parts: Parts, source: CachedSlots, store: RebookStore) -> None:
        self._parts = parts
        self._source = source
        self._store = store
        s = parts.settings
        self._valid = timedelta(days=s.rebook_link_days)
        self._lead = timedelta(hours=s.slots_lead_hours)
        self._horizon = timedelta(days=s.slots_horizon_days)
        self._offered = s.slots_offered
        # A short host for the link keeps an SMS within its segments (docs/rebooking.md).
        self._base = (s.rebook_base_url or parts.public_base_url).rstrip("/")

    # --- the link in the messages ----------------------------------------------------------

    def _carries_link(self, command: NotificationCommand) -> bool:
        return command.channel in CHANNELS_WITH_LINK and command.purpose == "follow_up"

    def link_for(self, command: NotificationCommand) -> str | None:
        """The message's own link (SMS, email, messenger of a follow-up); None otherwise. Pure:
        the id was stored when the command was accepted (``accepting``)."""
        if not self._carries_link(command):
            return None
        metrics.REBOOK_LINKS.labels(command.channel).inc()
        return rebook_links.link_for(self._parts.settings.link_secret, self._base, command)

    def accepting(
        self, accept: Callable[[NotificationCommand], Awaitable[None]]
    ) -> Callable[[NotificationCommand], Awaitable[None]]:
        """``accept`` (the dispatcher's) after the command's link is stored (idempotent)."""

        async def accepted(command: NotificationCommand) -> None:
            if self._carries_link(command):
                await self._store.record_link(
                    rebook_links.link_id(self._parts.settings.link_secret, command.idempotency_key),
                    command.idempotency_key,
                    rebook_links.link_expiry(command, self._valid),
                )
            await accept(command)

        return accepted

    def routes(self) -> Sequence[Route]:
        return (
            Route("GET", f"{rebook_links.PATH}/{{token}}", self.show),
            Route("POST", rebook_links.PATH, self.ask),
        )

    async def close(self) -> None:
        await self._source.close()

    # --- the hospital's booking --------------------------------------------------------------

    async def record_appointment(self, event: AppointmentEvent) -> None:
        if event.status not in BOOKED or event.start is None or event.change == "cancelled":
            return
        confirmed = await self._store.confirm(event, self._parts.clock.now())
        if confirmed:
            metrics.REBOOK_CONFIRMED.inc(confirmed)

    # --- the page ------------------------------------------------------------------------------

    def _page(self, html: str, status: int = 200) -> web.Response:
        response = web.Response(text=html, status=status, content_type="text/html")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self';"
            " frame-ancestors 'none'"
        )
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def _refuse(self, language: str, key: str, status: int) -> _Refused:
        metrics.REBOOK_PAGES.labels(key).inc()
        phone = self._parts.settings.clinic_phone
        return _Refused(self._page(rebook_links.message_page(language, key, phone=phone), status))

    async def _open(
        self, request: web.Request, token: str
    ) -> tuple[NotificationCommand, Contact | None, str]:
        """The link's message, its patient's contact and the page's language, or _Refused."""
        language = localise.pick_language(
            request.headers.get("Accept-Language"), self._parts.settings.default_language
        )
        # A phone's linkifier may take the sentence's full stop into the link.
        token = token.rstrip(".,;:!?)")
        secret = self._parts.settings.link_secret
        try:
            if not rebook_links.well_formed(token):
                raise LinkError("invalid")
            stored = await self._store.link(token)
            if stored is None:
                raise LinkError("invalid")
            key, expires_at = stored
            rebook_links.check(secret, token, key, expires_at, self._parts.clock.now())
        except LinkError as exc:
            raise self._refuse(language, exc.why, 410 if exc.why == "expired" else 400) from None
        command = await self._parts.ledger.follow_up(key)
        if command is None:
            raise self._refuse(language, "invalid", 404)
        contact, status = await self._parts.directory.recipient(command.patient_id)
        if status is not None and status != "active":
            raise self._refuse(language, "invalid", 404)
        if contact is not None:
            language = localise.language_of(contact.language)
        return command, contact, language

    async def _used(
        self, command: NotificationCommand, contact: Contact | None, language: str
    ) -> web.Response | None:
        """The page of a link whose case already asked (409), saying what and how it stands."""
        asked = await self._store.request_of(command.case_id)
        if asked is None or asked.state == "claimed":
            return None
        metrics.REBOOK_PAGES.labels("used").inc()
        zone = self._zone(command, contact)
        start = asked.slot_start
        time = localise.format_visit_time(start, zone, language) if start else None
        return self._page(rebook_links.used_page(language, asked.kind, asked.state, time), 409)

    def _zone(self, command: NotificationCommand, contact: Contact | None) -> str:
        return contact.timezone if contact is not None else command.timezone

    def _facts(
        self, command: NotificationCommand, contact: Contact | None, language: str, token: str
    ) -> rebook_links.PageFacts:
        p = self._parts
        reason = command.template if command.template in REASONS else command.reason
        context = MessageContext.for_command(
            command,
            contact,
            reason=reason,
            clinic_name=p.voice.name_for(language),
            clinic_phone=p.voice.clinic_phone,
            rebook_url=None,
        )
        return rebook_links.PageFacts(
            language=language,
            zone=self._zone(command, contact),
            token=token,
            first_name=contact.given_name if contact is not None else None,
            opening=p.book.opening(language, context),
            stage_name=command.stage_name,
            stage_deadline=command.stage_deadline,
            clinic_phone=p.voice.clinic_phone,
        )

    async def _slots(self, command: NotificationCommand) -> Sequence[FreeSlot] | None:
        wanted = SlotFilter.for_command(command, self._parts.clock.now(), self._lead, self._horizon)
        if wanted.before <= wanted.after:
            return []
        try:
            return await self._source.free_slots(wanted, self._offered)
        except SlotSourceError as exc:
            log.warning("rebook_slots_unavailable", source=self._source.name, error=str(exc))
            return None

    async def _choices(
        self,
        command: NotificationCommand,
        contact: Contact | None,
        language: str,
        token: str,
        *,
        notice: str | None = None,
        status: int = 200,
    ) -> web.Response:
        slots = await self._slots(command)
        if slots:
            metrics.REBOOK_SLOTS_OFFERED.inc(len(slots))
        facts = self._facts(command, contact, language, token)
        callbacks = rebook_links.callback_choices(self._parts.clock.now(), facts.zone)
        html = rebook_links.choice_page(facts, slots, callbacks, notice=notice)
        return self._page(html, status)

    async def show(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        try:
            command, contact, language = await self._open(request, token)
        except _Refused as refused:
            return refused.response
        used = await self._used(command, contact, language)
        if used is not None:
            return used
        metrics.REBOOK_PAGES.labels("opened").inc()
        now = self._parts.clock.now()
        if await self._store.first_open(token.rstrip(".,;:!?)"), now):
            # The front desk sees it on the case and in the next call task's history.
            await self._parts.publish_outcome(
                command_outcome(command, "link_opened", now, reported_by="rebook_link")
            )
        return await self._choices(command, contact, language, token)

    async def ask(self, request: web.Request) -> web.Response:
        if not same_site(
            request.headers.get("Origin"),
            request.headers.get("Sec-Fetch-Site"),
            self._parts.public_base_url,
        ):
            language = localise.pick_language(
                request.headers.get("Accept-Language"), self._parts.settings.default_language
            )
            return self._refuse(language, "cross_site", 403).response
        form = await request.post()
        token = form.get("token")
        token = token if isinstance(token, str) else ""
        try:
            command, contact, language = await self._open(request, token)
        except _Refused as refused:
            return refused.response
        used = await self._used(command, contact, language)
        if used is not None:
            return used
        if form.get("action") == "callback":
            return await self._callback(command, contact, language, token, form.get("call_at"))
        slot_id = form.get("slot")
        if not isinstance(slot_id, str) or not slot_id:
            return await self._choices(
                command, contact, language, token, notice="choose", status=400
            )
        return await self._book(command, contact, language, token, slot_id)

    async def _book(
        self,
        command: NotificationCommand,
        contact: Contact | None,
        language: str,
        token: str,
        slot_id: str,
    ) -> web.Response:
        now = self._parts.clock.now()
        offered = await self._slots(command) or ()
        slot = next((s for s in offered if s.slot_id == slot_id), None)
        if slot is None:
            return await self._taken(command, contact, language, token)
        if not await self._store.claim(command, "booking", now, None):
            return (
                await self._used(command, contact, language)
                or self._refuse(language, "used", 409).response
            )
        booking = BookingRequest(
            request_id=f"rebook:{command.case_id}",
            case_id=command.case_id,
            patient_id=command.patient_id,
            slot=slot,
            department=command.department,
            practitioner_id=command.practitioner_id,
        )
        try:
            receipt = await self._source.request_booking(booking)
        except SlotTaken:
            await self._store.release(command.case_id)
            return await self._taken(command, contact, language, token)
        except SlotSourceError as exc:
            await self._store.release(command.case_id)
            log.warning("rebook_booking_failed", source=self._source.name, error=str(exc))
            metrics.REBOOK_REQUESTS.labels("booking", "error").inc()
            return await self._choices(
                command, contact, language, token, notice="slots_unavailable", status=503
            )
        await self._store.requested(command.case_id, slot, receipt.reference)
        metrics.REBOOK_REQUESTS.labels("booking", "requested").inc()
        await self._parts.publish_outcome(
            command_outcome(
                command,
                "booking_requested",
                now,
                event_id=f"rebook:{command.case_id}:booking_requested",
                detail=receipt.state,
                reported_by="rebook_link",
            )
        )
        log.info("rebook_requested", case_id=command.case_id, source=self._source.name)
        time = localise.format_visit_time(slot.start, self._zone(command, contact), language)
        html = rebook_links.message_page(language, "requested", time=time)
        return self._page(html)

    async def _taken(
        self, command: NotificationCommand, contact: Contact | None, language: str, token: str
    ) -> web.Response:
        metrics.REBOOK_REQUESTS.labels("booking", "taken").inc()
        self._source.forget()  # what we offered was stale: ask the hospital again
        return await self._choices(command, contact, language, token, notice="taken", status=409)

    async def _callback(
        self,
        command: NotificationCommand,
        contact: Contact | None,
        language: str,
        token: str,
        call_at: object,
    ) -> web.Response:
        now = self._parts.clock.now()
        when: datetime | None = None
        if isinstance(call_at, str) and call_at != "soon":
            try:
                when = datetime.fromisoformat(call_at)
            except ValueError:
                when = None
            if when is None or when.tzinfo is None or not now < when < now + timedelta(days=14):
                return await self._choices(
                    command, contact, language, token, notice="choose", status=400
                )
        # Published before the claim: a crash between the two is healed by the next click,
        # and the repeated event id is dropped downstream.
        event = command_outcome(
            command,
            "callback_requested",
            now,
            event_id=f"rebook:{command.case_id}:callback",
            respond_by=when,
            reported_by="rebook_link",
        )
        await self._parts.publish_outcome(event)
        await self._store.claim(command, "callback", now, when)
        metrics.REBOOK_REQUESTS.labels("callback", "requested").inc()
        if when is None:
            html = rebook_links.message_page(language, "callback_asked")
        else:
            time = localise.format_visit_time(when, self._zone(command, contact), language)
            html = rebook_links.message_page(language, "callback_asked_at", time=time)
        return self._page(html)
