"""Each clinic's own call-task sinks (issue 22), from its profile's ``call_task_sinks``.

A webhook or a front-desk mailbox is built per site from the profile (the URL or address;
the webhook's signing secret from the variable ``secret_env`` names). Any other kind is the
deployment's own configured sink of that kind (FOLLOWUP_CALL_TASK_SINKS): a site may only
name kinds the deployment runs. A site without ``call_task_sinks`` uses the deployment's.

``SiteSinks`` keeps them in force across versions of the sites file: a changed file's sinks
are built when the file is taken (no restart), a sink whose profile and credential did not
change keeps its connection, and a version whose sinks cannot be built is refused whole.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence

from common import logs
from common.config import ConfigError
from common.sites import Sink, SiteError, Sites
from services.notifier.calltasks import desk_view
from services.notifier.channels import CallTaskSink, Parts
from services.notifier.sinks import FrontDeskEmailSink, WebhookSink

log = logs.get_logger(__name__)

# What a built sink depends on: its profile entry and the credentials it reads.
_Spec = tuple[Sink, tuple[tuple[str, str], ...]]


def build_site_sinks(
    parts: Parts,
    sites: Sites,
    environ: Mapping[str, str] | None = None,
    reuse: Mapping[_Spec, CallTaskSink] | None = None,
) -> dict[str, Sequence[CallTaskSink]]:
    """Site id -> its sinks; a sink that cannot be built is a ConfigError naming it."""
    return _build_all(parts, sites, environ, reuse or {})[0]


def _build_all(
    parts: Parts,
    sites: Sites,
    environ: Mapping[str, str] | None,
    reuse: Mapping[_Spec, CallTaskSink],
) -> tuple[dict[str, Sequence[CallTaskSink]], dict[_Spec, CallTaskSink]]:
    environ = os.environ if environ is None else environ
    configured = {sink.name: sink for sink in parts.sinks}
    built: dict[str, Sequence[CallTaskSink]] = {}
    specs: dict[_Spec, CallTaskSink] = {}
    for site_id, profile in sites.profiles.items():
        own = []
        for index, sink in enumerate(profile.call_task_sinks):
            variables = sink.credential_variables()
            spec = (sink, tuple(sorted((v, environ.get(v, "")) for v in variables.values())))
            found = specs.get(spec) or reuse.get(spec)
            if found is None:
                where = f"sites.{site_id}.call_task_sinks.{index}"
                found = _build(parts, configured, sink, where, environ)
            specs[spec] = found
            own.append(found)
        if own:
            built[site_id] = own
    return built, specs


class SiteSinks:
    """Each site's sinks in force on ``parts.site_sinks``, following the sites file.

    ``adopt`` is a listener of the site registry (``SiteRegistry.on_change``): at start-up a
    sink that cannot be built stops the notifier (``ConfigError``, as before); later, the new
    version is refused (``SiteError``: the registry keeps the last good file and its sinks).
    Sinks no version uses any more are closed."""

    def __init__(self, parts: Parts, environ: Mapping[str, str] | None = None) -> None:
        self._parts = parts
        self._environ = environ
        self._specs: dict[_Spec, CallTaskSink] = {}
        self._started = False
        self._closing: set[asyncio.Task[None]] = set()

    def adopt(self, sites: Sites) -> None:
        try:
            built, specs = _build_all(self._parts, sites, self._environ, self._specs)
        except ConfigError as exc:
            if not self._started:
                raise
            raise SiteError(f"{sites.source}: {exc}") from None
        kept = {id(sink) for sink in specs.values()}
        dropped = [s for s in self._specs.values() if id(s) not in kept]
        self._parts.site_sinks = built
        self._specs = specs
        if self._started:
            log.info("site_sinks_rebuilt", sites=len(built), dropped=len(dropped))
        self._started = True
        for sink in dropped:
            if sink not in self._parts.sinks:  # the deployment's own: closed at stop
                self._close_later(sink)

    def _close_later(self, sink: CallTaskSink) -> None:
        try:
            task = asyncio.get_running_loop().create_task(sink.close())
        except RuntimeError:
            return  # no loop (a tool): nothing was opened
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for sink in {id(s): s for s in self._specs.values()}.values():
            if sink not in self._parts.sinks:
                await sink.close()
        self._specs = {}


def _build(
    parts: Parts,
    configured: Mapping[str, CallTaskSink],
    sink: Sink,
    where: str,
    environ: Mapping[str, str],
) -> CallTaskSink:
    variables = sink.credential_variables()
    if sink.kind == "webhook" and sink.url is not None:
        secret = environ.get(variables.get("secret_env", ""), "")
        if not secret:
            raise ConfigError(f"{where}: a webhook needs secret_env naming a variable that is set")
        return WebhookSink(sink.url, secret, parts.clock)
    if sink.kind == "email" and sink.to is not None:
        s = parts.settings
        if parts.mailer is None:
            raise ConfigError(f"{where}: the email sink needs FOLLOWUP_SMTP_HOST")
        return FrontDeskEmailSink(
            parts.mailer,
            sink.to,
            s.smtp_sender,
            desk_view(s),
            notes_in_calendar=s.notes_in_calendar,
        )
    if sink.kind in configured:
        return configured[sink.kind]
    raise ConfigError(
        f"{where}: kind {sink.kind} is not one of FOLLOWUP_CALL_TASK_SINKS"
        " (a webhook needs url, an email needs to)"
    )
