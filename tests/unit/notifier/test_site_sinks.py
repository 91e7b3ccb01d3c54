"""Each site's own call-task sinks (services/notifier/site_sinks.py), built at start-up and
again when the sites file changes."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from common.clock import ManualClock
from common.config import ConfigError
from common.sites import SiteError, Sites
from services.notifier.channels import Parts
from services.notifier.sinks import WebhookSink
from services.notifier.site_sinks import SiteSinks, build_site_sinks

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


def test_a_changed_file_rebuilds_what_changed_and_a_broken_one_is_refused_whole() -> None:
    topic = SimpleNamespace(name="kafka")
    built = parts(topic)
    environ = {"SOFIA_SECRET": "whsec", "BURGAS_SECRET": "whsec-2"}
    sinks = SiteSinks(built, environ)
    sinks.adopt(Sites.from_text(SITES))
    sofia_webhook = built.site_sinks["sofia"][0]
    # Burgas joins with a webhook of its own; Sofia's is unchanged and keeps its connection.
    burgas = (
        "  burgas:\n    timezone: Europe/Sofia\n    call_task_sinks:\n"
        '      - {kind: webhook, url: "https://desk.burgas.example", secret_env: BURGAS_SECRET}\n'
    )
    sinks.adopt(Sites.from_text(SITES + burgas))
    assert built.site_sinks["sofia"][0] is sofia_webhook
    assert isinstance(built.site_sinks["burgas"][0], WebhookSink)
    # A version naming a secret that is not set is refused (the registry keeps the last
    # good file): the sinks in force stay as they were.
    broken = SITES.replace("SOFIA_SECRET", "NOT_SET_SECRET")
    with pytest.raises(SiteError, match=r"sites.sofia.call_task_sinks.0: a webhook needs"):
        sinks.adopt(Sites.from_text(broken))
    assert built.site_sinks["sofia"][0] is sofia_webhook and "burgas" in built.site_sinks


def test_a_broken_sink_at_start_up_stops_the_notifier() -> None:
    with pytest.raises(ConfigError, match=r"a webhook needs"):
        SiteSinks(parts(SimpleNamespace(name="kafka")), {}).adopt(Sites.from_text(SITES))
