"""The fault suite's clinic as a chain of three sites (issue 22), and the per-site invariants.

The demo's clinic feeds followup through three ways in, and the sites file attributes each
by the names those feeds already give (``common/sites.py``):

- HL7 v2 over MLLP: MSH-4 is the demo's sending facility ``CLINIC`` -> **vilnius**;
- FHIR: an Appointment's participant ``Location/<department>`` -> **kaunas**; a CarePlan
  names no site of its own (its author is a practitioner) -> the default site;
- canonical JSON on Kafka names no site -> the default site, **riga** (another zone,
  another country's holidays); the HL7 patients' treatment plans come this way too.

So each patient's cases have a site known beforehand (``expected_sites``), and the checks
ask, per site: every trigger and case is that site's; every command carries its case's
site; every text and email speaks with that site's phone and no other's; every call task
goes to that site's own sinks; a token of one site lists exactly that site's cases and is
refused another site's case.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from common.clock import ScaledClock, SharedClock
from demo import report
from demo.deployment import Deployment
from demo.observe import fetch_cases
from demo.report import Observed
from demo.run import RunHooks
from demo.scenario import Patient, Scenario
from demo.simulator.clinic import Simulation
from demo.simulator.hl7v2 import SENDING_FACILITY
from demo.simulator.rig import StandIns
from schemas.base import TriggerKind

DEFAULT_SITE = "riga"


@dataclass(frozen=True)
class Site:
    id: str
    timezone: str
    country: str
    phone: str
    names: Mapping[str, str]
    facilities: tuple[str, ...]

    def token_variable(self) -> str:
        return f"FOLLOWUP_{self.id.upper()}_API_TOKEN"

    def desk(self) -> str:
        return f"desk-{self.id}@clinic.example"


SITES = (
    Site(
        "vilnius",
        "Europe/Vilnius",
        "LT",
        "+37052000101",
        {"lt": "Vilniaus klinika", "en": "Vilnius Clinic", "ru": "Клиника Вильнюс"},
        (SENDING_FACILITY,),
    ),
    Site(
        "kaunas",
        "Europe/Vilnius",
        "LT",
        "+37037000202",
        {"lt": "Kauno klinika", "en": "Kaunas Clinic", "ru": "Клиника Каунас"},
        ("Location/dental", "Location/orthopaedics", "Location/physio"),
    ),
    Site(
        "riga",
        "Europe/Riga",
        "LV",
        "+37167000303",
        {"lt": "Rygos klinika", "en": "Riga Clinic", "ru": "Клиника Рига", "bg": "Клиника Рига"},
        ("RIX",),
    ),
)
BY_ID = {site.id: site for site in SITES}


def sites_yaml(webhook_url: str) -> str:
    """The sites file: each site's own webhook path and desk mailbox (the deployment's
    webhook secret signs them all: the stand-in checks one), the deployment's topic sink."""
    lines = ["sites:"]
    for site in SITES:
        names = ", ".join(f"{lang}: {json.dumps(name)}" for lang, name in site.names.items())
        lines += [
            f"  {site.id}:",
            f"    facilities: {json.dumps(list(site.facilities))}",
            f"    timezone: {site.timezone}",
            f"    holidays_country: {site.country}",
            f"    phone: {json.dumps(site.phone)}",
            f"    names: {{{names}}}",
            "    call_task_sinks:",
            f"      - {{kind: webhook, url: {json.dumps(site_webhook(webhook_url, site.id))},"
            " secret_env: FOLLOWUP_WEBHOOK_SECRET}",
            f"      - {{kind: email, to: {json.dumps(site.desk())}}}",
            "      - {kind: kafka}",
            f"    api_token_env: {site.token_variable()}",
        ]
    lines.append(f"default_site: {DEFAULT_SITE}")
    return "\n".join(lines) + "\n"


def site_webhook(webhook_url: str, site: str) -> str:
    return f"{webhook_url.rstrip('/')}/{site}"


def expected_sites(patient: Patient, kind: TriggerKind) -> frozenset[str]:
    """The sites a patient's trigger of ``kind`` may carry, from the way its facts came in.

    Visits are their way in's site (HL7: Vilnius, FHIR: Kaunas, JSON: the default). Plans
    name no site on any way in (the HL7 patients' plans come as JSON, a FHIR CarePlan's
    author is a practitioner): a stage warning is the default site's. An unanswered call has
    no visit of its own: the patient's latest site (a visit's, or before any the plan's)."""
    visits = {"hl7": "vilnius", "fhir": "kaunas"}.get(patient.path, DEFAULT_SITE)
    if kind == "stage_window_at_risk":
        return frozenset({DEFAULT_SITE})
    if kind == "unanswered_call":
        return frozenset({visits, DEFAULT_SITE})
    return frozenset({visits})


