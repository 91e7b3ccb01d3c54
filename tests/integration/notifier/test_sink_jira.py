"""Call tasks as Jira issues (REST v3, the Jira stand-in speaking its wire format) and the
resolution webhook back onto the real followup.outcomes topic."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from services.notifier.sink_jira import task_label
from standins.jira import JiraStandIn
from tests.integration.notifier.tool_world import tool_world, withdraw
from tests.integration.notifier.world import World
from tests.support.polling import eventually

pytestmark = pytest.mark.integration
SECRET = "jira-hook-secret"


@pytest.fixture(scope="module")
async def jira() -> AsyncIterator[JiraStandIn]:
    standin = JiraStandIn("desk@clinic.example", "jira-token", webhook_secret=SECRET)
    await standin.start()
    yield standin
    await standin.stop()


@pytest.fixture(scope="module")
async def world(jira: JiraStandIn) -> AsyncIterator[World]:
    async with tool_world(
        call_task_sinks="jira",
        jira_base_url=jira.base_url,
        jira_email="desk@clinic.example",
        jira_api_token="jira-token",
        jira_project_key="DESK",
        jira_webhook_secret=SECRET,
    ) as running:
        jira.webhook_url = f"{running.base_url}/jira/webhook"
        yield running


def _issue(jira: JiraStandIn, task_id: str) -> tuple[str, dict[str, object]]:
    [(key, issue)] = [
        (k, i) for k, i in jira.issues.items() if task_label(task_id) in i["fields"]["labels"]
    ]
    return key, issue


async def test_an_issue_is_made_and_its_resolution_is_the_result(
    world: World, jira: JiraStandIn
) -> None:
    await world.contact("p-jira", phone="+37060000061")
    await world.send(world.command("c-jira", "p-jira", "call_task"))
    await eventually(lambda: world.outcome("c-jira:1:task_created"))
    key, issue = _issue(jira, "c-jira:1")
    fields: dict[str, object] = issue["fields"]  # type: ignore[assignment]
    assert fields["summary"] == "Call patient p-jira: no show"
    text = json.dumps(fields["description"], ensure_ascii=False)
    assert "+37060000061" in text and "Check healing first." not in text
    assert jira.refused == []

    # Resolved without a result label: not a result; with one: the call's outcome.
    assert await jira.resolve(key, None) == 204
    assert await jira.resolve(key, "answered_rebooked", account_id="acc-77") == 202
    result = await eventually(lambda: world.outcome("c-jira:1:jira:answered_rebooked"))
    assert result.reported_by == "acc-77" and result.idempotency_key == "c-jira:1"
    assert result.occurred_at.isoformat() == "2026-03-02T12:00:00+02:00"
    # Jira retries a webhook it thinks failed: the same event id, dropped downstream.
    assert await jira.resolve(key, None) == 202


async def test_a_webhook_without_the_right_signature_is_refused(
    world: World, jira: JiraStandIn
) -> None:
    body = json.dumps({"webhookEvent": "jira:issue_updated", "issue": {}}).encode()
    assert await jira.post_webhook(body, secret="guessed") == 401
    assert await jira.post_webhook(b"not json") == 400


async def test_a_withdrawal_cancels_the_issue(world: World, jira: JiraStandIn) -> None:
    await world.contact("p-jira-w", phone="+37060000062")
    await world.send(world.command("c-jira-w", "p-jira-w", "call_task"))
    await eventually(lambda: world.outcome("c-jira-w:1:task_created"))
    await withdraw(world, "c-jira-w", "p-jira-w")
    _, issue = _issue(jira, "c-jira-w:1")  # still one issue: the withdrawal made none
    assert issue["fields"]["status"] == {"name": "Cancelled"}  # type: ignore[index]
