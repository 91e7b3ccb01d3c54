"""Many clinics, one notifier (issue 22): a command's site speaks as its clinic (name,
signature, phone) and its call tasks reach that site's own tool, signed with its own secret;
a site without sinks of its own uses the deployment's. A changed sites file moves a site's
sinks and tokens without a restart."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY

from common.clock import ManualClock
from common.db import drop_schema
from services.notifier.app import NotifierApp
from standins.calltasks import CallTaskReceiver
from standins.sms_provider import SmsProviderStandIn
from tests.integration.notifier.conftest import world_settings
from tests.integration.notifier.world import START, Inbox, WebhookReceiver, World, running_world
from tests.support import infra
from tests.support.polling import eventually, free_port

pytestmark = pytest.mark.integration
SOFIA_SECRET = "sofia-webhook-secret"
SOFIA_DESK = "sofia-desk-token-not-secret"


VILNIUS_DESK = "vilnius-desk-token-not-secret"


async def desk_reports(world: World, token: str, task_id: str, report_id: str) -> int:
    """A site's front desk reports "no answer" for a call task with its own token: the
    HTTP status the notifier answers."""
    body = {"outcome": "no_answer", "reported_by": "desk-1", "report_id": report_id}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{world.base_url}/calltasks/{task_id}/result",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as answer,
    ):
        return answer.status


def sites_file(sofia_url: str, sofia_secret_env: str, vilnius_token_env: str = "") -> str:
    vilnius_token = f"\n    api_token_env: {vilnius_token_env}" if vilnius_token_env else ""
    return f"""\
sites:
  vilnius:
    timezone: Europe/Vilnius
    names: {{lt: "Vilniaus dantų klinika"}}{vilnius_token}
  sofia:
    timezone: Europe/Sofia
    default_language: bg
    names: {{bg: "Дентална клиника София", en: "Sofia Dental Clinic"}}
    signatures: {{en: "Your Sofia Dental Clinic team"}}
    phone: "+35920000000"
    sms_from: "+35929000000"
    call_task_sinks:
      - {{kind: webhook, url: "{sofia_url}", secret_env: {sofia_secret_env}}}
    api_token_env: TEST_SOFIA_DESK_TOKEN
  burgas:
    timezone: Europe/Sofia
    quiet_hours: {{hours: "09:00-12:00", channels: [sms, email]}}