@dataclass
class SiteScopes:
    """What each site's token was shown at the end of a run (``Chain.read_scopes``)."""

    listed: dict[str, set[str] | None] = field(default_factory=dict)  # None: no answer
    # (site, another site's case) -> the HTTP status the site's token got for it.
    foreign: dict[tuple[str, str], int] = field(default_factory=dict)


async def read_scopes(
    deployment: Deployment, tokens: Mapping[str, str], cases: list[dict[str, Any]]
) -> SiteScopes:
    scopes = SiteScopes()
    base = deployment.url("scheduler")
    one_of: dict[str, str] = {}
    for case in cases:
        if isinstance(case.get("site"), str) and isinstance(case.get("case_id"), str):
            one_of.setdefault(case["site"], case["case_id"])
    async with aiohttp.ClientSession() as session:
        for site, token in tokens.items():
            found = await _list(session, base, token)
            scopes.listed[site] = found
            for other, case_id in one_of.items():
                if other == site:
                    continue
                url = f"{base}/cases/{quote(case_id, safe='')}"
                headers = {"Authorization": f"Bearer {token}"}
                try:
                    async with session.get(url, headers=headers) as resp:
                        scopes.foreign[(site, case_id)] = resp.status
                except aiohttp.ClientError:
                    scopes.foreign[(site, case_id)] = 0
    return scopes


async def _list(session: aiohttp.ClientSession, base: str, token: str) -> set[str] | None:
    found = await fetch_cases(session, base, token)
    return None if found is None else {str(c.get("case_id")) for c in found}


async def _all_cases(deployment: Deployment) -> list[dict[str, Any]]:
    """Every case, read with the deployment's own token (which sees every site)."""
    async with aiohttp.ClientSession() as session:
        token = deployment.env["FOLLOWUP_API_TOKEN"]
        return await fetch_cases(session, deployment.url("scheduler"), token) or []


def check(observed: Observed, scenario: Scenario, scopes: SiteScopes | None) -> list[str]:
    """Every per-site invariant broken, each naming the patient or case (ids only)."""
    broken: list[str] = []
    by_id = {p.patient_id: p for p in scenario.patients}
    triggers = {t.event_id: t for t in report.unique_by_id(observed.triggers)}
    for trigger in triggers.values():
        patient = by_id.get(trigger.patient_id)
        if patient is None:
            continue
        want = expected_sites(patient, trigger.kind)
        if trigger.site not in want:
            broken.append(
                f"site_attribution: {trigger.patient_id} {trigger.kind} trigger carries "
                f"{trigger.site}, its way in ({patient.path}) names {'/'.join(sorted(want))}"
            )
    case_site: dict[str, str | None] = {}
    for case in observed.cases or []:
        case_id, site = str(case.get("case_id")), case.get("site")
        case_site[case_id] = site if isinstance(site, str) else None
        source = triggers.get(str(case.get("trigger_event_id")))
        if source is not None and site != source.site:
            broken.append(f"case_site: {case_id} is {site}, its trigger {source.site}")
    commands = report.unique_by_id(observed.notifications)
    command_site: dict[str, str | None] = {}
    for n in commands:
        command_site[n.idempotency_key] = n.site
        if n.case_id in case_site and n.site != case_site[n.case_id]:
            broken.append(
                f"command_site: {n.patient_id} {n.idempotency_key} carries {n.site}, "
                f"its case {case_site[n.case_id]}"
            )
    broken += _voices(observed, command_site)
    broken += _sinks(observed, command_site)
    if scopes is not None:
        broken += _scopes(scopes, case_site)
    return broken


def _voices(observed: Observed, command_site: Mapping[str, str | None]) -> list[str]:
    """A text or an email speaks with its command's site's phone, never another site's."""
    broken = []
    spoken: list[tuple[str, str]] = [(s.key, s.body) for s in observed.sms if s.key]
    spoken += [(key, m.text) for m in observed.mail if (key := m.headers.get("X-Followup-Key"))]
    for key, text in spoken:
        site = BY_ID.get(command_site.get(key) or "")
        if site is None:
            continue
        others = [s.id for s in SITES if s.id != site.id and s.phone in text]
        if site.phone not in text or others:
            broken.append(
                f"site_voice: {key} of {site.id} "
                + (f"names {', '.join(others)}'s phone" if others else "lacks its phone")
            )
    return broken


