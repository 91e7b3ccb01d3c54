"""Each clinic's own call-task sinks (issue 22), from its profile's ``call_task_sinks``.

A webhook or a front-desk mailbox is built per site from the profile (the URL or address;
the webhook's signing secret from the variable ``secret_env`` names). Any other kind is the
deployment's own configured sink of that kind (FOLLOWUP_CALL_TASK_SINKS): a site may only
name kinds the deployment runs. A site without ``call_task_sinks`` uses the deployment's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from common.config import ConfigError
from common.sites import Sink, Sites
from services.notifier.calltasks import desk_view
from services.notifier.channels import CallTaskSink, Parts
from services.notifier.sinks import FrontDeskEmailSink, WebhookSink


def build_site_sinks(
    parts: Parts, sites: Sites, environ: Mapping[str, str] | None = None
) -> dict[str, Sequence[CallTaskSink]]:
    """Site id -> its sinks; a sink that cannot be built is a ConfigError naming it."""
    environ = os.environ if environ is None else environ
    configured = {sink.name: sink for sink in parts.sinks}
    built: dict[str, Sequence[CallTaskSink]] = {}
    for site_id, profile in sites.profiles.items():
        own = [
            _build(parts, configured, sink, f"sites.{site_id}.call_task_sinks.{index}", environ)
            for index, sink in enumerate(profile.call_task_sinks)
        ]
        if own:
            built[site_id] = own
    return built


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
