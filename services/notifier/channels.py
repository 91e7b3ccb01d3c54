"""The one shape every channel (SMS, email, call task) and call-task sink has.

A **channel** turns one NotificationCommand into what its provider takes (``render``,
pure), hands it over (``send``), serves its provider's inbound HTTP routes (receipts,
replies, bounces, results) and maps its provider's vocabulary to ``schemas`` outcomes
there. A **call-task sink** is where administrators see call tasks (a webhook, a mail, a
topic); the call-task channel fans a task out to the configured sinks. Both are plug-ins:
``registry.py`` names them, configuration picks them, and the dispatcher and the HTTP
server only ever see these interfaces.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from common.clock import Clock
from common.http import bearer_token_ok
from schemas.base import Channel
from schemas.events import (
    CallTaskEvent,
    NotificationCommand,
    OutcomeEvent,
    OutcomeKind,
    StageEducation,
)
from services.notifier.call_reports import CallReport
from services.notifier.contacts import Contact
from services.notifier.settings import by_language
from services.notifier.templates import REASONS, MessageContext

if TYPE_CHECKING:
    from common.audit import AuditLog
    from common.kafka import KafkaPublisher
    from common.sites import SiteRegistry
    from schemas.topics import TopicNames
    from services.notifier.directory import Directory
    from services.notifier.email_channel import Mailer
    from services.notifier.ledger import Ledger
    from services.notifier.settings import NotifierSettings
    from services.notifier.templates import TemplateBook

Publish = Callable[[OutcomeEvent], Awaitable[None]]


# --- what a send returns or raises -------------------------------------------------------


@dataclass(frozen=True)
class SendReceipt:
    provider: str
    provider_id: str | None = None
    # A call-task sink whose receiver answered with the call's result at once.
    report: CallReport | None = None


class TransientSendError(Exception):
    """Try again later (timeout, 5xx, 429, SMTP 4xx, connection refused)."""

    def __init__(self, provider: str, code: str) -> None:
        super().__init__(f"{provider}: {code}")
        self.provider = provider
        self.code = code


class PermanentSendError(Exception):
    """Will never work as asked; ``detail`` is a reason code for the outcome, ``failed``
    unless the provider showed the channel impossible (``channel_impossible``: a landline)."""

    def __init__(self, provider: str, detail: str, outcome: OutcomeKind = "failed") -> None:
        super().__init__(f"{provider}: {detail}")
        self.provider = provider
        self.detail = detail
        self.outcome: OutcomeKind = outcome


@dataclass(frozen=True)
class Sent:
    """What a channel's send ended in: the outcome the ledger records for the command."""

    outcome: OutcomeKind  # sent | task_created | withdrawn
    provider: str | None = None  # counted under sends_total{result="sent"} when given
    provider_id: str | None = None
    detail: str | None = None
    respond_by: datetime | None = None


@dataclass(frozen=True)
class Job:
    """One ledger row being delivered: its command and the patient's contact (if known)."""

    command: NotificationCommand
    contact: Contact | None
    sinks_done: tuple[str, ...] = ()  # call-task sinks that already have it (a retry)


# --- the rules a channel brings to the dispatcher's decision ------------------------------


@dataclass(frozen=True)
class ChannelRules:
    """What the pure ``dispatcher.decide`` needs to know about a channel, as data."""

    consent: str  # the contact's consent flag: sms | email | call
    # A message the patient reads: quiet hours hold it and the runaway guard counts it.
    reaches_patient: bool
    # After a crash mid-send: send again (the receiver dedupes it) or report it unknown.
    resend_when_unsure: bool
    # The reason code when the contact lacks what this channel needs (a phone, an address).
    missing: Callable[[Contact], str | None]


# --- inbound routes ----------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str  # "POST", "GET" or "*"
    path: str
    handler: Handler


def require_bearer(request: web.Request, token: str) -> None:
    """Administrators' and forwarders' routes: the API's bearer token or 401."""
    if not bearer_token_ok(request, token):
        raise web.HTTPUnauthorized(text="a valid bearer token is required")


def bearer_scope(
    request: web.Request, token: str, sites: SiteRegistry | None
) -> frozenset[str] | None:
    """The sites a caller may act for: None for the API's own token (every site), a site
    token's sites (its profile's ``api_token_env``), else 401."""
    if bearer_token_ok(request, token):
        return None
    for site_token, scope in (sites.tokens() if sites is not None else {}).items():
        if bearer_token_ok(request, site_token):
            return scope
    raise web.HTTPUnauthorized(text="a valid bearer token is required")


# --- the plug-in interfaces --------------------------------------------------------------


class Plugin(Protocol):
    @property
    def name(self) -> str:
        """Its name in the registry and in metric labels."""
        ...

    def routes(self) -> Sequence[Route]:
        """Its inbound HTTP routes (mounted on the service's one port)."""
        ...

    async def close(self) -> None: ...


class MessageChannel(Plugin, Protocol):
    """SMS, email, call task: one per ``NotificationCommand.channel``."""

    @property
    def name(self) -> Channel: ...

    @property
    def rules(self) -> ChannelRules: ...

    def render(self, command: NotificationCommand, contact: Contact) -> object:
        """What would go out for this command and contact (pure; no I/O)."""
        ...

    async def send(self, job: Job) -> Sent:
        """Render and hand over; raises TransientSendError / PermanentSendError."""
        ...


