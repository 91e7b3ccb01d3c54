"""The channel interface and the registry: every channel the contract names has a plug-in,
each plug-in owns its routes, configuration picks sinks, and rendering is pure."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, get_args
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest

from common.clock import ManualClock
from common.config import ConfigError
from schemas.base import Channel
from schemas.topics import TopicNames
from services.notifier import registry
from services.notifier.call_task_channel import CallTaskChannel
from services.notifier.channels import ClinicVoice, Parts
from services.notifier.email_channel import build_mailer
from services.notifier.settings import NotifierSettings
from services.notifier.sms import SmsChannel, status_outcome
from services.notifier.templates import TemplateBook
from tests.unit.notifier.samples import command, contact

VILNIUS = ZoneInfo("Europe/Vilnius")
START = datetime(2026, 3, 2, 10, 0, tzinfo=VILNIUS)
BASE = "https://followup.clinic.example"
# Every inbound URL the notifier has served; providers and tools are configured with them.
ROUTES = {
    ("POST", "/sms/status"),
    ("POST", "/sms/inbound"),
    ("POST", "/email/bounces"),
    ("POST", "/email/inbound"),
    ("*", "/unsubscribe"),
    ("POST", "/calltasks/{task_id}/result"),
    ("POST", "/call-tasks/outcomes"),
    ("GET", "/call-tasks/report/{token}"),
    ("POST", "/call-tasks/report"),
    ("POST", "/jira/webhook"),
    ("POST", "/fhir/subscription"),
    ("POST", "/zendesk/webhook"),
    ("GET", "/whatsapp/webhook"),
    ("POST", "/whatsapp/webhook"),
    ("POST", "/telegram/webhook"),
    ("POST", "/viber/webhook"),
}


def settings(**values: Any) -> NotifierSettings:
    return NotifierSettings.model_validate(
        {
            "public_base_url": BASE,
            "sms_primary_url": "http://sms.invalid",
            "sms_primary_token": "tok",
            "smtp_host": "mail.invalid",
            "webhook_url": "http://hook.invalid/tasks",
            "webhook_secret": "s",
            "front_desk_email": "desk@clinic.example",
            **values,
        }
    )


@pytest.fixture
def parts() -> Parts:
    s = settings()
    unused: Any = None  # adapters the constructors only keep; nothing here calls them
    return Parts(
        settings=s,
        clock=ManualClock(START),
        book=TemplateBook.load("en"),
        voice=ClinicVoice("Sample Clinic", "+37052000000", None, "en"),
        ledger=unused,
        directory=unused,
        publisher=unused,
        topics=TopicNames(""),
        publish_outcome=unused,
        public_base_url=BASE,
        mailer=build_mailer(s),  # connects only when it sends
    )


def test_every_channel_of_the_contract_has_a_plug_in_named_as_it(parts: Parts) -> None:
    channels = registry.build_all(parts, ["kafka"])
    assert set(channels) == set(get_args(Channel))
    assert all(channel.name == name for name, channel in channels.items())


def test_each_inbound_route_has_one_owner_and_no_url_was_lost(parts: Parts) -> None:
    channels = registry.build_all(parts, list(registry.SINKS))
    plugins = [*channels.values(), *parts.sinks]
    routes = [(r.method, r.path) for p in plugins for r in p.routes()]
    assert len(routes) == len(set(routes))
    assert set(routes) == ROUTES
    owner = {r.path: p.name for p in plugins for r in p.routes()}
    assert owner["/sms/inbound"] == "sms" and owner["/email/bounces"] == "email"
    assert owner["/call-tasks/outcomes"] == "call_task"
    assert owner["/whatsapp/webhook"] == "whatsapp" and owner["/viber/webhook"] == "viber"
    assert owner["/telegram/webhook"] == "telegram"


def test_configuration_picks_sinks_and_refuses_what_it_cannot_build() -> None:
    assert registry.wanted_sinks(settings(call_task_sinks=" kafka, webhook ")) == [
        "kafka",
        "webhook",
    ]
    with pytest.raises(ConfigError, match=r"FOLLOWUP_CALL_TASK_SINKS: unknown sink\(s\) \['fax'\]"):
        registry.wanted_sinks(settings(call_task_sinks="kafka,fax"))
    with pytest.raises(ConfigError, match="webhook sink needs FOLLOWUP_WEBHOOK_URL"):
        registry.wanted_sinks(settings(call_task_sinks="webhook", webhook_secret=""))
    with pytest.raises(ConfigError, match="email sink needs FOLLOWUP_FRONT_DESK_EMAIL"):
        registry.wanted_sinks(settings(call_task_sinks="email", smtp_host=None))


def test_sms_render_redacts_a_shared_number_and_carries_the_key_back(parts: Parts) -> None:
    sms = registry.build_all(parts, [])["sms"]
    assert isinstance(sms, SmsChannel)
    own = sms.render(command("sms", appointment_start=START - timedelta(hours=2)), contact())
    shared = sms.render(
        command("sms", appointment_start=START - timedelta(hours=2)), contact(phone_shared_by=2)
    )
    assert own.to == "+37060000001" and "08:00" in own.body  # the missed visit, local time
    assert "08:00" not in shared.body and "Sample Clinic" in shared.body
    assert own.status_callback is not None
    callback = urlsplit(own.status_callback)
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == f"{BASE}/sms/status"
    assert parse_qs(callback.query)["key"] == ["case-1:1"]


def test_the_twilio_vocabulary_maps_to_outcomes() -> None:
    assert status_outcome("delivered", None) == ("delivered", None)
    assert status_outcome("undelivered", "30003") == ("failed", "unreachable")
    assert status_outcome("undelivered", "30006") == ("channel_impossible", "landline")
    assert status_outcome("undelivered", "30005") == ("channel_impossible", "number_wrong")
    assert status_outcome("failed", "30007") == ("channel_impossible", "provider_30007")
    assert status_outcome("failed", None) == ("failed", "carrier_unknown")
    for under_way in ("queued", "accepted", "sending", "sent", ""):
        assert status_outcome(under_way, None) is None


def test_a_withdrawn_task_is_the_created_task_under_its_own_id(parts: Parts) -> None:
    calls = registry.build_all(parts, [])["call_task"]
    assert isinstance(calls, CallTaskChannel)
    created = command("call_task")
    withdrawal = command("call_task", idempotency_key="case-1:1:withdrawal", purpose="withdrawal")
    create = calls.render(created, contact())
    withdraw = calls.render(created, contact(), "withdraw")
    assert (create.task_id, withdraw.task_id) == ("case-1:1", "case-1:1")
    assert (create.action, withdraw.action) == ("create", "withdraw")
    assert create.report_url == f"{BASE}/calltasks/case-1:1/result"
    assert withdrawal.idempotency_key not in (create.task_id, withdraw.task_id)
