"""Call tasks as Zendesk tickets (the Zendesk stand-in speaking its tickets API) and the
signed solve webhook back onto the real followup.outcomes topic."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from standins.zendesk import ZendeskStandIn
from tests.integration.notifier.tool_world import tool_world, withdraw
from tests.integration.notifier.world import World
from tests.support.polling import eventually

pytestmark = pytest.mark.integration
SECRET = "zendesk-signing-secret"


@pytest.fixture(scope="module")
async def zendesk() -> AsyncIterator[ZendeskStandIn]:
    standin = ZendeskStandIn("desk@clinic.example", "zd-token", signing_secret=SECRET)
    await standin.start()
    yield standin
    await standin.stop()


@pytest.fixture(scope="module")
async def world(zendesk: ZendeskStandIn) -> AsyncIterator[World]:
    async with tool_world(
        call_task_sinks="zendesk",
        zendesk_url=zendesk.base_url,
        zendesk_email="desk@clinic.example",
        zendesk_api_token="zd-token",
        zendesk_webhook_secret=SECRET,
    ) as running:
        zendesk.webhook_url = f"{running.base_url}/zendesk/webhook"
        zendesk.clock = running.clock
        yield running


def _ticket(zendesk: ZendeskStandIn, task_id: str) -> dict[str, object]:
    [ticket] = [t for t in zendesk.tickets.values() if t["external_id"] == task_id]
    return ticket


async def test_a_ticket_is_made_and_solving_it_reports_the_result(
    world: World, zendesk: ZendeskStandIn
) -> None:
    await world.contact("p-zd", phone="+37060000071")
    await world.send(world.command("c-zd", "p-zd", "call_task"))
    await eventually(lambda: world.outcome("c-zd:1:task_created"))
    ticket = _ticket(zendesk, "c-zd:1")
    assert ticket["subject"] == "Call patient p-zd: no show"
    comment = ticket["comment"]
    assert isinstance(comment, dict) and comment["public"] is False  # never mailed out
    assert "+37060000071" in comment["body"] and "Check healing first." not in comment["body"]
    assert zendesk.refused == []

    assert await zendesk.solve(int(str(ticket["id"])), "wrong_number", assignee_id=42) == 202
    result = await eventually(lambda: world.outcome("c-zd:1:zendesk:wrong_number"))
    assert result.outcome == "wrong_number" and result.reported_by == "zendesk-42"


async def test_unsigned_stale_or_junk_webhooks_are_refused(
    world: World, zendesk: ZendeskStandIn
) -> None:
    body = json.dumps({"external_id": "c-zd:1", "tags": "followup_result_busy"}).encode()
    assert await zendesk.post_webhook(body, secret="guessed") == 401
    old = (world.clock.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert await zendesk.post_webhook(body, timestamp=old) == 401  # a replay
    assert await zendesk.post_webhook(b"[1, 2]") == 400
    assert (
        await zendesk.post_webhook(
            json.dumps({"external_id": "nope:1", "tags": "followup_result_busy"}).encode()
        )
        == 404
    )
    assert world.outcome("c-zd:1:zendesk:busy") is None


async def test_a_withdrawal_solves_the_ticket_without_a_result(
    world: World, zendesk: ZendeskStandIn
) -> None:
    await world.contact("p-zd-w", phone="+37060000072")
    await world.send(world.command("c-zd-w", "p-zd-w", "call_task"))
    await eventually(lambda: world.outcome("c-zd-w:1:task_created"))
    await withdraw(world, "c-zd-w", "p-zd-w")
    ticket = _ticket(zendesk, "c-zd-w:1")
    assert ticket["status"] == "solved" and "followup_withdrawn" in ticket["tags"]  # type: ignore[operator]
    # The solve trigger fires for our own withdrawal too: no result tag, nothing reported.
    assert await zendesk.solve(int(str(ticket["id"])), None) == 204