class CallTaskSink(Plugin, Protocol):
    """Where administrators see call tasks (create and withdraw of the same task id)."""

    async def deliver(self, task: CallTaskEvent) -> SendReceipt: ...


class NoRoutes:
    """Mix-in for plug-ins without inbound routes or anything to close."""

    def routes(self) -> Sequence[Route]:
        return ()

    async def close(self) -> None:
        return None


# --- what plug-ins are built from --------------------------------------------------------


@dataclass(frozen=True)
class ClinicVoice:
    """Who is writing and how to rebook: what every rendered message says of the clinic.

    ``names`` and ``signatures`` are per language (``FOLLOWUP_CLINIC_NAMES``,
    ``FOLLOWUP_CLINIC_SIGNATURES``); a language without one takes ``clinic_name`` (a
    proper name reads the same in every language), and without that the language's own
    generic word from its templates (``phrases.clinic``): never English in another text.
    """

    clinic_name: str
    clinic_phone: str
    rebook_url: str | None
    default_language: str
    names: Mapping[str, str] = field(default_factory=dict)
    signatures: Mapping[str, str] = field(default_factory=dict)
    # The department's own explanation of its stages (FOLLOWUP_EDUCATION), by department.
    education: Mapping[str, Sequence[StageEducation]] = field(default_factory=dict)
    # The message's own rebooking link (rebooking.py), when rebooking by link is on; a
    # redacted message (shared number, proxy) names no one, so it gets the general URL.
    link_for: Callable[[NotificationCommand], str | None] | None = None
    # The clinics of a chain (common/sites.py): a command naming a site speaks as it.
    sites: SiteRegistry | None = None
    # The SMS sender of a chain's clinic (its profile's sms_from); None: the provider's own.
    sms_from: str | None = None

    def education_for(self, command: NotificationCommand, language: str) -> StageEducation | None:
        """The stage explained in ``language`` (or its base language): the plan's own, else
        the department's; None rather than another language's text."""
        for given in (command.education, self.education.get(command.department, ())):
            found = {e.language: e for e in given}
            chosen = found.get(language) or found.get(language.split("-", 1)[0])
            if chosen is not None:
                return chosen
        return None

    def for_site(self, site: str | None) -> ClinicVoice:
        """The voice of ``site``'s profile (its names, signatures, phone, rebooking page and
        language; what it leaves out, the deployment's); no profile: this one."""
        profile = self.sites.current().get(site) if self.sites is not None else None
        if profile is None:
            return self
        return ClinicVoice(
            clinic_name=by_language(profile.names, profile.default_language) or self.clinic_name,
            clinic_phone=profile.phone or self.clinic_phone,
            rebook_url=profile.rebook_url or self.rebook_url,
            default_language=profile.default_language,
            names=profile.names,
            signatures=profile.signatures,
            education=self.education,  # by department, whichever clinic of the chain
            sites=self.sites,
            link_for=self.link_for,
            sms_from=profile.sms_from or self.sms_from,
        )

    def name_for(self, language: str) -> str:
        return by_language(self.names, language) or self.clinic_name

    def signature_for(self, language: str) -> str | None:
        return by_language(self.signatures, language)

    def context(
        self, command: NotificationCommand, contact: Contact, *, redacted: bool = False
    ) -> MessageContext:
        if command.site is not None and self.sites is not None:
            return self.for_site(command.site)._context(command, contact, redacted=redacted)
        return self._context(command, contact, redacted=redacted)

    def _context(
        self, command: NotificationCommand, contact: Contact, *, redacted: bool
    ) -> MessageContext:
        return MessageContext.for_command(
            command,
            contact,
            reason=command.template if command.template in REASONS else command.reason,
            clinic_name=self.name_for(contact.language),
            clinic_phone=self.clinic_phone,
            rebook_url=(self.link_for(command) if self.link_for and not redacted else None)
            or self.rebook_url,
            redacted=redacted,
            signature=self.signature_for(contact.language),
            education=self.education_for(command, contact.language),
        )


@dataclass
class Parts:
    """The adapters a plug-in factory may use; built once by the composition root."""

    settings: NotifierSettings
    clock: Clock
    book: TemplateBook
    voice: ClinicVoice
    ledger: Ledger
    directory: Directory
    publisher: KafkaPublisher
    topics: TopicNames
    publish_outcome: Publish
    public_base_url: str
    mailer: Mailer | None  # one SMTP connection, shared by the email channel and sink
    sinks: Sequence[CallTaskSink] = ()  # set before the call-task channel is built
    # Reads of personal data through the pages (common/audit.py); None in unit tests only.
    audit: AuditLog | None = None
    # Each site's own call-task sinks (its profile's call_task_sinks), built at start-up.
    site_sinks: Mapping[str, Sequence[CallTaskSink]] = field(default_factory=dict)


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
        # The slot is taken before sleeping: concurrent sends on one channel (the
        # dispatcher's) each get their own, rather than all waking at the same moment.
        slot = now if self._next is None or now >= self._next else self._next
        self._next = slot + timedelta(seconds=self._interval)
        if slot > now:
            await self._clock.sleep((slot - now).total_seconds())
