"""Call tasks on a real FHIR R4 server (HAPI FHIR's plain server, strict R4 parser), and a
Task the administrator completed there read back onto the real followup.outcomes topic."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import aiohttp
import pytest
from fhir.resources.R4B.task import Task as R4Task

from common.clock import ManualClock
from services.notifier.calltasks import (
    FHIR_OUTCOME_SYSTEM,
    FHIR_OUTPUT_SYSTEM,
    fhir_task_id,
)
from services.notifier.sink_fhir_task import (
    OVERLAP,
    SUBSCRIPTION_CRITERIA,
    SUBSCRIPTION_PATH,
    notification_token,
    subscription,
)
from tests.integration.notifier.tool_world import fresh_names, notifier_world, tool_world, withdraw
from tests.integration.notifier.world import World
from tests.support.fhir_server import FhirR4Server
from tests.support.polling import eventually

pytestmark = pytest.mark.integration
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def fhir() -> Iterator[FhirR4Server]:
    server = FhirR4Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def world(fhir: FhirR4Server) -> AsyncIterator[World]:
    async with tool_world(
        call_task_sinks="fhir_task", fhir_base_url=fhir.base_url, fhir_poll_seconds=0.3
    ) as running:
        yield running


async def _get(fhir: FhirR4Server, path: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(headers=FHIR_JSON) as http,
        http.get(f"{fhir.base_url}/{path}") as reply,
    ):
        return reply.status, await reply.json(content_type=None)


async def _put(fhir: FhirR4Server, resource: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    url = f"{fhir.base_url}/Task/{resource['id']}"
    async with (
        aiohttp.ClientSession(headers=FHIR_JSON) as http,
        http.put(url, data=json.dumps(resource)) as reply,
    ):
        return reply.status, await reply.json(content_type=None)


async def test_the_server_refuses_what_is_not_r4(fhir: FhirR4Server) -> None:
    r5 = {
        "resourceType": "Task",
        "id": "r5-shaped",
        "status": "requested",
        "intent": "order",
        "requestedPeriod": {"start": "2026-03-02T10:00:00+02:00"},
    }
    status, body = await _put(fhir, r5)
    assert status == 400
    assert "requestedPeriod" in body["issue"][0]["diagnostics"]


async def test_a_call_task_is_an_r4_task_on_the_server_and_its_result_comes_back(
    world: World, fhir: FhirR4Server
) -> None:
    await world.contact("p-fhir", phone="+37060000041")
    command = world.command("c-fhir", "p-fhir", "call_task")
    await world.send(command)
    await eventually(lambda: world.outcome("c-fhir:1:task_created"))

    status, stored = await _get(fhir, f"Task/{fhir_task_id('c-fhir:1')}")
    assert status == 200
    R4Task.model_validate(stored)
    assert stored["status"] == "requested"
    assert stored["identifier"] == [{"system": "urn:followup:calltask", "value": "c-fhir:1"}]
    assert stored["for"] == {"reference": "Patient/p-fhir"}
    assert "Petrait" not in json.dumps(stored) and "+37060000041" not in json.dumps(stored)

    # The administrator closes the Task in the hospital's FHIR app: completed, with a result.
    stored["status"] = "completed"
    stored["owner"] = {"reference": "Practitioner/admin-4"}
    stored["output"] = [
        {
            "type": {"coding": [{"system": FHIR_OUTPUT_SYSTEM, "code": "call-outcome"}]},
            "valueCodeableConcept": {
                "coding": [{"system": FHIR_OUTCOME_SYSTEM, "code": "answered_declined"}]
            },
        }
    ]
    status, _ = await _put(fhir, stored)
    assert status == 200

    result = await eventually(lambda: world.outcome("c-fhir:1:fhir:answered_declined"))
    assert result.outcome == "answered_declined" and result.case_id == "c-fhir"
    assert result.idempotency_key == "c-fhir:1" and result.reported_by == "admin-4"
    # Later polls read the same Task again (the cursor overlaps): published once.
    await asyncio.sleep(1.5)
    outcomes = [o.event_id for o in world.outcomes_of("c-fhir")]
    assert outcomes.count("c-fhir:1:fhir:answered_declined") == 1
    assert set(outcomes) == {"c-fhir:1:task_created", "c-fhir:1:fhir:answered_declined"}


async def test_a_withdrawal_cancels_the_same_task(world: World, fhir: FhirR4Server) -> None:
    await world.contact("p-fhir-w", phone="+37060000042")
    await world.send(world.command("c-fhir-w", "p-fhir-w", "call_task"))
    await eventually(lambda: world.outcome("c-fhir-w:1:task_created"))
    done = await withdraw(world, "c-fhir-w", "p-fhir-w")
    assert done.detail is None  # it reached the server, not never_sent / no_task
    status, stored = await _get(fhir, f"Task/{fhir_task_id('c-fhir-w:1')}")
    assert (status, stored["status"]) == (200, "cancelled")
    assert stored["meta"]["versionId"] == "2"  # the same Task, updated, not a second one
    _, bundle = await _get(
        fhir, "Task?_lastUpdated=ge2000-01-01&identifier=urn:followup:calltask|c-fhir-w:1"
    )
    assert bundle["total"] == 1


async def _complete(fhir: FhirR4Server, task_id: str, outcome: str) -> None:
    """The administrator completes the Task in the hospital's FHIR app with ``outcome``."""
    status, task = await _get(fhir, f"Task/{fhir_task_id(task_id)}")
    assert status == 200
    task["status"] = "completed"
    task["output"] = [
        {
            "type": {"coding": [{"system": FHIR_OUTPUT_SYSTEM, "code": "call-outcome"}]},
            "valueCodeableConcept": {"coding": [{"system": FHIR_OUTCOME_SYSTEM, "code": outcome}]},
        }
    ]
    status, _ = await _put(fhir, task)
    assert status == 200