"""


@pytest.fixture(scope="module")
async def chain(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[World, CallTaskReceiver]]:
    infra.ensure_up()
    unique = uuid.uuid4().hex[:10]
    prefix, schema = f"t{unique}.", f"t_{unique}"
    sms = SmsProviderStandIn("ACprimary", "tok-1")
    spare = SmsProviderStandIn("ACsecondary", "tok-2")
    await sms.start()
    await spare.start()
    inbox = Inbox()
    smtp_port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    webhook = WebhookReceiver()  # the deployment's tool
    await webhook.start()
    sofia_tool = CallTaskReceiver(secret=SOFIA_SECRET)  # the Sofia clinic's own
    await sofia_tool.start()
    sites = Path(tmp_path_factory.mktemp("sites")) / "sites.yaml"
    sites.write_text(sites_file(sofia_tool.url, "TEST_SOFIA_WEBHOOK_SECRET"))
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("TEST_SOFIA_WEBHOOK_SECRET", SOFIA_SECRET)
    monkeypatch.setenv("TEST_SOFIA_DESK_TOKEN", SOFIA_DESK)
    http_port = free_port()
    base_url = f"http://127.0.0.1:{http_port}"
    settings = world_settings(
        prefix,
        schema,
        http_port=http_port,
        public_base_url=base_url,
        sms_primary_url=sms.base_url,
        sms_primary_sid="ACprimary",
        sms_primary_token="tok-1",
        sms_primary_from="+15005550006",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        webhook_url=f"http://127.0.0.1:{webhook.port}/tasks",
        sites_path=str(sites),
        sites_recheck_seconds=0.1,
    )
    clock = ManualClock(START)
    running = running_world(
        NotifierApp(settings, clock),
        clock,
        primary=sms,
        secondary=spare,
        inbox=inbox,
        webhook=webhook,
        base_url=base_url,
    )
    try:
        async with running as world:
            yield world, sofia_tool
    finally:
        monkeypatch.undo()
        await sofia_tool.stop()
        await webhook.stop()
        smtp.stop()
        await sms.stop()
        await spare.stop()
        await drop_schema(infra.DATABASE_URL, schema)


async def test_a_message_speaks_as_its_sites_clinic(
    chain: tuple[World, CallTaskReceiver],
) -> None:
    world, _ = chain
    await world.contact("p-sof", email="ivan@example.org", language="en")
    await world.send(world.command("c-sof", "p-sof", "email", site="sofia"))
    await eventually(lambda: world.outcome("c-sof:1:sent"))
    [mail] = world.inbox.for_key("c-sof:1")
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Sofia Dental Clinic" in text and "Your Sofia Dental Clinic team" in text
    assert "Sample Clinic" not in text  # the deployment's own name is not Sofia's


async def test_a_sites_texts_come_from_its_own_sender(
    chain: tuple[World, CallTaskReceiver],
) -> None:
    world, _ = chain
    await world.contact("p-sof-sms", phone="+359881000001", language="bg")
    await world.contact("p-vln-sms", phone="+37060000091", language="lt")
    await world.send(world.command("c-sof-sms", "p-sof-sms", "sms", site="sofia"))
    await world.send(world.command("c-vln-sms", "p-vln-sms", "sms", site="vilnius"))
    [sofia] = await eventually(
        lambda: [m for m in world.primary.messages if m.to == "+359881000001"] or None
    )
    [vilnius] = await eventually(
        lambda: [m for m in world.primary.messages if m.to == "+37060000091"] or None
    )
    assert sofia.from_ == "+35929000000"  # Sofia's number, registered in Bulgaria
    assert vilnius.from_ != "+35929000000" and vilnius.from_  # the deployment's own


async def test_call_tasks_reach_their_sites_own_tool_or_the_deployments(
    chain: tuple[World, CallTaskReceiver],
) -> None:
    world, sofia_tool = chain
    await world.contact("p-sof2", phone="+359881234567", language="bg", timezone="Europe/Sofia")
    await world.contact("p-vln", phone="+37060000002", language="lt")
    await world.send(world.command("c-sof2", "p-sof2", "call_task", site="sofia"))
    await world.send(world.command("c-vln", "p-vln", "call_task", site="vilnius"))
    await eventually(lambda: world.outcome("c-sof2:1:task_created"))
    await eventually(lambda: world.outcome("c-vln:1:task_created"))

    # Sofia's task: at Sofia's tool (signed with Sofia's secret), nowhere else.
    [hook] = sofia_tool.tasks("c-sof2:1")
    assert hook["task"]["site"] == "sofia"
    assert "Дентална клиника София" in hook["task"]["script"]
    assert world.webhook.tasks("c-sof2:1") == []
    assert world.calltask_events("c-sof2:1") == []
    assert world.inbox.for_key("c-sof2:1") == []
    # Vilnius has no sinks of its own: the deployment's tool, topic and desk mailbox.
    assert sofia_tool.tasks("c-vln:1") == []
    [vilnius] = world.webhook.tasks("c-vln:1")
    assert vilnius["task"]["site"] == "vilnius"
    assert "Vilniaus dantų klinika" in vilnius["task"]["script"]
    await eventually(lambda: world.calltask_events("c-vln:1"))
    # The per-site counter carries the configured ids (anything else would be "other").
    sent = {"channel": "call_task", "outcome": "task_created"}
    metric = "followup_notifier_site_sends_total"
    assert REGISTRY.get_sample_value(metric, {"site": "sofia", **sent})
    assert REGISTRY.get_sample_value(metric, {"site": "other", **sent}) is None
    # The front desk's panel counts per site too: Sofia's tool, the deployment's for Vilnius.
    tasks = "followup_notifier_call_tasks_total"
    assert REGISTRY.get_sample_value(
        tasks, {"sink": "webhook", "result": "created", "site": "sofia"}
    )
    assert REGISTRY.get_sample_value(
        tasks, {"sink": "kafka", "result": "created", "site": "vilnius"}
    )


async def test_a_sites_desk_token_reports_its_own_call_tasks_only(
    chain: tuple[World, CallTaskReceiver],
) -> None:
    world, _ = chain
    await world.contact("p-sof3", phone="+359881234568", language="bg", timezone="Europe/Sofia")
    await world.contact("p-vln3", phone="+37060000003", language="lt")
    await world.send(world.command("c-sof3", "p-sof3", "call_task", site="sofia"))
    await world.send(world.command("c-vln3", "p-vln3", "call_task", site="vilnius"))
    await eventually(lambda: world.outcome("c-sof3:1:task_created"))
    await eventually(lambda: world.outcome("c-vln3:1:task_created"))
    # Vilnius's call task is none of the Sofia desk's business: as if absent.
    assert await desk_reports(world, SOFIA_DESK, "c-vln3:1", "r-vln3") == 404
    assert await desk_reports(world, SOFIA_DESK, "c-sof3:1", "r-sof3") == 202
    assert (await eventually(lambda: world.outcome("r-sof3"))).case_id == "c-sof3"
    assert world.outcome("r-vln3") is None


async def test_a_sites_own_quiet_hours_hold_its_messages(
    chain: tuple[World, CallTaskReceiver],
) -> None:
    world, _ = chain
    # 10:00 in Vilnius is 10:00 in Burgas: inside Burgas's own quiet hours (09:00-12:00),
    # outside the deployment's (21:00-08:00). A window that ends before noon cannot be used.
    for site in ("burgas", "vilnius"):
        await world.contact(f"p-q-{site}", phone=f"+35988{len(site)}000001", language="bg")
        await world.send(
            world.command(
                f"c-q-{site}",
                f"p-q-{site}",
                "sms",
                site=site,
                window_end=world.clock.now() + timedelta(hours=1),
            )
        )
    failed = await eventually(lambda: world.outcome("c-q-burgas:1:failed"))
    assert failed.detail == "quiet_hours"
    await eventually(lambda: world.outcome("c-q-vilnius:1:sent"))


async def test_a_changed_sites_file_moves_a_sites_sinks_and_tokens_without_a_restart(
    chain: tuple[World, CallTaskReceiver],
) -> None:
    world, sofia_tool = chain
    path, registry = world.app.sites.path, world.app.sites
    assert path is not None
    original = path.read_text()
    moved = CallTaskReceiver(secret="sofia-new-secret")  # Sofia's desk changes its tool
    await moved.start()
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("TEST_SOFIA_NEW_SECRET", "sofia-new-secret")
    monkeypatch.setenv("TEST_VILNIUS_DESK_TOKEN", VILNIUS_DESK)
    try:
        path.write_text(sites_file(moved.url, "TEST_SOFIA_NEW_SECRET", "TEST_VILNIUS_DESK_TOKEN"))
        await eventually(lambda: registry.current().profiles["vilnius"].api_token_env)
        await world.contact("p-mv", phone="+359881234569", language="bg", timezone="Europe/Sofia")
        await world.contact("p-mv-vln", phone="+37060000004", language="lt")
        await world.send(world.command("c-mv", "p-mv", "call_task", site="sofia"))
        await world.send(world.command("c-mv-vln", "p-mv-vln", "call_task", site="vilnius"))
        await eventually(lambda: world.outcome("c-mv:1:task_created"))
        await eventually(lambda: world.outcome("c-mv-vln:1:task_created"))
        # Sofia's task reaches the new tool, signed with the new secret; not the old one.
        [hook] = moved.tasks("c-mv:1")
        assert hook["task"]["site"] == "sofia"
        assert sofia_tool.tasks("c-mv:1") == []
        # Vilnius's desk has a token now: it reports its own task, not Sofia's.
        assert await desk_reports(world, VILNIUS_DESK, "c-mv:1", "r-mv") == 404
        assert await desk_reports(world, VILNIUS_DESK, "c-mv-vln:1", "r-mv-vln") == 202

        # A version whose sink cannot be built (its secret is not set) is refused whole:
        # Sofia's tasks stay at the tool in force, and Vilnius's token stays valid.
        path.write_text(
            sites_file(sofia_tool.url, "TEST_NOT_SET_SECRET", "TEST_VILNIUS_DESK_TOKEN")
        )
        await asyncio.sleep(0.3)  # past the recheck interval
        await world.contact("p-mv2", phone="+359881234570", language="bg", timezone="Europe/Sofia")
        await world.send(world.command("c-mv2", "p-mv2", "call_task", site="sofia"))
        await eventually(lambda: world.outcome("c-mv2:1:task_created"))
        assert [t["task"]["site"] for t in moved.tasks("c-mv2:1")] == ["sofia"]
        assert sofia_tool.tasks("c-mv2:1") == []
    finally:
        path.write_text(original)
        await eventually(lambda: registry.current().profiles["vilnius"].api_token_env is None)
        monkeypatch.undo()
        await moved.stop()
