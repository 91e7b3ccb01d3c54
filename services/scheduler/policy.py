"""The cadence policy: a declarative YAML file, validated once at start-up into typed rules.

The file has ``defaults`` (a complete rule set), optional ``reasons`` (overrides per trigger
kind) and optional ``departments`` (overrides per department, each with its own optional
``reasons``). The rules for a case are the defaults overlaid by the reason's, then the
department's, then the department's reason's: mappings merge key by key, lists replace.
Every combination is resolved and validated at load time, so a wrong file stops the
scheduler at start-up with ``<path>:<line>: <what is wrong>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, time, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import holidays
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)

from common.ages import age_on
from common.sites import SiteError, Sites, holiday_countries
from common.yaml_lines import parse_mapping
from schemas.base import MESSENGERS, Channel, Id, TriggerKind

CHANNELS: tuple[Channel, ...] = get_args(Channel)
REASONS: tuple[TriggerKind, ...] = get_args(TriggerKind)
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)
DEFAULT_POLICY_PATH = Path(__file__).with_name("policy.yaml")


class PolicyError(Exception):
    """A policy file that cannot be used; the message names the file and the line."""


# --- value types -----------------------------------------------------------------------

_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?$"
)


def parse_duration(value: object) -> timedelta:
    """ISO 8601 periods (``PT2H``, ``P1D``, ``P1DT12H``, ``P1W``) or a number of hours."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return timedelta(hours=value)
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match and any(match.groupdict().values()) and not value.strip().endswith("T"):
            return timedelta(**{k: int(v) for k, v in match.groupdict().items() if v})
    raise ValueError("expected an ISO 8601 period such as PT2H, P1D, P1DT12H, or hours >= 0")


@dataclass(frozen=True)
class TimeRange:
    """Local times of day; ``end`` before ``start`` means the range runs over midnight."""

    start: time
    end: time

    @property
    def wraps(self) -> bool:
        return self.end <= self.start

    def contains(self, moment: time) -> bool:
        if self.wraps:
            return moment >= self.start or moment < self.end
        return self.start <= moment < self.end


_RANGE = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")


def parse_time_range(value: object) -> TimeRange:
    if isinstance(value, TimeRange):
        return value
    match = _RANGE.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError('expected a range of local times such as "08:00-18:00"')
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h2 == 24 and m2 == 0:
        h2, m2 = 23, 59  # "-24:00" reads naturally as the end of the day
    try:
        return TimeRange(time(h1, m1), time(h2, m2))
    except ValueError:
        raise ValueError("hours are 00-23 and minutes 00-59") from None


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
LocalTimes = Annotated[TimeRange, PlainValidator(parse_time_range)]
Template = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.{}-]+$")]


# --- the rules -------------------------------------------------------------------------


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Rules):
    """One step of the cadence: wait ``delay`` after the previous attempt, then use ``channel``.

    The first step's delay counts from the fact that opened the case (the missed visit).
    """

    delay: Duration
    channel: Channel
    template: Template | None = Field(
        default=None, description="Defaults to the rules' template for the channel."
    )


class QuietHours(_Rules):
    hours: LocalTimes = TimeRange(time(21, 0), time(8, 0))
    # Every message the patient reads on their phone: texts, mails and the messengers.
    channels: frozenset[Channel] = frozenset({"sms", "email", *MESSENGERS})


class EscalationRules(_Rules):
    template: Template = "stage_deadline_escalation"
    respond_within: Duration = timedelta(hours=4)
    supervisor_id: Id | None = Field(
        default=None, description="Whom to escalate to when the plan names no supervisor."
    )
    on_call_id: Id | None = Field(
        default=None,
        description="The clinician on call: a clinical concern goes to them at once "
        "(else the case's practitioner, else the supervisor).",
    )
    concern_template: Template = "clinical_concern_escalation"
    concern_respond_within: Duration = timedelta(hours=1)


class Routing(_Rules):
    """Who owns a call task: the department's team, else the practitioner's team, else the
    clinic-wide pool. A task is never dropped for lack of an owner."""

    team_id: Id | None = Field(default=None, description="The department's front-desk team.")
    practitioner_teams: dict[Id, Id] = Field(
        default_factory=dict, description="practitioner id -> the team that calls for them"
    )
    pool_id: Id = Field(default="clinic_pool", description="The clinic-wide pool.")

    def owner_for(self, practitioner_id: str | None) -> str:
        if self.team_id is not None:
            return self.team_id
        if practitioner_id is not None and practitioner_id in self.practitioner_teams:
            return self.practitioner_teams[practitioner_id]
        return self.pool_id


