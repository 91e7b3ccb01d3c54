"""Sites: the clinics one deployment serves, each with its declarative profile.

A clinic chain runs one followup for all its clinics. Each **site** has a profile in one
YAML file (``FOLLOWUP_SITES_PATH``): its zone, its names and signatures per language, its
phone, business hours and call slots, closure days, departments, cadence overrides,
call-task sinks (credentials named by environment variable, never inline), escalation
contacts, quiet hours, frequency caps and default language. The file is validated at
start-up (``<path>:<line>: <what is wrong>``, like the cadence policy) and reloaded when it
changes (a broken new version is refused and the last good one kept).

Without a file the deployment is one implicit site: nothing is attributed (``site`` stays
``None`` on every event) and every rule reads the deployment's own settings, as before.

Every inbound message is attributed to a site by the names the scheduling system gives it
(HL7 MSH-4 / PV1-3.4, FHIR Location / Organization, the JSON contract's ``site``): a site's
id or one of its ``facilities``. A name no site claims is refused (``UnknownSite``).
"""

from __future__ import annotations

import os
import re
import time as _time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, time
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from common import logs
from common.yaml_lines import parse_mapping

log = logs.get_logger(__name__)

SiteId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
# The label of a site no profile names (metrics stay bounded by the file).
OTHER = "other"
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]{0,100}$")]
LanguageCode = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]
HourRange = Annotated[str, StringConstraints(pattern=r"^\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}$")]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Channel = Literal["call_task", "sms", "email"]
# Names a credential may not carry inline: the profile names the variable that holds it.
_SECRET_WORDS = re.compile(r"secret|token|password|api_key|credential", re.IGNORECASE)


E = TypeVar("E", bound=BaseModel)


class SiteError(Exception):
    """A sites file that cannot be used; the message names the file and the line."""