async def test_a_restart_in_between_loses_no_completion_and_repeats_none(
    fhir: FhirR4Server,
) -> None:
    # The clock runs at the server's own time and the first cursor starts at it (no
    # lookback), so after the restart only the saved cursor can still find a Task completed
    # while the notifier was down.
    clock = ManualClock(datetime.now(UTC))
    settings: dict[str, Any] = {
        "call_task_sinks": "fhir_task",
        "fhir_base_url": fhir.base_url,
        "fhir_poll_seconds": 0.3,
        "fhir_poll_lookback_hours": 0,
    }
    async with fresh_names() as (prefix, schema):
        async with notifier_world(prefix, schema, clock, **settings) as first:
            for case_id in ("c-fhir-r1", "c-fhir-r2"):
                await first.contact(f"p-{case_id}", phone="+37060000043")
                await first.send(first.command(case_id, f"p-{case_id}", "call_task"))
                await eventually(partial(first.outcome, f"{case_id}:1:task_created"))
            await _complete(fhir, "c-fhir-r1:1", "no_answer")
            await eventually(lambda: first.outcome("c-fhir-r1:1:fhir:no_answer"))
        # Down (a deployment) for longer than the cursor's overlap: the other Task is
        # completed meanwhile; the notifier's clock is ten minutes on when it is back.
        await _complete(fhir, "c-fhir-r2:1", "answered_declined")
        await asyncio.sleep(OVERLAP.total_seconds() + 1)
        clock.advance(timedelta(minutes=10))
        async with notifier_world(prefix, schema, clock, **settings) as second:
            await eventually(lambda: second.outcome("c-fhir-r2:1:fhir:answered_declined"))
            await asyncio.sleep(1.5)  # further polls, the first one overlapping the last
            published = [o.event_id for o in second.outcomes.events]
    assert published.count("c-fhir-r1:1:fhir:no_answer") == 1
    assert published.count("c-fhir-r2:1:fhir:answered_declined") == 1


async def test_a_rest_hook_subscription_brings_the_result_without_waiting_for_a_poll(
    fhir: FhirR4Server,
) -> None:
    # Polling once an hour: only the server's notification can bring the result in time.
    async with tool_world(
        call_task_sinks="fhir_task",
        fhir_base_url=fhir.base_url,
        fhir_poll_seconds=3600,
        fhir_subscription=True,
    ) as world:
        endpoint = f"{world.base_url}{SUBSCRIPTION_PATH}"
        token = notification_token("link-secret")
        wanted = subscription(endpoint, token)

        async def registered() -> dict[str, Any] | None:
            status, body = await _get(fhir, f"Subscription/{wanted['id']}")
            return body if status == 200 else None

        stored = await eventually(registered)
        assert stored["status"] == "active" and stored["criteria"] == SUBSCRIPTION_CRITERIA
        assert stored["channel"]["type"] == "rest-hook" and "payload" not in stored["channel"]

        await world.contact("p-fhir-hook", phone="+37060000044")
        await world.send(world.command("c-fhir-hook", "p-fhir-hook", "call_task"))
        await eventually(lambda: world.outcome("c-fhir-hook:1:task_created"))
        await _complete(fhir, "c-fhir-hook:1", "voicemail")
        result = await eventually(lambda: world.outcome("c-fhir-hook:1:fhir:voicemail"))
        assert result.case_id == "c-fhir-hook" and result.idempotency_key == "c-fhir-hook:1"

        # Only the server, with the token it was given, may ask for an early poll.
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"Authorization": "Bearer guessed"}):
                async with http.post(endpoint, headers=headers) as reply:
                    assert reply.status == 401
            async with http.post(endpoint, headers={"Authorization": f"Bearer {token}"}) as reply:
                assert reply.status == 200