class Capacity(_Rules):
    """What one front desk (a department) can do in a day."""

    calls_per_day: int | None = Field(
        default=None, ge=1, le=100_000, description="Call tasks handed out per clinic day."
    )


class Safeguarding(_Rules):
    """Children who were not brought: for a patient under ``under_age`` (years, on the day of
    the missed visit), the ``missed_visits``-th missed visit makes the case a safeguarding
    case for the named lead; every message of a child's case addresses the parent or
    guardian. ``under_age`` null: the rule is off."""

    under_age: int | None = Field(
        default=None, ge=1, le=18, description="Younger than this (years) is a child."
    )
    missed_visits: int = Field(default=2, ge=1, le=20, description="Missed visits, this one too.")
    lead_id: Id | None = Field(default=None, description="The named safeguarding lead.")
    template: Template = "safeguarding_escalation"
    respond_within: Duration = timedelta(hours=4)

    @model_validator(mode="after")
    def _named_lead(self) -> Safeguarding:
        if self.under_age is not None and self.lead_id is None:
            raise ValueError("lead_id: a safeguarding rule needs its named lead")
        return self

    def is_child(self, birth_date: date | None, on: date) -> bool:
        if self.under_age is None or birth_date is None:
            return False
        return age_on(birth_date, on) < self.under_age


@cache
def _public_holidays(country: str, year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays(country, years=year))