class UnknownSite(LookupError):
    """An inbound message names no configured site; ``field`` is where it was looked for."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field}: no configured site has this name")
        self.field = field


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("expected an IANA time-zone name such as Europe/Vilnius") from None
    return value


@cache
def holiday_countries() -> frozenset[str]:
    """The country codes the holidays package knows: built once per process (the list
    takes some 30 ms to build; a chain's every profile and cadence layer asks)."""
    import holidays  # imported late and once: the list is slow to build

    return frozenset(holidays.list_supported_countries())


def _country(value: str | None) -> str | None:
    if value is not None and value not in holiday_countries():
        raise ValueError("expected a country code the holidays package knows (LT, BG, RU, ...)")
    return value


def _sms_sender(value: str | None) -> str | None:
    # What carriers take as a sender: an E.164 number, or an alphanumeric id of 1-11
    # letters, digits and spaces with at least one letter (an all-digit id reads as a number).
    if value is None or re.fullmatch(r"\+[1-9][0-9]{6,14}", value):
        return value
    if re.fullmatch(r"[A-Za-z0-9 ]{1,11}", value) and re.search(r"[A-Za-z]", value):
        return value
    raise ValueError("expected an E.164 number (+35929000000) or an alphanumeric sender id")


class _Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuietHours(_Profile):
    hours: HourRange = "21:00-08:00"
    channels: list[Channel] = ["sms", "email"]

    @model_validator(mode="after")
    def _real_times(self) -> QuietHours:
        for part in self.hours.split("-"):
            hours, minutes = (int(p) for p in part.strip().split(":"))
            if not (hours < 24 and minutes < 60) and (hours, minutes) != (24, 0):
                raise ValueError("hours: hours are 00-23 and minutes 00-59")
        return self


class Caps(_Profile):
    """Frequency caps per patient over all cases (rolling 24 h / 7 days); calls apart."""

    messages_per_day: int = Field(default=1, ge=1)
    messages_per_week: int = Field(default=3, ge=1)
    calls_per_day: int = Field(default=2, ge=1)
    calls_per_week: int = Field(default=5, ge=1)


class Escalation(_Profile):
    """Whom to escalate to when the plan names nobody, and the clinician on call."""

    supervisor_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    on_call_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


# The names of the notifier's sink registry (services/notifier/registry.py).
SinkKind = Literal[
    "webhook",
    "email",
    "kafka",
    "caldav",
    "fhir_task",
    "jira",
    "zendesk",
    "slack",
    "teams",
    "mattermost",
]


class Sink(_Profile):
    """One call-task sink of the site. Where it is (``url``, ``to``) is configuration; what
    opens it is a credential, named by the environment variable (a Secret) that holds it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: SinkKind
    url: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    to: Annotated[str, StringConstraints(min_length=1, max_length=300)] | None = None

    @model_validator(mode="after")
    def _credentials_by_name(self) -> Sink:
        for key, value in (self.model_extra or {}).items():
            if not key.endswith("_env"):
                hint = (
                    " by its variable (secret_env, token_env)" if _SECRET_WORDS.search(key) else ""
                )
                raise ValueError(f"{key}: not a sink field; name a credential{hint}")
            if not isinstance(value, str) or not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,100}", value):
                raise ValueError(f"{key}: expected the name of an environment variable")
        return self

    def credential_variables(self) -> dict[str, str]:
        return {k: str(v) for k, v in (self.model_extra or {}).items()}


class SiteProfile(_Profile):
    """One clinic of the chain."""

    id: SiteId = Field(description="Set from the key of the file's `sites` mapping.")
    facilities: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list,
        description="Other names the scheduling systems give this site: HL7 MSH-4 / PV1-3.4,"
        " FHIR Location or Organization ids (the site's id always counts).",
    )
    timezone: Annotated[str, AfterValidator(_zone)]
    default_language: LanguageCode = "en"
    names: dict[LanguageCode, Annotated[str, StringConstraints(min_length=1, max_length=200)]] = (
        Field(default_factory=dict)
    )
    signatures: dict[
        LanguageCode, Annotated[str, StringConstraints(min_length=1, max_length=500)]
    ] = Field(default_factory=dict)
    phone: Annotated[str, StringConstraints(min_length=3, max_length=40)] | None = None
    # The number (or alphanumeric sender id) this clinic's texts come from, registered with
    # the SMS provider for its country; none: the deployment's FOLLOWUP_SMS_*_FROM.
    sms_from: Annotated[str | None, AfterValidator(_sms_sender)] = None
    rebook_url: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    departments: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=list
    )
    default_department: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    business_hours: dict[Weekday, HourRange | None] | None = None
    call_slots: (
        dict[Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,20}$")], HourRange] | None
    ) = None
    holidays_country: Annotated[str | None, AfterValidator(_country)] = None
    closures: list[date] = Field(default_factory=list)
    quiet_hours: QuietHours | None = None
    caps: Caps | None = None
    escalation: Escalation = Escalation()
    cadence: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the cadence policy for this site, laid out as the policy"
        " file (defaults, reasons, departments); validated by the scheduler at start-up.",
    )
    call_task_sinks: list[Sink] = Field(default_factory=list, max_length=20)
    api_token_env: EnvName | None = Field(
        default=None,
        description="The variable holding the bearer token of this site's front desk and"
        " supervisors: the case API, the worklist and the call results answer it for this"
        " site's cases only (one variable named by several sites: a token for all of them).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SiteProfile:
        if (
            self.default_department
            and self.departments
            and self.default_department not in self.departments
        ):
            raise ValueError("default_department: not one of the site's departments")
        if self.departments:
            named = self.cadence.get("departments") or {}
            if isinstance(named, dict):
                for department in named:
                    if department not in self.departments:
                        raise ValueError(
                            f"cadence.departments.{department}: not one of the site's departments"
                        )
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def quiet_times(self) -> tuple[time, time] | None:
        """The profile's quiet hours as (start, end) local times; "-24:00" ends at 23:59."""
        if self.quiet_hours is None:
            return None
        start, end = (part.strip() for part in self.quiet_hours.hours.split("-"))

        def at(text: str) -> time:
            hours, minutes = (int(p) for p in text.split(":"))
            return time(23, 59) if (hours, minutes) == (24, 0) else time(hours, minutes)

        return at(start), at(end)

    def policy_overlay(self) -> dict[str, Any]:
        """The profile's hours, closures, quiet hours and escalation contacts as a layer of
        cadence rules (over every reason and department of the policy), the site's own
        ``cadence.defaults`` after it."""
        layer: dict[str, Any] = {}
        if self.business_hours is not None:
            layer["business_hours"] = dict(self.business_hours)
        if self.call_slots is not None:
            layer["call_slots"] = dict(self.call_slots)
        if self.holidays_country is not None:
            layer["country"] = self.holidays_country
        if self.closures:
            layer["closures"] = [d.isoformat() for d in self.closures]
        if self.quiet_hours is not None:
            layer["quiet_hours"] = self.quiet_hours.model_dump()
        escalation = self.escalation.model_dump(exclude_none=True)
        if escalation:
            layer["escalation"] = escalation
        return layer


class _File(_Profile):
    sites: dict[SiteId, dict[str, Any]] = Field(min_length=1)
    default_site: SiteId | None = Field(
        default=None,
        description="The site of a message that names none (a feed of one clinic only).",
    )


@dataclass(frozen=True)
class Sites:
    """One version of the sites file (immutable); ``explicit`` is False without a file."""

    profiles: Mapping[str, SiteProfile]
    default_site: str | None = None
    source: str = ""

    @property
    def explicit(self) -> bool:
        return bool(self.profiles)

    @classmethod
    def implicit(cls) -> Sites:
        """A deployment without a sites file: one clinic, today's settings."""
        return cls({})

    def get(self, site: str | None) -> SiteProfile | None:
        return self.profiles.get(site) if site is not None else None

    def label(self, site: str | None) -> str:
        """A bounded metric label: a configured site's id, else ``other`` (none: ``none``)."""
        if site is None:
            return "none"
        return site if site in self.profiles else OTHER

    def attribute(self, names: Iterable[tuple[str, str | None]]) -> SiteProfile | None:
        """The site a message is about, from ``(field, name)`` pairs in order of trust.

        The first field with a name decides; a name no site claims raises ``UnknownSite``
        naming that field. No name at all: the file's ``default_site``, else a refusal
        naming the first field. Without a file: ``None`` (the implicit site)."""
        if not self.explicit:
            return None
        pairs = list(names)
        for field, name in pairs:
            if name:
                found = self._by_name.get(name)
                if found is None:
                    raise UnknownSite(field)
                return found
        if self.default_site is not None:
            return self.profiles[self.default_site]
        raise UnknownSite(pairs[0][0] if pairs else "site")

    def check_event(self, event: E) -> E:
        """A canonical event's ``site`` checked against the file (the JSON contract's way
        in): a site no profile names, or none where the file has no default, raises
        ``UnknownSite("site")``; none takes the default. Events without the field pass."""
        if not self.explicit or "site" not in type(event).model_fields:
            return event
        site = getattr(event, "site", None)
        if site is None:
            if self.default_site is None:
                raise UnknownSite("site")
            return event.model_copy(update={"site": self.default_site})
        if site not in self.profiles:
            raise UnknownSite("site")
        return event

    @property
    def _by_name(self) -> Mapping[str, SiteProfile]:
        found = self.__dict__.get("_names")
        if found is None:
            found = {}
            for profile in self.profiles.values():
                found[profile.id] = profile
                for name in profile.facilities:
                    found[name] = profile
            object.__setattr__(self, "_names", found)
        return found

    def tokens(self, environ: Mapping[str, str] | None = None) -> dict[str, frozenset[str]]:
        """Bearer token -> the sites it may see, from each profile's ``api_token_env``."""
        environ = os.environ if environ is None else environ
        scoped: dict[str, set[str]] = {}
        for profile in self.profiles.values():
            if profile.api_token_env and environ.get(profile.api_token_env):
                scoped.setdefault(environ[profile.api_token_env], set()).add(profile.id)
        return {token: frozenset(sites) for token, sites in scoped.items()}

    # --- loading ------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str, environ: Mapping[str, str] | None = None) -> Sites:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SiteError(f"{path}: cannot read the sites file ({exc.strerror})") from None
        return cls.from_text(text, str(path), environ)

    @classmethod
    def from_text(
        cls, text: str, source: str = "<sites>", environ: Mapping[str, str] | None = None
    ) -> Sites:
        root, data = _parse(text, source)
        where = _Lines(source, root)
        try:
            document = _File.model_validate(data)
        except ValidationError as exc:
            raise where.fail(exc) from None
        profiles: dict[str, SiteProfile] = {}
        owner: dict[str, str] = {}
        for site_id, raw in document.sites.items():
            if not isinstance(raw, dict):
                raise where.at(("sites", site_id), f"site {site_id!r}: expected a mapping")
            try:
                profile = SiteProfile.model_validate({**raw, "id": site_id})
            except ValidationError as exc:
                raise where.fail(exc, ("sites", site_id)) from None
            for name in (site_id, *profile.facilities):
                if name in owner and owner[name] != site_id:
                    raise where.at(
                        ("sites", site_id, "facilities"),
                        f"sites.{site_id}.facilities: {name!r} also names site {owner[name]!r}",
                    )
                owner[name] = site_id
            _check_credentials(profile, where, environ)
            profiles[site_id] = profile
        if document.default_site is not None and document.default_site not in profiles:
            raise where.at(("default_site",), "default_site: not one of the sites")
        return cls(profiles, document.default_site, source)


def _check_credentials(
    profile: SiteProfile, where: _Lines, environ: Mapping[str, str] | None
) -> None:
    """A credential the profile names must be set: a missing Secret stops the start, not
    the first call task at 3 a.m."""
    if environ is None:
        return
    for index, sink in enumerate(profile.call_task_sinks):
        for key, variable in sink.credential_variables().items():
            if not environ.get(variable):
                raise where.at(
                    ("sites", profile.id, "call_task_sinks", index, key),
                    f"sites.{profile.id}.call_task_sinks.{index}.{key}: {variable} is not set",
                )


def _parse(text: str, source: str) -> tuple[yaml.Node, Any]:
    return parse_mapping(text, source, SiteError, "the sites file must be a mapping with 'sites'")


@dataclass(frozen=True)
class _Lines:
    source: str
    root: yaml.Node

    def at(self, path: tuple[str | int, ...], message: str) -> SiteError:
        node, marked = self.root, self.root
        for key in path:
            entry = _entry(node, key)
            if entry is None:
                break
            key_node, node = entry
            marked = key_node or node
        return SiteError(f"{self.source}:{marked.start_mark.line + 1}: {message}")

    def fail(self, exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> SiteError:
        error = exc.errors(include_url=False, include_input=False)[0]
        loc = tuple(p for p in error["loc"] if isinstance(p, str | int))
        message = str(error["msg"]).removeprefix("Value error, ")
        named = re.match(r"^([a-z_]+(?:\.[a-z_0-9]+)*): ", message)
        if named:  # a rule across fields names the field it is about
            loc = (*loc, *named[1].split("."))
            message = message[named.end() :]
        where = ".".join(str(p) for p in (*prefix, *loc)) or "sites"
        return self.at((*prefix, *loc), f"{where}: {message}")


def _entry(node: yaml.Node, key: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if str(key_node.value) == str(key):
                return key_node, value_node
    elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        return None, node.value[key]
    return None


class SiteRegistry:
    """The sites in force: the file's last good version, re-read when it changes.

    ``current()`` looks at the file's modification time at most every ``recheck_seconds``
    (real seconds: a property of the file, not of the clinic's clock). A new version that
    does not validate is refused with one log line and the last good one stays in force;
    ``listeners`` hear of every version taken (the scheduler rebuilds its site rules)."""

    def __init__(
        self,
        path: Path | str | None,
        *,
        environ: Mapping[str, str] | None = None,
        recheck_seconds: float = 5.0,
        monotonic: Callable[[], float] = _time.monotonic,
    ) -> None:
        self.path = Path(path) if path else None
        self._environ = environ
        self._recheck = recheck_seconds
        self._monotonic = monotonic
        self._listeners: list[Callable[[Sites], None]] = []
        self._stamp: tuple[float, int] | None = None
        self._checked = monotonic()
        self._tokens: tuple[Sites, dict[str, frozenset[str]]] | None = None
        if self.path is None:
            self._sites = Sites.implicit()
        else:
            # At start-up a wrong file is fatal: SiteError goes to the entry point.
            self._stamp = self._stat()
            self._sites = Sites.load(self.path, environ)

    @classmethod
    def fixed(cls, sites: Sites) -> SiteRegistry:
        """A registry that never re-reads (tests, tools)."""
        registry = cls(None)
        registry._sites = sites
        return registry

    def on_change(self, listener: Callable[[Sites], None]) -> None:
        self._listeners.append(listener)
        listener(self._sites)

    def current(self) -> Sites:
        if self.path is None:
            return self._sites
        now = self._monotonic()
        if now - self._checked < self._recheck:
            return self._sites
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp:
            return self._sites
        self._stamp = stamp
        try:
            sites = Sites.load(self.path, self._environ)
            for listener in self._listeners:
                listener(sites)  # a listener may refuse it (SiteError): the old one stays
        except SiteError as exc:
            log.warning("sites_reload_refused", error=str(exc))
            return self._sites
        self._sites = sites
        log.info("sites_reloaded", sites=len(sites.profiles))
        return sites

    def tokens(self) -> Mapping[str, frozenset[str]]:
        """The sites' bearer tokens as the version in force names them (``Sites.tokens``),
        worked out once per version: a changed file's tokens count without a restart."""
        sites = self.current()
        if self._tokens is None or self._tokens[0] is not sites:
            self._tokens = (sites, sites.tokens(self._environ))
        return self._tokens[1]

    def _stat(self) -> tuple[float, int] | None:
        assert self.path is not None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime, st.st_size)
