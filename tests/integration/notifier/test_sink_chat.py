"""Call-task notices in Slack, Teams and Mattermost (stand-ins refusing what the real
incoming webhooks refuse), through the real notifier."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from standins.chat import ChatStandIn
from tests.integration.notifier.tool_world import tool_world, withdraw
from tests.integration.notifier.world import World
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def chat() -> AsyncIterator[ChatStandIn]:
    standin = ChatStandIn()
    await standin.start()
    yield standin
    await standin.stop()


@pytest.fixture(scope="module")
async def world(chat: ChatStandIn) -> AsyncIterator[World]:
    async with tool_world(
        call_task_sinks="slack,teams,mattermost",
        slack_webhook_url=chat.slack_url,
        teams_webhook_url=chat.teams_url,
        mattermost_webhook_url=chat.mattermost_url,
    ) as running:
        yield running


async def test_a_notice_reaches_each_chat_with_minimum_data_and_the_report_link(
    world: World, chat: ChatStandIn
) -> None:
    await world.contact("p-chat", phone="+37060000081")
    await world.send(world.command("c-chat", "p-chat", "call_task"))
    await eventually(lambda: world.outcome("c-chat:1:task_created"))
    assert chat.refused == []
    for service in ("slack", "teams", "mattermost"):
        [notice] = chat.received[service]
        text = json.dumps(notice, ensure_ascii=False)
        # The signed one-click report links of the task (no token to type).
        assert "p-chat" in text and "/call-tasks/report/" in text, service
        for private in ("Petrait", "+37060000081", "Check healing first."):
            assert private not in text, (service, private)
    assert chat.received["slack"][0]["text"] == "Call task: patient p-chat"
    assert "(Europe/Vilnius)" in json.dumps(chat.received["teams"][0])  # the clinic's zone

    await withdraw(world, "c-chat", "p-chat")
    assert chat.received["mattermost"][1]["text"].startswith("#### Withdrawn: no call needed")


async def test_the_slack_stand_in_refuses_what_slack_refuses(chat: ChatStandIn) -> None:
    async with aiohttp.ClientSession() as http:
        for body, answer in (
            (b"{not json", "invalid_payload"),
            (json.dumps({"blocks": [{"type": "divider"}]}).encode(), "no_text"),
            (
                json.dumps({"text": "x", "blocks": [{"type": "nonsense"}]}).encode(),
                "invalid_blocks",
            ),
        ):
            async with http.post(chat.slack_url, data=body) as reply:
                assert (reply.status, await reply.text()) == (400, answer)


async def test_a_refused_notice_fails_at_once_instead_of_retrying(chat: ChatStandIn) -> None:
    # A Slack sink pointed at a Teams flow by mistake: Teams answers 400 to a Slack body.
    async with tool_world(call_task_sinks="slack", slack_webhook_url=chat.teams_url) as world:
        await world.contact("p-chat-bad", phone="+37060000082")
        await world.send(world.command("c-chat-bad", "p-chat-bad", "call_task"))
        failed = await eventually(lambda: world.outcome("c-chat-bad:1:failed"))
        assert failed.detail == "slack_http_400"
        assert (
            "teams",
            400,
            "Bad payload: an Adaptive Card attachment is required",
        ) in chat.refused
