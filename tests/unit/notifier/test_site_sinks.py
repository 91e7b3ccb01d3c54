"""Each site's own call-task sinks (services/notifier/site_sinks.py), built at start-up."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from common.clock import ManualClock
from common.config import ConfigError
from common.sites import Sites
from services.notifier.channels import Parts
from services.notifier.sinks import WebhookSink
from services.notifier.site_sinks import build_site_sinks

SITES = """\
sites:
  sofia:
    timezone: Europe/Sofia
    call_task_sinks:
      - {kind: webhook, url: "https://desk.sofia.example/hooks", secret_env: SOFIA_SECRET}
      - {kind: kafka}
  vilnius:
    timezone: Europe/Vilnius
"""


def parts(*configured: Any) -> Parts:
    clock = ManualClock(datetime(2026, 3, 2, tzinfo=UTC))
    return cast(Parts, SimpleNamespace(sinks=list(configured), clock=clock, mailer=None))


def test_a_site_gets_its_own_webhook_and_the_deployments_other_kinds() -> None:
    topic = SimpleNamespace(name="kafka")
    built = build_site_sinks(parts(topic), Sites.from_text(SITES), {"SOFIA_SECRET": "whsec"})
    assert list(built) == ["sofia"]  # vilnius has none of its own: the deployment's
    webhook, kafka = built["sofia"]
    assert isinstance(webhook, WebhookSink) and kafka is topic


def test_a_missing_secret_or_an_unconfigured_kind_stops_the_start() -> None:
    topic = SimpleNamespace(name="kafka")
    with pytest.raises(ConfigError, match=r"sites.sofia.call_task_sinks.0: a webhook needs"):
        build_site_sinks(parts(topic), Sites.from_text(SITES), {})
    with pytest.raises(ConfigError, match=r"sites.sofia.call_task_sinks.1: kind kafka is not"):
        build_site_sinks(parts(), Sites.from_text(SITES), {"SOFIA_SECRET": "whsec"})
