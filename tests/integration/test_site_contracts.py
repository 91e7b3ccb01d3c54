"""Contract across services for a chain of clinics (issue 22), scheduler -> notifier: the
real scheduler's command carries its case's ``site`` on the real notifications topic, and
the real notifier reads it there and speaks as that site's clinic (its name and phone in the
call script) through that site's own call-task sink; a site without sinks of its own uses
the deployment's. Both services read the same sites file; one manual clock, two schemas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from schemas.events import NotificationCommand
from schemas.topics import TopicNames
from services.scheduler.app import Scheduler
from services.scheduler.cases import case_id_for
from standins.calltasks import CallTaskReceiver
from tests.integration.notifier.conftest import messaging_world
from tests.integration.notifier.world import World
from tests.support import infra
from tests.support.kafka import read_events
from tests.support.polling import eventually
from tests.support.scheduler import case_from_api, no_show_trigger, scheduler_beside

pytestmark = pytest.mark.integration
CASE_TOKEN = "case-api-token"
SOFIA_SECRET = "sofia-webhook-secret"
SITES = """\
sites:
  vilnius:
    timezone: Europe/Vilnius
    names: {{lt: "Vilniaus dantų klinika", en: "Vilnius Dental Clinic"}}
  sofia:
    timezone: Europe/Sofia
    default_language: bg
    names: {{bg: "Дентална клиника София", en: "Sofia Dental Clinic"}}
    phone: "+35920000000"
    call_task_sinks:
      - {{kind: webhook, url: "{sofia_url}", secret_env: TEST_CONTRACT_SOFIA_SECRET}}
"""


@dataclass
class Chain:
    world: World  # the notifier and its outside world
    scheduler: Scheduler
    sofia_tool: CallTaskReceiver  # the Sofia clinic's own ticketing tool


@pytest.fixture(scope="module")
async def chain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chain]:
    infra.ensure_up()
    sofia_tool = CallTaskReceiver(secret=SOFIA_SECRET)
    await sofia_tool.start()
    path = Path(tmp_path_factory.mktemp("sites")) / "sites.yaml"
    path.write_text(SITES.format(sofia_url=sofia_tool.url), encoding="utf-8")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("TEST_CONTRACT_SOFIA_SECRET", SOFIA_SECRET)
    try:
        async with messaging_world(sites_path=str(path)) as world:
            topics = TopicNames(prefix=world.app.topics.prefix)
            async with scheduler_beside(
                topics, world.clock, api_token=CASE_TOKEN, sites_path=str(path)
            ) as scheduler:
                yield Chain(world, scheduler, sofia_tool)
    finally:
        monkeypatch.undo()
        await sofia_tool.stop()


async def test_the_schedulers_command_speaks_as_its_sites_clinic_at_the_notifier(
    chain: Chain,
) -> None:
    world = chain.world
    missed = world.clock.now() - timedelta(hours=1)
    await world.contact("p-ch-sof", phone="+359881230001", language="en", timezone="Europe/Sofia")
    await world.contact("p-ch-vln", phone="+37060000901", language="en")
    # The tracker's no-shows, each attributed to its clinic (the trigger's timezone is the
    # deployment's: the scheduler takes the site's own).
    for patient, site in (("p-ch-sof", "sofia"), ("p-ch-vln", "vilnius")):
        trigger = no_show_trigger(patient, f"appt-{patient}", missed=missed, site=site)
        await world.publisher.publish(world.topics.triggers, trigger)
    sofia_case = case_id_for("no_show:appt-p-ch-sof")
    vilnius_case = case_id_for("no_show:appt-p-ch-vln")
    await eventually(lambda: world.outcome(f"{sofia_case}:1:task_created"), timeout=60)
    await eventually(lambda: world.outcome(f"{vilnius_case}:1:task_created"), timeout=60)

    # On the real topic, each command carries its case's site (the notifier looks nothing up).
    commands = await read_events(
        infra.KAFKA_BOOTSTRAP, world.topics.notifications, NotificationCommand, 2
    )
    assert {(c.case_id, c.site) for c in commands} == {
        (sofia_case, "sofia"),
        (vilnius_case, "vilnius"),
    }
    case = await case_from_api(chain.scheduler, sofia_case, CASE_TOKEN)
    assert (case["site"], case["timezone"]) == ("sofia", "Europe/Sofia")

    # Sofia's call task: at Sofia's own tool only, in Sofia's name and with Sofia's phone.
    [hook] = chain.sofia_tool.tasks(f"{sofia_case}:1")
    script = hook["task"]["script"]
    assert hook["task"]["site"] == "sofia"
    assert "Sofia Dental Clinic" in script and "+35920000000" in script
    assert "Vilnius" not in script
    assert world.webhook.tasks(f"{sofia_case}:1") == []
    # Vilnius has no sinks of its own: the deployment's tool, in Vilnius's name.
    assert chain.sofia_tool.tasks(f"{vilnius_case}:1") == []
    [vilnius] = world.webhook.tasks(f"{vilnius_case}:1")
    assert vilnius["task"]["site"] == "vilnius"
    assert "Vilnius Dental Clinic" in vilnius["task"]["script"]
    assert "Sofia" not in vilnius["task"]["script"]