def _country(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in holiday_countries():
        raise ValueError("expected a country code the holidays package knows (LT, BG, RU, ...)")
    return value


class CadenceRules(_Rules):
    """The complete rule set for one (department, reason)."""

    steps: list[Step] = Field(min_length=1, max_length=50)
    max_attempts: int = Field(ge=1, le=50)
    templates: dict[Channel, Template]
    fallback: list[Channel] = Field(min_length=1)
    business_hours: dict[Weekday, LocalTimes | None]
    call_slots: dict[Annotated[str, Field(pattern=r"^[a-z_]{1,20}$")], LocalTimes] = Field(
        min_length=1
    )
    call_window: Duration
    min_call_window: Duration
    message_window: Duration
    quiet_hours: QuietHours = QuietHours()
    rebook_lead: Duration
    escalation: EscalationRules = EscalationRules()
    # The first contact waits this long after the fact: a cancel or move undone meanwhile
    # (schedule churn) clears the case before anything is sent.
    settle_window: Duration = timedelta(0)
    # Days the clinic is closed: the country's public holidays and its own closure dates.
    country: Annotated[str | None, PlainValidator(_country)] = None
    closures: frozenset[date] = frozenset()
    capacity: Capacity = Capacity()
    routing: Routing = Routing()
    safeguarding: Safeguarding = Safeguarding()

    @model_validator(mode="after")
    def _consistent(self) -> CadenceRules:
        # A messenger is optional: a template is needed for it only when the rules use it.
        needed = [c for c in CHANNELS if c not in MESSENGERS or c in self.channels()]
        missing = [c for c in needed if c not in self.templates]
        if missing:
            raise ValueError(f"templates: a template is needed for every channel: {missing}")
        if len(set(self.fallback)) != len(self.fallback):
            raise ValueError("fallback: a channel appears twice")
        for day, hours in self.business_hours.items():
            if hours is not None and hours.wraps:
                raise ValueError(f"business_hours.{day}: the range must end after it starts")
        for name, slot in self.call_slots.items():
            if slot.wraps:
                raise ValueError(f"call_slots.{name}: the range must end after it starts")
        if self.min_call_window <= timedelta(0) or self.min_call_window > self.call_window:
            raise ValueError("min_call_window: must be positive and not above call_window")
        if self.message_window <= timedelta(0):
            raise ValueError("message_window: must be positive")
        if not self._some_call_time():
            raise ValueError(
                "business_hours: with call_slots it leaves no weekday time of at least "
                "min_call_window for a call task"
            )
        return self

    def _some_call_time(self) -> bool:
        for hours in self.business_hours.values():
            if hours is None:
                continue
            for slot in self.call_slots.values():
                start = max(hours.start, slot.start)
                end = min(hours.end, slot.end)
                if _minutes(end) - _minutes(start) >= self.min_call_window.total_seconds() / 60:
                    return True
        return False

    def template_for(self, channel: Channel, reason: TriggerKind, step: Step | None) -> str:
        chosen = step.template if step is not None and step.channel == channel else None
        return (chosen or self.templates[channel]).replace("{reason}", reason)

    def closed_on(self, day: date) -> bool:
        """A public holiday of the clinic's country or one of its own closure dates."""
        if day in self.closures:
            return True
        return self.country is not None and day in _public_holidays(self.country, day.year)

    def channels(self) -> tuple[Channel, ...]:
        """Every channel these rules may use, in fallback order."""
        used = list(self.fallback)
        used += [s.channel for s in self.steps if s.channel not in used]
        return tuple(used)


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


# --- the file --------------------------------------------------------------------------


class CadencePolicy:
    """Rules resolved per (department, reason); unknown departments get the general rules.

    With a sites file (common/sites.py) each site has its own resolution: the file's layers,
    then the site profile's hours, slots, closures, quiet hours and escalation contacts,
    then the site's own ``cadence`` overrides (defaults, reasons, departments)."""

    def __init__(self, rules: Mapping[tuple[str | None, TriggerKind], CadenceRules], source: str):
        self._rules = dict(rules)
        self.source = source
        # The departments the file names: the only values of the metrics' department label.
        self.departments = frozenset(d for d, _ in self._rules if d is not None)
        self._document: _Document | None = None
        self._by_site: dict[str, CadencePolicy] = {}

    def adopt_sites(self, sites: Sites) -> None:
        """Resolve every site's rules now (a wrong override: ``SiteError`` naming the sites
        file, the site and the rule; the rules in force stay as they were)."""
        if self._document is None:
            raise PolicyError(f"{self.source}: site rules need a policy read from its text")
        by_site: dict[str, CadencePolicy] = {}
        for site_id, profile in sites.profiles.items():
            try:
                rules = _resolve(self._document, site=(profile.policy_overlay(), profile.cadence))
            except PolicyError as exc:
                where = str(exc).split(": ", 1)[1] if ": " in str(exc) else str(exc)
                raise SiteError(f"{sites.source}: sites.{site_id}.cadence: {where}") from None
            by_site[site_id] = CadencePolicy(rules, f"{self.source} + site {site_id}")
        self._by_site = by_site

    def for_site(self, site: str | None) -> CadencePolicy:
        """The site's rules (the file's own for no site or a site without a profile)."""
        return self._by_site.get(site, self) if site is not None else self

    def department_label(self, department: str) -> str:
        """A bounded metric label: a department the policy names, else ``other``."""
        return department if department in self.departments else "other"

    def rules_for(
        self, department: str, reason: TriggerKind, site: str | None = None
    ) -> CadenceRules:
        if site is not None and site in self._by_site:
            return self._by_site[site].rules_for(department, reason)
        return self._rules.get((department, reason)) or self._rules[(None, reason)]

    @classmethod
    def load(cls, path: Path | str) -> CadencePolicy:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read the policy file ({exc.strerror})") from None
        return cls.from_text(text, str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "<policy>") -> CadencePolicy:
        document = _Document.parse(text, source)
        policy = cls(_resolve(document), source)
        policy._document = document
        return policy


Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class _Document:
    """The parsed file: plain data plus the YAML nodes, to say on which line a problem is."""

    source: str
    data: dict[str, Any]
    root: yaml.Node

    @classmethod
    def parse(cls, text: str, source: str) -> _Document:
        root, data = parse_mapping(
            text, source, PolicyError, "the policy must be a mapping with 'defaults'"
        )
        doc = cls(source, data, root)
        doc._check_layout()
        return doc

    def fail(self, path: Path_, message: str) -> PolicyError:
        return PolicyError(f"{self.source}:{self.line(path)}: {message}")

    def line(self, path: Path_) -> int:
        """The line of the deepest key (or list item) of ``path`` present in the file."""
        node, marked = self.root, self.root
        for key in path:
            entry = _entry(node, key)
            if entry is None:
                break
            key_node, node = entry
            marked = key_node or node
        return marked.start_mark.line + 1

    def has(self, path: Path_) -> bool:
        node: yaml.Node | None = self.root
        for key in path:
            entry = _entry(node, key) if node is not None else None
            node = entry[1] if entry is not None else None
        return node is not None

    def section(self, path: Path_) -> dict[str, Any]:
        value: Any = self.data
        for key in path:
            value = value[key]
        return dict(value)

    def _check_layout(self) -> None:
        unknown = set(self.data) - {"defaults", "reasons", "departments"}
        if unknown:
            key = sorted(unknown)[0]
            raise self.fail((key,), f"unknown section {key!r} (defaults, reasons, departments)")
        if not isinstance(self.data.get("defaults"), dict):
            raise self.fail(("defaults",), "'defaults' must be a mapping of the cadence rules")
        self._check_reasons(("reasons",))
        departments = self.data.get("departments", {})
        if not isinstance(departments, dict):
            raise self.fail(("departments",), "'departments' must map department ids to rules")
        for name, rules in departments.items():
            if not isinstance(rules, dict):
                raise self.fail(("departments", name), f"department {name!r}: expected a mapping")
            self._check_reasons(("departments", name, "reasons"))

    def _check_reasons(self, path: Path_) -> None:
        value: Any = self.data
        for key in path:
            value = value.get(key, {}) if isinstance(value, dict) else {}
        if value is None or not isinstance(value, dict):
            raise self.fail(path, "expected a mapping of trigger kinds to rules")
        for reason, rules in value.items():
            if reason not in REASONS:
                raise self.fail((*path, reason), f"unknown reason {reason!r}; known: {REASONS}")
            if not isinstance(rules, dict):
                raise self.fail((*path, reason), f"reason {reason!r}: expected a mapping")


def _entry(node: yaml.Node, key: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    """(key node, value node) of a mapping entry, or (None, item) of a list item."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if str(key_node.value) == str(key):
                return key_node, value_node
    elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        return None, node.value[key]
    return None


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve(
    doc: _Document, site: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None
) -> dict[tuple[str | None, TriggerKind], CadenceRules]:
    """Every (department, reason) resolved; ``site``: (the profile's layer, its cadence
    overrides laid out as this file) laid over the file's layers."""
    departments: list[str | None] = [None, *doc.data.get("departments", {})]
    overrides: Mapping[str, Any] = site[1] if site is not None else {}
    for department in overrides.get("departments") or {}:
        if department not in departments:
            departments.append(department)
    resolved: dict[tuple[str | None, TriggerKind], CadenceRules] = {}
    for department in departments:
        for reason in REASONS:
            layers: list[Path_] = [("defaults",), ("reasons", reason)]
            if department is not None:
                layers += [
                    ("departments", department),
                    ("departments", department, "reasons", reason),
                ]
            present = [layer for layer in layers if doc.has(layer)]
            merged: dict[str, Any] = {}
            for layer in present:
                section = doc.section(layer)
                if len(layer) == 2 and layer[0] == "departments":
                    section.pop("reasons", None)  # a department's own reasons are a later layer
                merged = _merge(merged, section)
            if site is not None:
                merged = _merge(merged, _site_layers(site, department, reason))
            try:
                resolved[(department, reason)] = CadenceRules.model_validate(merged)
            except ValidationError as exc:
                if site is not None:
                    raise _located_in_site(exc) from None
                raise _locate(doc, present, exc) from None
    return resolved


def _site_layers(
    site: tuple[Mapping[str, Any], Mapping[str, Any]], department: str | None, reason: str
) -> dict[str, Any]:
    profile, overrides = site
    merged = _merge({}, profile)
    layers: list[Any] = [overrides.get("defaults"), (overrides.get("reasons") or {}).get(reason)]
    if department is not None:
        own = (overrides.get("departments") or {}).get(department)
        if isinstance(own, Mapping):
            layers += [{k: v for k, v in own.items() if k != "reasons"}]
            layers += [(own.get("reasons") or {}).get(reason)]
    for layer in layers:
        if layer is not None:
            if not isinstance(layer, Mapping):
                raise PolicyError("<site>: expected a mapping of cadence rules")
            merged = _merge(merged, layer)
    return merged


def _located_in_site(exc: ValidationError) -> PolicyError:
    error = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in error["loc"] if isinstance(p, str | int)) or "rules"
    return PolicyError(f"<site>: {loc}: {str(error['msg']).removeprefix('Value error, ')}")


_NAMED_FIELD = re.compile(r"^([a-z_]+(?:\.[a-z_]+)?): ")


def _locate(doc: _Document, layers: Sequence[Path_], exc: ValidationError) -> PolicyError:
    """Point at the most specific layer that sets the value in error."""
    error = exc.errors(include_url=False, include_input=False)[0]
    loc: Path_ = tuple(p for p in error["loc"] if isinstance(p, str | int))
    message = error["msg"].removeprefix("Value error, ")
    named = _NAMED_FIELD.match(message)
    if not loc and named:
        # A rule across fields names the field it is about: "business_hours.sat: ...".
        loc = tuple(named[1].split("."))
        message = message[named.end() :]
    where = ".".join(str(p) for p in loc) or "rules"
    for layer in reversed(layers):
        if loc and doc.has((*layer, *loc)):
            return doc.fail((*layer, *loc), f"{where}: {message}")
    return doc.fail((*layers[-1], *loc), f"{where}: {message}")
