"""The notifier's plug-ins by name: the one place channel and sink names are listed.

A channel is chosen by the command's ``channel``; call-task sinks by
``FOLLOWUP_CALL_TASK_SINKS``. Adding one is a module with a class and a ``build`` (see the
README, "How to add a channel") and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from common.config import ConfigError
from services.notifier import (
    call_task_channel,
    email_channel,
    sink_caldav,
    sink_chat,
    sink_fhir_task,
    sink_jira,
    sink_zendesk,
    sinks,
    sms,
    telegram,
    viber,
    whatsapp,
)
from services.notifier.channels import CallTaskSink, MessageChannel, Parts
from services.notifier.settings import NotifierSettings

P = TypeVar("P")


@dataclass(frozen=True)
class Registration(Generic[P]):
    build: Callable[[Parts], P]
    # The configuration problem that stops the service at start-up, if any.
    check: Callable[[NotifierSettings], str | None] = lambda _: None


CHANNELS: Mapping[str, Registration[MessageChannel]] = {
    sms.SmsChannel.name: Registration(sms.build),
    email_channel.EmailChannel.name: Registration(email_channel.EmailChannel),
    call_task_channel.CallTaskChannel.name: Registration(call_task_channel.CallTaskChannel),
    # The patient's chat messengers (issue 21); each unconfigured until its token is set.
    whatsapp.WhatsAppChannel.name: Registration(whatsapp.build),
    telegram.TelegramChannel.name: Registration(telegram.build),
    viber.ViberChannel.name: Registration(viber.build),
}
SINKS: Mapping[str, Registration[CallTaskSink]] = {
    sinks.WebhookSink.name: Registration(sinks.build_webhook, sinks.check_webhook),
    sinks.FrontDeskEmailSink.name: Registration(
        sinks.build_front_desk_email, sinks.check_front_desk_email
    ),
    sinks.KafkaTopicSink.name: Registration(sinks.build_topic),
    sink_fhir_task.FhirTaskSink.name: Registration(sink_fhir_task.build, sink_fhir_task.check),
    sink_caldav.CalDavSink.name: Registration(sink_caldav.build, sink_caldav.check),
    sink_jira.JiraSink.name: Registration(sink_jira.JiraSink, sink_jira.check),
    sink_zendesk.ZendeskSink.name: Registration(sink_zendesk.ZendeskSink, sink_zendesk.check),
    "slack": Registration(sink_chat.build_slack, sink_chat.check_slack),
    "teams": Registration(sink_chat.build_teams, sink_chat.check_teams),
    "mattermost": Registration(sink_chat.build_mattermost, sink_chat.check_mattermost),
}


def wanted_sinks(settings: NotifierSettings) -> list[str]:
    """The configured sink names, checked: an unknown name or missing setting is a
    ConfigError naming the variable (raised before anything starts)."""
    wanted = settings.sinks_for("follow_up")
    escalations = settings.sinks_for("escalation")
    for variable, names in (("CALL_TASK_SINKS", wanted), ("ESCALATION_SINKS", escalations)):
        unknown = sorted(set(names) - set(SINKS))
        if unknown:
            raise ConfigError(f"FOLLOWUP_{variable}: unknown sink(s) {unknown}")
    wanted += [name for name in escalations if name not in wanted]
    for name in wanted:
        problem = SINKS[name].check(settings)
        if problem:
            raise ConfigError(problem)
    return wanted


def build_all(parts: Parts, sink_names: Sequence[str]) -> dict[str, MessageChannel]:
    """Every channel, with the chosen sinks handed to the call-task channel."""
    parts.sinks = [SINKS[name].build(parts) for name in sink_names]
    return {name: registration.build(parts) for name, registration in CHANNELS.items()}