def _sinks(observed: Observed, command_site: Mapping[str, str | None]) -> list[str]:
    """A follow-up call task reaches its site's webhook path and desk, no other site's, and
    its call script gives its site's phone."""
    broken = []
    paths = {urlsplit(site_webhook("http://x/call-tasks", s.id)).path: s.id for s in SITES}
    for received in observed.call_tasks:
        task = received.task
        key, purpose = str(task.get("task_id") or ""), received.purpose
        site = command_site.get(key)
        at = paths.get(received.path)
        if purpose == "escalation":
            if at is not None:
                broken.append(f"site_sink: escalation {key} reached {at}'s desk tool")
            continue
        if site is not None and (at != site or task.get("site") != site):
            broken.append(f"site_sink: {key} of {site} reached {received.path}")
        profile = BY_ID.get(site or "")
        script = str(task.get("script") or "")
        if profile is not None and task.get("action") == "create":
            others = [s.id for s in SITES if s.id != profile.id and s.phone in script]
            if profile.phone not in script or others:
                broken.append(f"site_voice: call task {key} of {site}'s script")
    desks = {s.desk(): s.id for s in SITES}
    for mail in observed.mail:
        # The desk's mail of a call task: X-Followup-Key "calltask:<task id>:<action>".
        parts = mail.headers.get("X-Followup-Key", "").split(":")
        if len(parts) < 3 or parts[0] != "calltask":
            continue
        key = ":".join(parts[1:-1])
        site = command_site.get(key)
        owners = {desks.get(to.lower()) for to in mail.rcpt_to}
        escalation = mail.headers.get("Importance") == "high"
        if escalation:
            if owners - {None}:
                broken.append(f"site_sink: escalation {key} mailed to a site's desk")
        elif site is not None and owners != {site}:
            broken.append(f"site_sink: {key} of {site} mailed to {sorted(map(str, owners))}")
    return broken


def _scopes(scopes: SiteScopes, case_site: Mapping[str, str | None]) -> list[str]:
    broken = []
    for site, listed in scopes.listed.items():
        own = {case_id for case_id, s in case_site.items() if s == site}
        if listed is None:
            broken.append(f"site_scope: {site}'s token got no worklist")
            continue
        # Cases opened after the clinic's last day are not in the run's read-back.
        leaked = sorted((listed & set(case_site)) - own)
        missing = sorted(own - listed)
        if leaked or missing:
            broken.append(f"site_scope: {site}'s token lists {leaked} not its, misses {missing}")
    for (site, case_id), status in sorted(scopes.foreign.items()):
        if status != 404:
            broken.append(f"cross_site_leak: {site}'s token got {status} for case {case_id}")
    return broken


def chain_env(webhook_url: str, directory: Path, tokens: Mapping[str, str]) -> dict[str, str]:
    """The deployment's settings for the chain: the sites file and each site's token."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sites.yaml"
    path.write_text(sites_yaml(webhook_url), encoding="utf-8")
    return {"FOLLOWUP_SITES_PATH": str(path)} | {
        BY_ID[site].token_variable(): token for site, token in tokens.items()
    }


@dataclass
class ChainHooks:
    """The run's hooks (``demo.run.RunHooks``): the fault's own, with the chain's sites file
    and tokens added to the deployment, and each site's token tried at the end."""

    inner: RunHooks  # the fault's Injector
    directory: Path
    tokens: dict[str, str] = field(
        default_factory=lambda: {site.id: secrets.token_urlsafe(18) for site in SITES}
    )
    scopes: SiteScopes | None = None
    _deployment: Deployment | None = None

    async def prepared(self, standins: StandIns, env: dict[str, str]) -> dict[str, str]:
        changed: dict[str, str] = await self.inner.prepared(standins, env)
        # Behind the fault's proxy where it put one (a webhook that refuses or is slow).
        webhook = changed.get("FOLLOWUP_WEBHOOK_URL", env["FOLLOWUP_WEBHOOK_URL"])
        return changed | chain_env(webhook, self.directory, self.tokens)

    async def during(
        self, deployment: Deployment, simulation: Simulation, clock: ScaledClock | SharedClock
    ) -> None:
        self._deployment = deployment
        await self.inner.during(deployment, simulation, clock)

    async def finished(self) -> None:
        try:
            if self._deployment is not None:
                cases = await _all_cases(self._deployment)
                self.scopes = await read_scopes(self._deployment, self.tokens, cases)
        finally:
            await self.inner.finished()
